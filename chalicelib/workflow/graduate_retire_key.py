"""GraduateRetireKey: the last key-holding target graduated; the key -> Inactive by explicit id.

The same retirement a rotation gives its old key (DeactivateOldKey): guarded here, not only by the state
machine's order. Refused unless every configured target of the user graduated (the ledger) and no target
is recorded holding the key, and only for a key the rotator created or adopted. The ledger records it
retired with its recovery window; the rotation's DeleteOldKey deletes it when the window has passed. The
user's lock is released here, as a rotation does once its old key is Inactive.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.graduation import key_targets
from chalicelib.observability import logger
from chalicelib.workflow.graduate_state import GraduationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    user, gid, key_id = state.user, state.rotation_id, state.old_key_id
    if not key_id:
        raise InterlockViolation(f"graduation {gid} retires no key; refusing to retire anything")
    remaining = key_targets(deps, user)
    holders = sorted(t for t, k in deps.ledger.holdings(user).items() if k == key_id)
    if remaining or holders:
        raise InterlockViolation(f"not retiring {key_id}: targets {sorted(set(remaining) | set(holders))} still "
                                 "use access keys")
    record = deps.ledger.key(user, key_id)
    if record is None or record.get("origin") not in ("created", "adopted"):
        raise InterlockViolation(f"key {key_id} is not in the ledger; refusing to retire it")
    now = clock.now()
    if keys.key_status(user, key_id) == "Active":
        deps.ledger.record_intent(user, gid, "UpdateAccessKey", key_id)
        keys.set_status(user, key_id, "Inactive")
    if record.get("status") != "retired":
        deps.ledger.record_key(user, key_id, status="retired", retired_at=clock.iso(now), retired_by=gid,
                               recovery_until=clock.iso(now + timedelta(seconds=state.recovery_seconds)))
    deps.ledger.update_rotation(user, gid, phase="key-retired", key_retired_at=clock.iso(now))
    deps.ledger.release_lock(user, gid)
    logger.info("key retired after the last graduation", extra={"graduation_id": gid, "key_id": key_id})
    return state.out()
