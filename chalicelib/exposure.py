"""AWS Health says an access key leaked: rotate it now if it is managed, page someone if it is not.

Every entry of ``affectedEntities`` is handled (earlier tools read only the first). The rotation id is
``exposure-<key id>``, so the EXPOSED and IAM_QUARANTINE events AWS sends for one leak start one rotation.
The rotator acts with its own identity: AWS's quarantine policy denies key changes to the leaked user.
Once the rotation is under way, a CRITICAL page says what the leaked key did (chalicelib/leaked_key_activity.py).
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import client, error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError
from chalicelib.event_patterns import RISK_CODES
from chalicelib.leaked_key_activity import summarise
from chalicelib.notify import publish
from chalicelib.observability import logger
from chalicelib.scheduler import start_rotation

_ACCESS_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")


def owner_of(key_id: str) -> str | None:
    """The IAM user a key belongs to (GetAccessKeyLastUsed answers for any key of the account)."""
    try:
        owner: str | None = client("iam").get_access_key_last_used(AccessKeyId=key_id).get("UserName")
        return owner
    except ClientError as exc:
        if error_code(exc) in ("NoSuchEntity", "AccessDenied", "InvalidClientTokenId"):
            return None
        reraise_transient(exc)
        raise


def respond(deps: Deps, event: dict[str, Any]) -> list[dict[str, Any]]:
    detail = event.get("detail") or {}
    code = str(detail.get("eventTypeCode", ""))
    if code not in RISK_CODES:
        return []
    keys = sorted({str(e.get("entityValue", "")) for e in detail.get("affectedEntities") or []})
    outcomes = [_respond_to_key(deps, key_id, code, event) for key_id in keys]
    return [o for o in outcomes if o]


def _respond_to_key(deps: Deps, key_id: str, code: str, event: dict[str, Any]) -> dict[str, Any] | None:
    if not _ACCESS_KEY_ID.match(key_id):
        logger.warning("exposure event entity is not an access key id", extra={"event_type": code})
        return None
    owner = owner_of(key_id)
    try:
        if owner is None:
            raise ConfigError("owner unknown")
        deps.config.user(owner)
    except ConfigError:
        message = {
            "kind": "exposed-key-unmanaged",
            "event_type": code,
            "access_key_id": key_id,
            "owner": owner or "unknown (not in this account, or already deleted)",
            "health_event_arn": (event.get("detail") or {}).get("eventArn"),
            "action": "not managed by the rotator: deactivate or rotate this key by hand now",
        }
        publish(deps.settings.topic_arn, f"EXPOSED access key {key_id} of {owner or 'unknown user'}",
                message, "CRITICAL")
        return {"access_key_id": key_id, "owner": owner, "action": "alerted"}
    started = start_rotation(deps, owner, "exposure", rotation_id=f"exposure-{key_id}", compromised_key_id=key_id)
    logger.warning("emergency rotation", extra={"user": owner, "access_key_id": key_id, "event_type": code,
                                                "duplicate": started.duplicate})
    if not started.duplicate:  # AWS sends EXPOSED and IAM_QUARANTINE for one leak: one page
        activity = summarise(deps, key_id)
        publish(deps.settings.topic_arn, f"EXPOSED access key {key_id} of {owner}: emergency rotation started",
                {"kind": "exposed-key-contained", "event_type": code, "user": owner, "access_key_id": key_id,
                 "health_event_arn": (event.get("detail") or {}).get("eventArn"),
                 "execution_arn": started.execution_arn,
                 "action": "leaked key deactivated once every target holds its successor; sessions minted "
                           "from it are revoked right after",
                 "leaked_key_activity": activity}, "CRITICAL")
    return {"access_key_id": key_id, "owner": owner, "action": "rotating", "execution_arn": started.execution_arn,
            "duplicate": started.duplicate}
