"""OIDC trust (issue 15): roles a CI pipeline assumes with its ID token, and the roles graduation made.

A trust policy that admits a CI's OIDC provider decides, through its ``<issuer>:sub`` condition, which
repositories' builds may assume the role. Without one, or with a wildcard before the repository part
(``repo:*``, ``repo:acme/*``, ``project_path:group/*``, ``org/<id>/project/*``), every repository the pattern
matches can, including strangers' on a shared CI service: CRITICAL. AWS's own guidance pins ``sub`` and ``aud``
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-idp_oidc.html), as do the CIs
(GitHub: https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect#example-subject-claims;
GitLab: https://docs.gitlab.com/ci/cloud_services/aws/). IAM refuses a GitHub trust without a scoped ``sub`` at
creation, but checks only the first value of a list, and ``UpdateAssumeRolePolicy`` and other issuers are not
checked at all, so the audit reads every value.

How a condition is read, as IAM evaluates it
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html,
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html):
condition keys are case-insensitive; values of one key are ORed, so one spanning value opens the role;
``ForAnyValue:``/``ForAllValues:`` and ``...IfExists`` change nothing for ``sub`` (a single-valued key every
token carries); only ``StringLike`` expands ``*``/``?``; a negative operator alone (``StringNotEquals``) pins
nothing. Allow statements are ORed, so each is judged alone (a Deny that narrows an Allow is not credited).

Which wildcards are fine is each provider's ``sub`` format (``federation.sub_spans_repositories``): CircleCI
(``.../user/*``) and Bitbucket (``{repo-uuid}:*``) put a per-build part last, so a wildcard there is the
documented setup. A GitHub/GitLab ``sub`` that pins the repository but not the ref (``repo:acme/app:*``) is
MEDIUM: any branch anyone can push, not only reviewed code, can assume the role.

Cognito identity pools and the social providers (``cognito-identity.amazonaws.com``, ``accounts.google.com``...)
are not CI issuers; their risk is a different condition (the identity pool ``aud``) and is not judged here.

A graduated role (IAM path ``federation.GRADUATED_ROLE_PATH``) is assumed by a pipeline the rotator moved off
keys: any change to its trust, permissions or existence by anyone but the graduation workflow (the rotator's
identity AND an announced intent, ``AuditContext.announced_role_change``) is HIGH. CreateRole carries the path;
the other events name only the role, so its path comes from ``AuditContext.role_path``: IAM GetRole (cached), and
when IAM no longer knows the role (DeleteRole: by the time the audit runs it is gone) the path the ledger recorded
for it (``AuditContext.graduated``: the graduation records and the graduations in flight). Its tags count too
(TagRole/UntagRole): EnsureRole takes a role as its own only with its ``ci-key-rotator:user``/``:target`` tags, a
rollback deletes one only when ``ci-key-rotator:graduation`` names its execution
(``chalicelib.graduation.TAG_USER``...), and a role's tags are its sessions' principal tags, which ABAC policies
grant on (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html).

The IAM OIDC identity provider a graduated role trusts is the other half of its trust: deleting it, removing the
audience the roles use or replacing its thumbprints breaks every graduated pipeline of that issuer; adding an
audience widens which tokens the provider accepts
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html,
https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateOpenIDConnectProviderThumbprint.html).
Such a change by anyone but graduation (which announces its CreateOpenIDConnectProvider and
AddClientIDToOpenIDConnectProvider, ``AuditContext.announced_provider_change``) is HIGH; MEDIUM for removing an
audience no graduated role uses. Not CRITICAL: the graduated roles' own trust pins ``aud`` and an exact ``sub``
(``Federation.trust_policy``), so no provider change lets another repository assume them; a trust that does not
pin is this module's CRITICAL. Providers no graduated role trusts are other teams': adding an audience or a
thumbprint to them stays ``persistence.identity-provider``'s.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record
from chalicelib.federation import GRADUATED_ROLE_PATH, issuer_host, sub_spans_repositories

IAM = "iam.amazonaws.com"
TRUST_EVENTS = names("CreateRole", "UpdateAssumeRolePolicy")
GRADUATED_ROLE_EVENTS = names(
    "CreateRole", "UpdateAssumeRolePolicy", "DeleteRole", "UpdateRole", "UpdateRoleDescription", "PutRolePolicy",
    "DeleteRolePolicy", "AttachRolePolicy", "DetachRolePolicy", "PutRolePermissionsBoundary",
    "DeleteRolePermissionsBoundary", "TagRole", "UntagRole",
)
PROVIDER_EVENTS = names(
    "DeleteOpenIDConnectProvider", "RemoveClientIDFromOpenIDConnectProvider", "UpdateOpenIDConnectProviderThumbprint",
    "AddClientIDToOpenIDConnectProvider",
)
#: Tag keys the graduation workflow writes and relies on (``chalicelib.graduation.TAG_USER`` and its siblings).
ROTATOR_TAG_PREFIX = "ci-key-rotator:"
WEB_IDENTITY_ACTION = "sts:assumerolewithwebidentity"

#: Web identity providers that issue no CI tokens (see the module docstring).
NOT_CI_ISSUERS = frozenset({"cognito-identity.amazonaws.com", "accounts.google.com", "graph.facebook.com",
                            "www.amazon.com"})
_POSITIVE = frozenset({"stringequals", "stringlike", "stringequalsignorecase"})
_NEGATIVE = frozenset({"stringnotequals", "stringnotlike", "stringnotequalsignorecase"})
#: GitHub's and GitLab's ``sub`` name the ref after the repository: a wildcard right there admits every ref.
_ANY_REF = re.compile(r"^(?:repo|project_path):[^:*?]+/[^:*?]+:[*?]")
#: Shown values are cut: a condition value is attacker-chosen text.
_SHOWN_VALUES, _SHOWN_CHARS = 3, 120


@dataclass(frozen=True)
class TrustProblem:
    severity: Severity
    issuer: str
    reason: str


def assess_trust(value: Any) -> list[TrustProblem]:
    """What is wrong with the OIDC part of a trust policy (any CloudTrail shape: object, JSON text, URL-encoded
    JSON text); empty when every OIDC statement pins one repository, or the document is not a policy."""
    document = policy_grants.parse_document(value)
    if document is None:
        return []
    problems: list[TrustProblem] = []
    for statement in _statements(document):
        if statement.get("Effect") != "Allow" or not _admits_web_identity(statement):
            continue
        conditions = _conditions(statement.get("Condition"))
        for issuer in _oidc_issuers(statement.get("Principal")):
            problem = _judge(issuer, conditions)
            if problem is not None:
                problems.append(problem)
    return problems


def _judge(issuer: str, conditions: list[tuple[str, str, list[str]]]) -> TrustProblem | None:
    prefix = issuer.lower() + ":"
    positive = [(op, v) for op, key, values in conditions if key == prefix + "sub" and op in _POSITIVE for v in values]
    negative = any(key == prefix + "sub" and op in _NEGATIVE for op, key, _ in conditions)
    has_aud = any(key == prefix + "aud" and op in _POSITIVE for op, key, _ in conditions)
    aud_note = "" if has_aud else "; no aud condition either"
    if not positive:
        how = ("only a negative sub condition (StringNotEquals/StringNotLike), which admits every other repository"
               if negative else "no sub condition")
        return TrustProblem(Severity.CRITICAL, issuer,
                            f"trusts {issuer} with {how}: any repository on that CI can assume it{aud_note}")
    spanning = [v for op, v in positive if op == "stringlike" and sub_spans_repositories(issuer, v)]
    if spanning:
        return TrustProblem(Severity.CRITICAL, issuer,
                            f"trusts {issuer} with sub {_show(spanning)}, a wildcard that spans repositories: every "
                            f"repository it matches can assume it{aud_note}")
    any_ref = [v for op, v in positive if op == "stringlike" and _ANY_REF.match(v)]
    if any_ref:
        return TrustProblem(Severity.MEDIUM, issuer,
                            f"trusts {issuer} with sub {_show(any_ref)}: one repository, but every branch, tag and "
                            f"environment of it (pin a ref or an environment so only reviewed code can assume it)"
                            f"{aud_note}")
    return None


def _show(values: list[str]) -> str:
    shown = ", ".join(repr(v[:_SHOWN_CHARS]) for v in values[:_SHOWN_VALUES])
    return shown + (f" (+{len(values) - _SHOWN_VALUES} more)" if len(values) > _SHOWN_VALUES else "")


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return []
    return [s for s in statements[:100] if isinstance(s, dict)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value[:100] if isinstance(v, str)]
    return []


def _admits_web_identity(statement: dict[str, Any]) -> bool:
    # IAM action names are case-insensitive and ``*``/``?`` are their only wildcards.
    if "NotAction" in statement:
        return not any(_action_matches(p) for p in _strings(statement["NotAction"]))
    return any(_action_matches(p) for p in _strings(statement.get("Action")))


def _action_matches(pattern: str) -> bool:
    pattern = pattern.lower().replace("[", "[[]")  # fnmatch's character classes do not exist in IAM
    return pattern in ("*", "*:*") or fnmatch.fnmatchcase(WEB_IDENTITY_ACTION, pattern)


def _oidc_issuers(principal: Any) -> list[str]:
    """The OIDC issuers (condition-key prefixes) of a ``Principal: {"Federated": ...}``: an IAM OIDC provider's
    ARN names its issuer after ``oidc-provider/``; SAML providers and the non-CI web identity providers are left out."""
    if not isinstance(principal, dict):
        return []
    issuers = []
    for value in _strings(principal.get("Federated")):
        if ":oidc-provider/" in value:
            host = value.split(":oidc-provider/", 1)[1]
        elif value.startswith("arn:"):
            continue  # a SAML provider: AssumeRoleWithSAML, not a web identity
        else:
            host = value
        host = issuer_host(host)
        if host and host.lower() not in NOT_CI_ISSUERS:
            issuers.append(host)
    return issuers


def _conditions(condition: Any) -> list[tuple[str, str, list[str]]]:
    """(operator, key, values), operator lower case without ``ForAnyValue:``/``ForAllValues:``/``IfExists``
    (neither changes anything for the single-valued ``sub``/``aud``), key lower case (IAM compares keys so)."""
    if not isinstance(condition, dict):
        return []
    found = []
    for operator, block in condition.items():
        if not isinstance(operator, str) or not isinstance(block, dict):
            continue
        op = operator.lower()
        if op.startswith(("foranyvalue:", "forallvalues:")):
            op = op.split(":", 1)[1]
        op = op.removesuffix("ifexists")
        for key, value in block.items():
            if isinstance(key, str):
                found.append((op, key.lower(), _strings(value)))
    return found


def trust_document(record: Record) -> Any:
    """The trust policy a CreateRole/UpdateAssumeRolePolicy carries (CreateRole's response repeats it URL-encoded)."""
    if record.name == "UpdateAssumeRolePolicy":
        return record.params.get("policyDocument")
    document = record.params.get("assumeRolePolicyDocument")
    if document is None:
        role = record.response.get("role")
        document = role.get("assumeRolePolicyDocument") if isinstance(role, dict) else None
    return document


def role_path(record: Record, ctx: AuditContext) -> str | None:
    """The IAM path of the role the call acts on: from the event when it carries one, else asked."""
    if record.name == "CreateRole":
        role = record.response.get("role")
        if isinstance(role, dict) and isinstance(role.get("path"), str):
            return str(role["path"])
        return record.param("path") or "/"
    event = record.cloudtrail
    for ref in event.resources or ():
        if ref.ARN and ":role/" in ref.ARN:
            head = ref.ARN.split(":role/", 1)[1].rpartition("/")[0]
            return f"/{head}/" if head else "/"
    return ctx.role_path(record.param("roleName"))


def is_graduated(path: str | None) -> bool:
    return bool(path) and str(path).startswith(GRADUATED_ROLE_PATH)


def _grant(record: Record) -> policy_grants.Assessment:
    """What the call's policy document or managed policy grants (the generic policy-change finding's reasons,
    kept here because this finding silences that one)."""
    if record.name in TRUST_EVENTS:
        document, resource_policy = trust_document(record), True
    else:
        document, resource_policy = record.params.get("policyDocument"), False
    return policy_grants.merge(policy_grants.assess(document, record.account, resource_policy=resource_policy),
                               policy_grants.managed_policy(record.param("policyArn")))


def _highest(severities: Iterable[Severity | None]) -> Severity:
    return max((s for s in severities if s is not None), key=lambda s: s.rank)


def _open_trust(record: Record, ctx: AuditContext) -> MatchResult:
    problems = assess_trust(trust_document(record))
    if not problems:
        return False
    role = record.param("roleName") or "?"
    grant = _grant(record)
    reasons = [p.reason for p in problems] + list(grant.reasons)
    severity = _highest([*(p.severity for p in problems), grant.severity])
    if record.error_code:
        # Refused: nothing changed (IAM refuses a GitHub trust without a scoped sub); the attempt is worth a look.
        severity = Severity.MEDIUM
    if is_graduated(role_path(record, ctx)) and not ctx.announced_role_change(record):
        # This finding silences the graduated-role one, so it carries its HIGH floor.
        reasons.append(f"{role} is a graduated role: a CI pipeline assumes it, and graduation did not make this change")
        severity = _highest([severity, Severity.HIGH])
    verb = "created role" if record.name == "CreateRole" else "changed the trust policy of role"
    return OIDC_TRUST_OPEN.finding(
        record, severity=severity,
        summary=f"{record.principal} {verb} {role}, which " + "; ".join(dict.fromkeys(reasons)) + failed_suffix(record),
    )


def _graduated_change(record: Record, ctx: AuditContext) -> MatchResult:
    role = record.param("roleName")
    if not role:
        return False
    path = role_path(record, ctx)
    if not is_graduated(path) or ctx.announced_role_change(record):
        return False
    grant = _grant(record)
    who = record.principal
    if ctx.is_rotator(record):
        who += " (the rotator's identity, but no graduation announced this call)"
    reasons = "; ".join([*grant.reasons, *_tag_reasons(record)])
    return GRADUATED_ROLE_CHANGED.finding(
        record, severity=_highest([Severity.HIGH, grant.severity]),
        summary=f"{who} called iam:{record.name} on graduated role {path}{role}, outside the graduation workflow: "
        "a CI pipeline assumes this role instead of an access key" + (f" — {reasons}" if reasons else "")
        + failed_suffix(record),
    )


def _tag_reasons(record: Record) -> list[str]:
    """What a TagRole/UntagRole does to a graduated role: its tags mark it as the rotator's, and are its sessions'
    principal tags."""
    if record.name == "TagRole":
        tags = record.params.get("tags")
        keys = [t["key"] for t in tags[:50] if isinstance(t, dict) and isinstance(t.get("key"), str)] \
            if isinstance(tags, list) else []
        verb = "sets"
    elif record.name == "UntagRole":
        keys = _strings(record.params.get("tagKeys"))[:50]
        verb = "removes"
    else:
        return []
    ours = [k for k in keys if k.lower().startswith(ROTATOR_TAG_PREFIX)]
    if ours:
        # Compared without case: IAM keeps one tag per role key whatever its case
        # (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_tags.html), so another case names ours.
        return [f"{verb} the rotator's tag {_show(ours)}, by which graduation knows the role as its own (a retry "
                "or a new graduation refuses it, a rollback may delete it)"]
    return [f"{verb} tag {_show(keys)}: a role's tags are the principal tags of its sessions, which policies "
            "may grant on (aws:PrincipalTag)"] if keys else []


def _graduated_provider_change(record: Record, ctx: AuditContext) -> MatchResult:
    arn = record.param("openIDConnectProviderArn")
    if not arn or ":oidc-provider/" not in arn:
        return False
    provider = arn.split(":oidc-provider/", 1)[1]
    trusting = ctx.graduated().providers.get(provider)
    if not trusting or ctx.announced_provider_change(record, provider):
        return False
    audiences = set(trusting.values())
    severity = Severity.HIGH
    if record.name == "DeleteOpenIDConnectProvider":
        what = "deleted it: every graduated pipeline of that issuer fails to assume its role"
    elif record.name == "RemoveClientIDFromOpenIDConnectProvider":
        client = record.param("clientID")
        if client in audiences:
            what = f"removed the audience {client!r} graduated pipelines present: they fail to assume their roles"
        else:
            severity = Severity.MEDIUM
            what = f"removed the audience {(client or '?')[:_SHOWN_CHARS]!r}, which no graduated role uses"
    elif record.name == "UpdateOpenIDConnectProviderThumbprint":
        what = ("replaced its certificate thumbprints: where IAM checks the issuer's certificate by thumbprint, "
                "graduated pipelines fail, or a server with that certificate can sign their tokens")
    else:
        what = (f"added the audience {(record.param('clientID') or '?')[:_SHOWN_CHARS]!r}: the provider accepts "
                "tokens minted for it (the graduated roles' trust still pins their own)")
    who = record.principal
    if ctx.is_rotator(record):
        who += " (the rotator's identity, but no graduation announced this call)"
    used_by = f" (graduated roles: {_show(sorted(trusting))})"
    return GRADUATED_PROVIDER_CHANGED.finding(
        record, severity=severity,
        summary=f"{who} called iam:{record.name} on the OIDC provider {provider}, which graduated CI roles trust"
        f"{used_by}, outside the graduation workflow: {what}" + failed_suffix(record),
    )


OIDC_TRUST_OPEN = Detection(
    id="persistence.oidc-trust-open",
    category=Category.PERSISTENCE,
    severity=Severity.CRITICAL,
    title="Role trusts a CI's OIDC tokens without pinning the repository",
    events={IAM: TRUST_EVENTS},
    match=_open_trust,
    suppresses=("iam-policy.change", "persistence.role-trust-opened", "self-protection.graduated-role-changed"),
    techniques=("T1098.003", "T1484.002", "T1078.004"),
    description="CreateRole/UpdateAssumeRolePolicy whose trust admits an OIDC provider with no sub condition, a "
    "negative one only, or a sub wildcard that spans repositories (CRITICAL); MEDIUM for one repository with any "
    "ref (repo:org/repo:*) and for a refused attempt. Per-build wildcards (CircleCI user/*, Bitbucket {repo}:*) "
    "are fine.",
)

GRADUATED_ROLE_CHANGED = Detection(
    id="self-protection.graduated-role-changed",
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Graduated CI role changed outside graduation",
    events={IAM: GRADUATED_ROLE_EVENTS},
    match=_graduated_change,
    suppresses=("iam-policy.change", "persistence.role-trust-opened"),
    techniques=("T1098", "T1098.003"),
    description=f"Trust, permissions, boundary, tags, settings or existence of a role under {GRADUATED_ROLE_PATH} "
    "changed by anyone but the graduation workflow (the rotator's identity with an announced intent); a deleted "
    "role is known from the ledger's graduation records.",
)

GRADUATED_PROVIDER_CHANGED = Detection(
    id="self-protection.graduated-provider-changed",
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="OIDC provider of graduated CI roles changed outside graduation",
    events={IAM: PROVIDER_EVENTS},
    match=_graduated_provider_change,
    suppresses=("persistence.identity-provider",),
    techniques=("T1484.002", "T1531"),
    description="Deleting, removing an audience from, re-thumbprinting or adding an audience to the IAM OIDC "
    "provider a graduated role trusts, by anyone but the graduation workflow; MEDIUM for removing an audience no "
    "graduated role uses.",
)

DETECTIONS = (OIDC_TRUST_OPEN, GRADUATED_ROLE_CHANGED, GRADUATED_PROVIDER_CHANGED)
