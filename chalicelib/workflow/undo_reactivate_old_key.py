"""UndoReactivateOldKey: the key the rotation retired -> Active by explicit id, then proven live.

Only the key the ledger says that rotation retired is touched. IAM is eventually consistent, so no CI
receives the key before STS accepts it (Retry on KeyNotLiveYet, as AwaitKeyLive does for a new key).
"""

from __future__ import annotations

from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation, KeyNotLiveYet
from chalicelib.workflow.undo_state import OldKeyDeleted, UndoState, escrowed


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = UndoState.model_validate(event)
    user, old = state.user, state.old_key_id
    record = deps.ledger.key(user, old) or {}
    if record.get("retired_by") != state.rotation_id:
        raise InterlockViolation(f"key {old} of {user!r} was not retired by rotation {state.rotation_id}; "
                                 "not re-activating it")
    status = keys.key_status(user, old)
    if status is None:
        raise OldKeyDeleted(f"key {old} of {user!r} no longer exists")
    credentials = escrowed(deps, user, old)  # before any change: without it no target can get the key back
    if status != "Active":
        deps.ledger.record_intent(user, state.undo_id, "UpdateAccessKey", old)
        keys.set_status(user, old, "Active")
        deps.ledger.update_rotation(user, state.undo_id, phase="reactivated", reactivated_at=clock.iso(clock.now()))
    if not keys.is_live(credentials):
        raise KeyNotLiveYet(f"key {old} is not accepted by STS yet")
    return state.out()
