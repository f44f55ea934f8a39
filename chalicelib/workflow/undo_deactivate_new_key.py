"""UndoDeactivateNewKey: the rotation's new key -> Inactive by explicit id, and only once every target
holds the re-activated old key and passed a build with it (invariant 1, enforced here too).

The new key is then retired like any old key: the next rotation deletes it by id once its own recovery
window has passed. The escrow's CURRENT label goes back to the old key's version.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.notify import publish
from chalicelib.observability import logger
from chalicelib.workflow.undo_state import UndoState, make_current_previous


def unverified_targets(deps: Deps, state: UndoState) -> list[str]:
    results = (deps.ledger.rotation(state.user, state.undo_id) or {}).get("targets", {})
    holdings = deps.ledger.holdings(state.user)
    graduated = deps.ledger.graduations(state.user)  # they federate (OIDC) and hold no key
    return [t.id for t in deps.config.user(state.user).targets if t.id not in graduated
            if not (results.get(t.id, {}).get("verified") is True
                    and results.get(t.id, {}).get("pushed_key_id") == state.old_key_id
                    and holdings.get(t.id) == state.old_key_id)]


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = UndoState.model_validate(event)
    user, new, old = state.user, state.new_key_id, state.old_key_id
    missing = unverified_targets(deps, state)
    if missing:
        raise InterlockViolation(f"not deactivating {new}: targets {missing} have not verified {old}")
    if keys.key_status(user, old) != "Active":
        raise InterlockViolation(f"not deactivating {new}: {old} is not Active")
    record = deps.ledger.rotation(user, state.undo_id) or {}
    now = clock.now()
    if keys.key_status(user, new) == "Active":
        deps.ledger.record_intent(user, state.undo_id, "UpdateAccessKey", new)
        keys.set_status(user, new, "Inactive")
    if (deps.ledger.key(user, new) or {}).get("retired_by") != state.undo_id:
        deps.ledger.record_key(user, new, status="retired", retired_at=clock.iso(now), retired_by=state.undo_id,
                               recovery_until=clock.iso(now + timedelta(seconds=state.recovery_seconds)))
    deps.ledger.record_key(user, old, status="active", reactivated_by=state.undo_id)
    make_current_previous(deps, user, state.rotation_id)
    deps.ledger.update_rotation(user, state.rotation_id, outcome="undone", undone_by=state.undo_id,
                                completed_at=clock.iso(now))
    deps.ledger.update_rotation(user, state.undo_id, phase="done", outcome="undone", completed_at=clock.iso(now))
    deps.ledger.release_lock(user, state.undo_id)
    logger.info("rotation undone", extra={"undo_id": state.undo_id, "rotation_id": state.rotation_id,
                                          "old_key_id": old, "new_key_id": new})
    if record.get("outcome") != "undone":  # a retried task must not announce twice
        publish(deps.settings.topic_arn, f"Rotation of {user} undone: {old} is back", {
            "kind": "undo-succeeded", "user": user, "undo_id": state.undo_id, "rotation_id": state.rotation_id,
            "old_key_id": old, "new_key_id": new, "targets": state.targets,
            "done": f"every target verified {old}, which is Active again; {new} is Inactive and will be deleted "
                    "by the next rotation once its recovery window has passed",
            "execution_arn": state.execution_arn,
        }, "INFO")
    return state.out()
