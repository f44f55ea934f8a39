"""The audit Lambdas' bodies: the rotator's configuration and ledger joined to the audit pipeline."""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.audit import service
from chalicelib.audit.telemetry import metrics
from chalicelib.aws import client, error_code
from chalicelib.deps import get_deps

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


def audit(event: dict[str, Any]) -> dict[str, Any]:
    """Classify one EventBridge event; a key change is the rotator's only if the ledger holds its intent."""
    deps = get_deps()
    config = deps.config
    try:
        return service.audit_event(
            event, managed_users=_managed_users(), intent_lookup=deps.ledger.find_intent,
            profiles={u.name: u.profile for u in config.users if u.profile is not None},
            suppressions=config.suppressions, exposure_lookup=exposure_lookup, role_path_lookup=role_path_lookup,
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
