"""Alert: every failure path ends here, then in a Fail state. It says what failed and what is left.

A refusal of what an operator asked for (a console input that is not the documented shape, a resume of a
rotation that ended or never existed, a paused user) changed nothing: it is LOW, names the field or the
rotation and the fix, and leaves the ledger (that rotation's record, the lock) exactly as it was.
"""

from __future__ import annotations

from typing import Any

from chalicelib.audit.masking import mask_text
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError
from chalicelib.notify import publish
from chalicelib.workflow.failure import FailedRun, finish, step_error
from chalicelib.workflow.snapshot import snapshot
from chalicelib.workflow.state import RotationState, rotation_id_from_execution

#: Failures that changed nothing and need no one out of bed.
_BENIGN = {"RotationInProgress": "LOW", "RecoveryWindowOpen": "LOW"}
#: plan.OPERATOR_REFUSALS (by name: the state machine passes only the class name; a test keeps them equal).
OPERATOR_REFUSALS = frozenset({"InvalidExecutionInput", "ResumeRefused", "UserPaused", "UserGraduated"})


def _next_step(event: dict[str, Any], user: str, rotation_id: str, error_name: str) -> str:
    if error_name == "RotationInProgress":
        return "nothing: the rotation that holds the lock goes on"
    if event.get("rollback") or not event.get("new_key_id"):
        return f"fix the cause, then start a new rotation: ci-key-rotator rotate {user}"
    return (f"every target holds the verified new key; fix the cause, then resume: "
            f"ci-key-rotator rotate {user} --resume {rotation_id}")


def _refusal(wrapper: dict[str, Any], event: dict[str, Any], error_name: str, cause: str,
             deps: Deps) -> dict[str, Any]:
    """LOW, no ledger write, no lock released: Plan refused before it took the lock or recorded anything."""
    user = event.get("user") if isinstance(event.get("user"), str) else None
    what = {"InvalidExecutionInput": "execution input refused", "ResumeRefused": "resume refused",
            "UserPaused": "user is paused", "UserGraduated": "every target graduated to OIDC"}[error_name]
    subject = f"Rotation not started: {what}" + (f" ({user})" if user else "")
    message: dict[str, Any] = {
        "kind": "rotation-refused",
        "user": user,
        "rotation_id": event.get("rotation_id") if isinstance(event.get("rotation_id"), str) else None,
        "execution_arn": wrapper.get("execution_arn", ""),
        "error": error_name,
        "cause": cause,
        "next_step": "nothing changed; correct the request as the cause says and start it again",
        "note": _note(event),
    }
    publish(deps.settings.topic_arn, subject, message, "LOW")
    return {"error": event.get("error"), "alert": {"severity": "LOW", "error": error_name, "subject": subject}}


def _note(event: dict[str, Any]) -> str | None:
    note = event.get("note")
    return mask_text(note)[:500] if isinstance(note, str) and note else None


def run(wrapper: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``wrapper`` is ``{"state": <state with error>, "execution_name": ..., "execution_arn": ...}``."""
    event = dict(wrapper.get("state") or {})
    error_name, cause = step_error(event.get("error"))
    if error_name in OPERATOR_REFUSALS:
        return _refusal(wrapper, event, error_name, cause, deps)
    user = str(event.get("user", "?"))
    rotation_id = str(
        event.get("rotation_id")
        or rotation_id_from_execution(user, str(wrapper.get("execution_name", "")))
    )
    message: dict[str, Any] = {
        "kind": "rotation-failed",
        "user": user,
        "rotation_id": rotation_id,
        "execution_arn": wrapper.get("execution_arn", ""),
        "error": error_name,
        "cause": cause,
        "rollback": event.get("rollback"),
        "rollback_error": step_error(event["rollback_error"])[1] if event.get("rollback_error") else None,
        "note": _note(event),
    }
    try:
        deps.config.user(user)
        left: dict[str, Any] | str = snapshot(deps, user)
    except ConfigError as exc:
        left = f"unknown user: {exc}"
    message["state_left_behind"] = left
    message["next_step"] = _next_step(event, user, rotation_id, error_name)
    if "rotation_id" in event:
        state = RotationState.model_validate(event)
        message.update(old_key_id=state.old_key_id, new_key_id=state.new_key_id, adoption=state.adoption)
    severity = _BENIGN.get(error_name, "HIGH")
    if event.get("emergency") or event.get("reason") == "exposure":
        severity = "CRITICAL"  # a leaked key is still out there, or its replacement is unverified
    rolled = " (rolled back)" if (event.get("rollback") or {}).get("new_key_deleted") else ""
    subject = f"Rotation of {user} failed: {error_name}{rolled}"
    # Recorded only once Plan has put the rotation id in the state; the lock is released whenever the user
    # is configured, under the id Plan took it with (from the execution name when the state has none yet),
    # conditional on that id: a duplicate trigger never releases the running rotation's lock.
    failed = FailedRun(user, rotation_id, record="rotation_id" in event, release_lock=isinstance(left, dict))
    return {**event, "alert": finish(deps, failed, error_name, cause, subject, message, severity)}
