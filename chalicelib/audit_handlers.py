"""The audit Lambdas' bodies: the rotator's configuration and ledger joined to the audit pipeline."""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.audit import service
from chalicelib.audit.context import Graduated
from chalicelib.audit.telemetry import metrics
from chalicelib.aws import client, error_code
from chalicelib.deps import get_deps
from chalicelib.federation import issuer_host

# An audit run that found nothing has no metric to flush; that is the normal case, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")


def _managed_users() -> list[str]:
    return [u.name for u in get_deps().config.users]


def exposure_lookup(user: str) -> datetime | None:
    """When the rotator last started an emergency rotation of ``user`` for an exposed key (the exposure
    handler records it in the ledger as a rotation with reason ``exposure``), or None."""
    started = [r.get("started_at") for r in get_deps().ledger.rotations(user) if r.get("reason") == "exposure"]
    times = [clock.parse_iso(s) for s in started if isinstance(s, str) and s]
    return max(times) if times else None


def role_path_lookup(role: str) -> str | None:
    """The IAM path of ``role`` (GetRole), None when there is no such role: a role-change event names only the
    role, and whether it is a graduated one (``federation.GRADUATED_ROLE_PATH``) is in its path."""
    try:
        return str(client("iam").get_role(RoleName=role)["Role"]["Path"])
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def graduated_lookup() -> Graduated:
    """The roles graduation made and the OIDC providers they trust, from the ledger (no IAM call: a deleted role
    is still known): every graduated target's record, and every graduation whose role it created and did not
    delete in a rollback (graduations in flight)."""
    ledger = get_deps().ledger
    roles: dict[str, str] = {}
    providers: dict[str, dict[str, str]] = {}
    for user in _managed_users():
        graduations = {r.get("rotation_id"): r for r in ledger.rotations(user) if r.get("kind") == "graduation"}
        made = [g for g in graduations.values()
                if g.get("role_created_by_us") and not (g.get("rollback") or {}).get("role_deleted")]
        for record in ledger.graduations(user).values():
            made.append(graduations.get(record.get("graduation_id")) or {
                "role_arn": record.get("role_arn"), "plan": {"provider_arn": issuer_host(str(record.get("issuer") or ""))}})
        for graduation in made:
            plan = graduation.get("plan") or {}
            arn = str(plan.get("role_arn") or graduation.get("role_arn") or "")
            if ":role/" not in arn:
                continue
            path, _, name = ("/" + arn.split(":role/", 1)[1]).rpartition("/")
            roles[name] = path + "/"
            provider = str(plan.get("provider_arn") or "").split(":oidc-provider/", 1)[-1]
            if provider:
                providers.setdefault(provider, {})[name] = str(plan.get("audience") or "")
    return Graduated(roles=roles, providers=providers)


def audit(event: dict[str, Any]) -> dict[str, Any]:
    """Classify one EventBridge event; a key change is the rotator's only if the ledger holds its intent."""
    deps = get_deps()
    config = deps.config
    try:
        return service.audit_event(
            event, managed_users=_managed_users(), intent_lookup=deps.ledger.find_intent,
            profiles={u.name: u.profile for u in config.users if u.profile is not None},
            suppressions=config.suppressions, exposure_lookup=exposure_lookup, role_path_lookup=role_path_lookup,
            graduated_lookup=graduated_lookup,
        )
    finally:
        metrics.flush_metrics()


def credential_report() -> dict[str, Any]:
    deps = get_deps()
    users = _managed_users()
    rotating = [u for u in users if deps.ledger.lock_holder(u)]
    try:
        return service.credential_report_audit(managed_users=users, rotating_users=rotating)
    finally:
        metrics.flush_metrics()
