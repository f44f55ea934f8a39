"""UndoAlert: every failure path of an undo ends here, then in a Fail state.

A refusal (no rotation in its recovery window, its old key deleted, the user locked by a rotation,
console input that is not the documented shape) changed nothing: LOW, no ledger write, no lock released.
A failure after UndoPlan is HIGH and says what every target holds now (UndoRollback put the new key back).
"""

from __future__ import annotations

from typing import Any

from chalicelib.deps import Deps
from chalicelib.errors import ConfigError
from chalicelib.notify import publish
from chalicelib.workflow.failure import FailedRun, finish, step_error
from chalicelib.workflow.snapshot import snapshot
from chalicelib.workflow.undo_state import UNDO_REFUSALS


def run(wrapper: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``wrapper`` is ``{"state": <state with error>, "execution_name": ..., "execution_arn": ...}``."""
    event = dict(wrapper.get("state") or {})
    error_name, cause = step_error(event.get("error"))
    user = event.get("user") if isinstance(event.get("user"), str) else None
    if error_name in UNDO_REFUSALS:
        subject = f"Undo not started ({user or '?'}): {error_name}"
        publish(deps.settings.topic_arn, subject, {
            "kind": "undo-refused", "user": user, "execution_arn": wrapper.get("execution_arn", ""),
            "error": error_name, "cause": cause,
            "next_step": "nothing changed; ci-key-rotator status shows the user's keys and recovery window",
        }, "LOW")
        return {"alert": {"severity": "LOW", "error": error_name, "subject": subject}}
    undo_id = event.get("undo_id")
    message: dict[str, Any] = {
        "kind": "undo-failed", "user": user, "undo_id": undo_id, "rotation_id": event.get("rotation_id"),
        "execution_arn": wrapper.get("execution_arn", ""), "error": error_name, "cause": cause,
        "old_key_id": event.get("old_key_id"), "new_key_id": event.get("new_key_id"),
        "rollback": event.get("rollback"),
        "rollback_error": step_error(event.get("rollback_error"))[1] if event.get("rollback_error") else None,
    }
    try:
        message["state_left_behind"] = snapshot(deps, str(user))
    except ConfigError as exc:
        message["state_left_behind"] = f"unknown user: {exc}"
    rolled_back = (event.get("rollback") or {}).get("not_restored") == []
    message["next_step"] = (
        f"every target is back on {event.get('new_key_id')}, which stayed Active; fix the cause, then "
        f"ci-key-rotator undo {user} again inside the recovery window" if rolled_back else
        "check state_left_behind: a target may still hold the re-activated old key, which stays Active")
    subject = f"Undo of {user}'s rotation failed: {error_name}" + (" (rolled back)" if rolled_back else "")
    # UndoPlan recorded the undo and took the lock under one id: both are there or neither is.
    failed = (FailedRun(user, undo_id, record=True, release_lock=True)
              if user and isinstance(undo_id, str) else None)
    return {**event, "alert": finish(deps, failed, error_name, cause, subject, message, "HIGH")}
