"""Deleting a retired key: the one guarded path every deletion of an old key goes through."""

from __future__ import annotations

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.observability import logger


def delete_retired_key(deps: Deps, user: str, key_id: str, rotation_id: str) -> bool:
    """Delete ``key_id`` only if the ledger retired it and it is still Inactive. False if already gone."""
    record = deps.ledger.key(user, key_id)
    if record is None or record.get("status") not in ("retired", "deleted"):
        raise InterlockViolation(f"key {key_id} of {user!r} was not retired by the rotator; not deleting it")
    status = keys.key_status(user, key_id)
    if status is None:
        deps.ledger.record_key(user, key_id, status="deleted", deleted_at=record.get("deleted_at")
                               or clock.iso(clock.now()))
        return False
    if status != "Inactive":
        raise InterlockViolation(
            f"key {key_id} of {user!r} is {status} again (re-activated during its recovery window?); "
            "it was not deleted"
        )
    deps.ledger.record_intent(user, rotation_id, "DeleteAccessKey", key_id)
    deleted = keys.delete_key(user, key_id)
    deps.ledger.record_key(user, key_id, status="deleted", deleted_at=clock.iso(clock.now()))
    deps.escrow.forget(user, key_id)
    logger.info("deleted retired key", extra={"key_id": key_id, "rotation_id": rotation_id})
    return deleted
