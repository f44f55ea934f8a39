"""UndoRollback: the undo failed before the new key was deactivated; every target it touched gets the new
key back (still Active throughout), and the old key goes back to Inactive once no target holds it."""

from __future__ import annotations

from typing import Any

from chalicelib import keys
from chalicelib.deps import Deps
from chalicelib.observability import logger
from chalicelib.workflow.rollback import restore_targets
from chalicelib.workflow.undo_state import MAY_HOLD_PUSHED, UndoState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = UndoState.model_validate(event)
    user, uid, new, old = state.user, state.undo_id, state.new_key_id, state.old_key_id
    results = (deps.ledger.rotation(user, uid) or {}).get("targets", {})
    new_secret = deps.escrow.current_for(user, new)
    restored, not_restored = restore_targets(deps, user, uid, results, MAY_HOLD_PUSHED, new, new_secret,
                                             missing=f"the escrow holds no secret of {new}")
    old_deactivated = False
    if not not_restored and keys.key_status(user, old) == "Active":
        # No target holds it any more: back to what the rotation left (Inactive, in its recovery window).
        deps.ledger.record_intent(user, uid, "UpdateAccessKey", old)
        keys.set_status(user, old, "Inactive")
        old_deactivated = True
    summary: dict[str, Any] = {"restored": restored, "not_restored": not_restored, "new_key_id": new,
                               "old_key_deactivated": old_deactivated or keys.key_status(user, old) != "Active"}
    deps.ledger.update_rotation(user, uid, phase="rolled-back" if not not_restored else "rollback-incomplete",
                                rollback=summary)
    if not_restored:
        logger.warning("undo rollback incomplete", extra={"undo_id": uid, "restored": restored})
    else:
        logger.warning("undo rolled back", extra={"undo_id": uid, "restored": restored})
    return state.out(rollback=summary)
