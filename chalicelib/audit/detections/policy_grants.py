"""What a policy document carried in an event grants, rated as a security engineer would.

Parsing and wildcard expansion are policyuniverse's (Netflix-Skunkworks; its ``Statement`` handles
Principal/NotPrincipal/Action/NotAction shapes, expands ``iam:Put*`` against AWS's action list and decides
whether a ``Principal: *`` is narrowed by a condition such as ``aws:SourceVpce`` or ``aws:PrincipalOrgID``).
It is imported on first use: only events that carry a policy pay its ~0.1 s load.

Rated HIGH: admin-equivalent grants (``*`` or ``NotAction`` on ``*``, a whole service ``svc:*`` on ``*``),
single-call privilege escalations and ``iam:PassRole`` + a compute launch (Rhino Security Labs' list,
https://rhinosecuritylabs.com/aws/aws-privilege-escalation-methods-mitigation/), principals that are ``*``
(unconditioned) or another account. CRITICAL: a trust policy any AWS principal may assume.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from chalicelib.audit.finding import Severity

#: IAM accepts policies up to 10,240 characters (managed) and resource policies are smaller than 20 KB
#: for S3; anything longer is not a real policy and is not parsed.
MAX_DOCUMENT_CHARS = 131_072

#: One call each is enough to become admin (the caller grants itself, or a user it controls, anything).
ESCALATION_ACTIONS = frozenset({
    "iam:createpolicyversion", "iam:setdefaultpolicyversion", "iam:attachuserpolicy", "iam:attachgrouppolicy",
    "iam:attachrolepolicy", "iam:putuserpolicy", "iam:putgrouppolicy", "iam:putrolepolicy",
    "iam:createaccesskey", "iam:createloginprofile", "iam:updateloginprofile", "iam:addusertogroup",
    "iam:updateassumerolepolicy",
})
#: With iam:PassRole, each of these runs code as a more privileged role.
PASSROLE_LAUNCHERS = frozenset({
    "lambda:createfunction", "ec2:runinstances", "glue:createdevendpoint", "cloudformation:createstack",
    "datapipeline:createpipeline", "sagemaker:createnotebookinstance", "ecs:runtask", "codebuild:createproject",
})
#: AWS managed policies that are admin or admin-equivalent (IAMFullAccess can grant itself the rest).
ADMIN_MANAGED_POLICIES = {
    "AdministratorAccess": "AdministratorAccess (every action on every resource)",
    "IAMFullAccess": "IAMFullAccess (admin-equivalent: it can grant itself any permission)",
    "PowerUserAccess": "PowerUserAccess (every action outside IAM)",
    "AWSOrganizationsFullAccess": "AWSOrganizationsFullAccess (control of the organization)",
}
_ACCOUNT = re.compile(r"(?:^|:)(\d{12})(?::|$)")


@dataclass(frozen=True)
class Assessment:
    severity: Severity | None
    reasons: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.severity is not None


NOTHING = Assessment(None, ())


def parse_document(value: Any) -> dict[str, Any] | None:
    """A policy as CloudTrail carries it: an object, a JSON string, or a URL-encoded JSON string."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value or len(value) > MAX_DOCUMENT_CHARS:
        return None
    for text in (value, unquote(value)):
        try:
            parsed = json.loads(text)
        except ValueError:
            continue
        return parsed if isinstance(parsed, dict) else None
    return None


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return []
    return [s for s in statements[:100] if isinstance(s, dict)]


def assess(value: Any, own_account: str | None, *, resource_policy: bool = False) -> Assessment:
    """Rate a policy document (any CloudTrail shape); NOTHING when it grants nothing remarkable or
    cannot be parsed (an unparseable document is still reported by the detection that carries it).

    ``resource_policy``: a key, bucket, queue, topic or trust policy, where ``Resource: *`` means "this
    resource" (every default key policy gives its own account ``kms:*`` on ``*``): only whom it grants
    counts, not which actions."""
    if isinstance(value, str):
        # Pipelines re-apply the same documents all day: rate each text once.
        return _assess_text(value, own_account, resource_policy)
    return _assess(value, own_account, resource_policy)


@lru_cache(maxsize=2048)
def _assess_text(value: str, own_account: str | None, resource_policy: bool) -> Assessment:
    return _assess(value, own_account, resource_policy)


