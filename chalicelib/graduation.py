"""Graduation to OIDC federation (issue 15): which targets of a user federate, which can, and why not.

A target *graduates* when its pipeline assumes an IAM role through its CI's OIDC ID token instead of holding
the user's access key (``statemachine/graduate.asl.json``). The ledger keeps one ``GRADUATED#<target>``
record per graduated target (role ARN, graduation id, the key it held); from then on rotations leave the
target alone (its key variables are gone) and a user whose every target graduated is not rotated at all.

``target_verdicts`` is what ``ci-key-rotator plan`` shows and what GraduatePlan enforces: a target can
graduate only when

- its provider issues OIDC tokens and the target names one repository/project (``federation_for``);
- the user's permissions can be copied to a role: none come from IAM groups (a role cannot be a member);
- the key the target holds is the user's one Active key and its secret is in the escrow, so that a failed
  graduation can put the key variables back exactly as they were (a key made by hand and never rotated
  has no escrowed secret: rotate the user once first);
- no rotation of the user is in its recovery window (an undo would push the old key to every target).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.federation import GRADUATED_ROLE_PATH, Blocked, Federation, federation_for

#: IAM's limit on a role name (https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html).
ROLE_NAME_MAX = 64
_ROLE_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")
#: Tags that mark a role as the rotator's own (EnsureRole updates only such roles; rollback deletes one only
#: when its graduation tag names the execution that created it).
TAG_USER, TAG_TARGET, TAG_GRADUATION = "ci-key-rotator:user", "ci-key-rotator:target", "ci-key-rotator:graduation"


def role_name(user: str, target: Any) -> str:
    """``oidc.role_name``, else ``<user>-<target id>``; too long for IAM, a readable prefix and a digest."""
    settings = getattr(target, "oidc", None)
    if settings is not None and settings.role_name:
        return str(settings.role_name)
    full = _ROLE_NAME_UNSAFE.sub("_", f"{user}-{target.id}")
    if len(full) <= ROLE_NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    return f"{full[:ROLE_NAME_MAX - 13]}-{digest}"


def role_arn(account: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role{GRADUATED_ROLE_PATH}{name}"


def graduated(deps: Deps, user: str) -> dict[str, dict[str, Any]]:
    """target id -> graduation record, for the targets of ``user`` that federate now."""
    return deps.ledger.graduations(user)


def key_targets(deps: Deps, user: str) -> list[str]:
    """The configured targets of ``user`` that still hold a key (every one a rotation must push to)."""
    done = graduated(deps, user)
    return [t.id for t in deps.config.user(user).targets if t.id not in done]


def listed(call: Callable[..., Any], key: str, **kwargs: Any) -> list[Any]:
    """Every item of an IAM list call, page by page (``Marker``/``IsTruncated``). Called with the client's
    method itself, not a paginator, so deploy/analysis.py sees the action and the policy grants it."""
    items: list[Any] = []
    while True:
        page = call(**kwargs)
        items.extend(page.get(key, []))
        if not page.get("IsTruncated"):
            return items
        kwargs["Marker"] = page["Marker"]


def group_names(user: str) -> list[str]:
    from chalicelib.aws import client

    return [g["GroupName"] for g in listed(client("iam").list_groups_for_user, "Groups", UserName=user)]


def escrowed_key(deps: Deps, user: str) -> tuple[str | None, str | None]:
    """(the user's one Active key, why the escrow cannot restore it, or None). By the ledger: the rotator
    escrows the secret of every key it creates, and never has one of a key it adopted; the escrow itself is
    readable only by the escrow's functions (GraduatePlan reads it too before it changes anything)."""
    active = [k.key_id for k in keys.list_keys(user) if k.status == "Active"]
    if len(active) != 1:
        return None, f"the user has {len(active)} Active keys; graduation needs exactly one"
    if (deps.ledger.key(user, active[0]) or {}).get("origin") != "created":
        return active[0], (f"the escrow holds no secret of {active[0]} (a key made by hand that was never "
                           "rotated): a failed graduation could not restore it; rotate the user once first")
    return active[0], None


def open_recovery_window(deps: Deps, user: str) -> str | None:
    """A retired key still inside its recovery window (an undo could push it to every target)."""
    records = deps.ledger.keys(user)
    for key in keys.list_keys(user):
        record = records.get(key.key_id) or {}
        until = record.get("recovery_until")
        if key.status != "Active" and record.get("status") == "retired" and isinstance(until, str) \
                and clock.parse_iso(until) > clock.now():
            return f"key {key.key_id} is Inactive in its recovery window until {until}"
    return None


def target_verdicts(deps: Deps, user: str, *, check_keys: bool = True) -> list[dict[str, Any]]:
    """Per configured target: ``graduated`` (with its role), ``can graduate`` or ``blocked`` with why."""
    config = deps.config.user(user)
    done = graduated(deps, user)
    holdings = deps.ledger.holdings(user)
    user_blocks: list[str] = []
    active: str | None = None
    if check_keys:
        groups = group_names(user)
        if groups:
            user_blocks.append(f"permissions: the user gets permissions from IAM group(s) {', '.join(groups)}, "
                               "which a role cannot inherit; attach those policies to the user instead")
        active, why = escrowed_key(deps, user)
        if why:
            user_blocks.append(why)
        window = open_recovery_window(deps, user)
        if window:
            user_blocks.append(f"{window}: graduate once it has ended (an undo would push that key everywhere)")
    verdicts = []
    for target in config.targets:
        row: dict[str, Any] = {"target_id": target.id, "provider": target.provider}
        if target.id in done:
            record = done[target.id]
            verdicts.append({**row, "verdict": "graduated", "role_arn": record.get("role_arn"),
                             "graduated_at": record.get("graduated_at")})
            continue
        federation = federation_for(target)
        blocks = [federation.reason] if isinstance(federation, Blocked) else []
        blocks += user_blocks
        if check_keys and active and holdings.get(target.id) not in (None, active):
            blocks.append(f"the rotator recorded it holding {holdings[target.id]}, not the Active key {active}")
        if isinstance(federation, Federation):
            row.update(issuer=federation.issuer, subject=federation.subject, role_name=role_name(user, target))
        verdicts.append({**row, "verdict": "blocked" if blocks else "can graduate", "blocked_by": blocks})
    return verdicts
