"""Report: the rotation succeeded and the old key is deleted; record it, release the lock, tell SNS and
Slack (the "new key live" message went out earlier, from DeactivateOldKey)."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.notify import publish
from chalicelib.workflow.snapshot import snapshot
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    already = (deps.ledger.rotation(state.user, state.rotation_id) or {}).get("outcome") == "succeeded"
    left = snapshot(deps, state.user)
    deps.ledger.update_rotation(state.user, state.rotation_id, outcome="succeeded", phase="done",
                                completed_at=clock.iso(clock.now()))
    deps.ledger.release_lock(state.user, state.rotation_id)
    message = {
        "kind": "rotation-succeeded",
        "user": state.user,
        "rotation_id": state.rotation_id,
        "reason": state.reason,
        "old_key_id": state.old_key_id,
        "new_key_id": state.new_key_id,
        "adoption": state.adoption,
        "execution_arn": state.execution_arn,
        "note": state.model_extra.get("note") if state.model_extra else None,
        "state_left_behind": left,
    }
    subject = f"Rotated {state.user}: {state.old_key_id or 'no key'} -> {state.new_key_id}"
    if not already:  # a retried Report must not announce the rotation twice
        publish(deps.settings.topic_arn, subject, message, "INFO")
    return state.out(outcome="succeeded")