def _assess(value: Any, own_account: str | None, resource_policy: bool) -> Assessment:
    document = parse_document(value)
    if document is None:
        return NOTHING
    reasons: list[str] = []
    critical = False
    granted: set[str] = set()
    for raw in _statements(document):
        if raw.get("Effect") != "Allow":
            continue
        try:
            actions = _granted(raw)
            principals: set[str] = set()
            public = False
            if "Principal" in raw or "NotPrincipal" in raw:
                # Identity policies name no principal: only resource and trust policies need parsing.
                from policyuniverse.statement import Statement  # deferred: see the module docstring

                statement = Statement(raw)
                principals = statement.principals
                public = "*" in principals and statement.is_internet_accessible()
        except Exception:  # noqa: BLE001, S112 - attacker-shaped input; a bad statement rates nothing
            continue
        if resource_policy:
            _principal_reasons(reasons, principals, public, actions, own_account)
            critical = critical or (public and any(a.startswith("sts:assumerole") for a in actions))
            continue
        granted |= actions
        on_everything = "*" in _as_list(raw.get("Resource")) or "NotResource" in raw
        raw_actions = _as_list(raw.get("Action"))
        if on_everything and ("NotAction" in raw or "*" in raw_actions or "*:*" in raw_actions):
            reasons.append("grants every action on every resource (admin-equivalent)")
        elif on_everything:
            services = sorted({a.split(":", 1)[0] for a in raw_actions if a.endswith(":*")})
            if services:
                reasons.append(f"grants {', '.join(s + ':*' for s in services)} on every resource")
        _principal_reasons(reasons, principals, public, actions, own_account)
    escalations = sorted(granted & ESCALATION_ACTIONS)
    if escalations:
        reasons.append(f"allows privilege escalation ({', '.join(escalations[:4])})")
    if "iam:passrole" in granted and granted & PASSROLE_LAUNCHERS:
        reasons.append(f"allows iam:PassRole with {', '.join(sorted(granted & PASSROLE_LAUNCHERS)[:3])}")
    if not reasons:
        return NOTHING
    unique = tuple(dict.fromkeys(reasons))
    return Assessment(Severity.CRITICAL if critical else Severity.HIGH, unique)


#: The only actions whose grant changes a rating: matching a statement's patterns against these few is
#: what policyuniverse's ``actions_expanded`` would tell us here, without scanning its ~15,000 actions
#: (7 ms a statement, 20x the whole classification of an event).
RATED_ACTIONS = ESCALATION_ACTIONS | PASSROLE_LAUNCHERS | frozenset({
    "iam:passrole", "sts:assumerole", "sts:assumerolewithsaml", "sts:assumerolewithwebidentity",
})


_RATED_BY_SERVICE: dict[str, tuple[str, ...]] = {
    service: tuple(sorted(a for a in RATED_ACTIONS if a.startswith(service + ":")))
    for service in {a.split(":", 1)[0] for a in RATED_ACTIONS}
}


def _matching(pattern: str) -> set[str]:
    """The RATED_ACTIONS one ``Action`` pattern covers (``*``, ``iam:*``, ``iam:Put*``, an exact name)."""
    pattern = pattern.lower()
    if pattern in ("*", "*:*"):
        return set(RATED_ACTIONS)
    service = pattern.partition(":")[0]
    if "*" not in pattern and "?" not in pattern:
        return {pattern} if pattern in RATED_ACTIONS else set()
    if "*" in service or "?" in service:
        return {a for a in RATED_ACTIONS if fnmatch.fnmatchcase(a, pattern)}
    return {a for a in _RATED_BY_SERVICE.get(service, ()) if fnmatch.fnmatchcase(a, pattern)}


def _granted(raw: dict[str, Any]) -> set[str]:
    """The RATED_ACTIONS an Allow statement grants (``Action`` globs, or everything ``NotAction`` leaves)."""
    if "NotAction" in raw:
        excluded = set().union(*(_matching(p) for p in _as_list(raw.get("NotAction"))))
        return set(RATED_ACTIONS) - excluded
    return set().union(*(_matching(p) for p in _as_list(raw.get("Action"))))


def _principal_reasons(reasons: list[str], principals: Iterable[str], public: bool, actions: set[str],
                       own_account: str | None) -> None:
    if public:
        assumable = any(a.startswith("sts:assumerole") for a in actions)
        reasons.append("anyone may assume it (Principal *)" if assumable else "open to everyone (Principal *)")
    others = sorted(_foreign_accounts(principals, own_account))
    if others:
        reasons.append(f"grants another account ({', '.join(others[:3])})")


def managed_policy(arn: str) -> Assessment:
    """Rate an AWS managed policy by name (its content is not in the event)."""
    if not arn.startswith("arn:aws") or ":iam::aws:policy/" not in arn:
        return NOTHING
    reason = ADMIN_MANAGED_POLICIES.get(arn.rsplit("/", 1)[-1])
    return Assessment(Severity.HIGH, (f"grants {reason}",)) if reason else NOTHING


def principal_grant(principal: str, own_account: str | None, narrowed: bool) -> Assessment:
    """A single principal a resource is given to (Lambda AddPermission): ``*`` unless ``narrowed`` by a
    source ARN/account/org condition, or another account."""
    if principal == "*" and not narrowed:
        return Assessment(Severity.HIGH, ("open to everyone (principal *)",))
    others = _foreign_accounts([principal], own_account)
    if others:
        return Assessment(Severity.HIGH, (f"grants another account ({', '.join(sorted(others))})",))
    return NOTHING


def _foreign_accounts(principals: Iterable[str], own_account: str | None) -> set[str]:
    found = set()
    for principal in principals:
        if not isinstance(principal, str):
            continue
        match = _ACCOUNT.search(principal) if not principal.isdigit() else None
        account = principal if principal.isdigit() and len(principal) == 12 else (match.group(1) if match else "")
        if account and account != own_account:
            found.add(account)
    return found


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def merge(*assessments: Assessment) -> Assessment:
    found = [a for a in assessments if a]
    if not found:
        return NOTHING
    severity = max((a.severity for a in found if a.severity), key=lambda s: s.rank)
    return Assessment(severity, tuple(dict.fromkeys(r for a in found for r in a.reasons)))
