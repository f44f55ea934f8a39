"""GraduateAlert: every failure path of a graduation ends here, then in a Fail state.

A refusal (the target is blocked or graduated already, the user is locked, console input that is not the
documented shape) changed nothing: LOW, no ledger write, no lock released. A failure after GraduatePlan is
HIGH: before retirement GraduateRollback restored the key setup (the rollback summary says so); from
DrainCheck on the target stays graduated and the key stays Active with no target holding it.
"""

from __future__ import annotations

from typing import Any

from chalicelib.audit.masking import mask_text
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError
from chalicelib.notify import publish
from chalicelib.workflow.failure import FailedRun, finish, step_error
from chalicelib.workflow.graduate_state import GRADUATE_REFUSALS
from chalicelib.workflow.snapshot import snapshot


def _error(error: Any) -> tuple[str, str]:
    name, cause = step_error(error)
    return name, mask_text(cause)


def run(wrapper: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``wrapper`` is ``{"state": <state with error>, "execution_name": ..., "execution_arn": ...}``."""
    event = dict(wrapper.get("state") or {})
    error_name, whole_cause = step_error(event.get("error"))
    cause = mask_text(whole_cause)  # unlike the rotation's and undo's alert, this one carries it masked
    user = event.get("user") if isinstance(event.get("user"), str) else None
    if user is None and isinstance(event.get("input"), dict) and isinstance(event["input"].get("user"), str):
        user = event["input"]["user"]
    if error_name in GRADUATE_REFUSALS:
        subject = f"Graduation not started ({user or '?'}): {error_name}"
        publish(deps.settings.topic_arn, subject, {
            "kind": "graduation-refused", "user": user, "execution_arn": wrapper.get("execution_arn", ""),
            "error": error_name, "cause": cause,
            "next_step": "nothing changed; ci-key-rotator plan shows which targets can graduate and why not",
        }, "LOW")
        return {"alert": {"severity": "LOW", "error": error_name, "subject": subject}}
    gid, tid = event.get("rotation_id"), event.get("target_id")
    rollback = event.get("rollback")
    message: dict[str, Any] = {
        "kind": "graduation-failed", "user": user, "graduation_id": gid, "target_id": tid,
        "execution_arn": wrapper.get("execution_arn", ""), "error": error_name, "cause": cause,
        "key_id": event.get("key_id"), "role_arn": event.get("role_arn"), "rollback": rollback,
        "rollback_error": _error(event.get("rollback_error"))[1] if event.get("rollback_error") else None,
    }
    try:
        message["state_left_behind"] = snapshot(deps, str(user))
    except ConfigError as exc:
        message["state_left_behind"] = f"unknown user: {exc}"
    restored = isinstance(rollback, dict) and rollback.get("not_restored") is None
    if restored:
        message["next_step"] = (f"{tid} is back on key {event.get('key_id')} exactly as before; fix the cause "
                                f"(ci-key-rotator plan {user}), then ci-key-rotator graduate {user} {tid} again")
    elif rollback is None and event.get("retire"):
        message["next_step"] = (f"{tid} graduated and federates; the key {event.get('old_key_id')} was not "
                                "retired (see the cause): no target holds it, so retire it by hand once it "
                                "shows no use (GetAccessKeyLastUsed)")
    else:
        message["next_step"] = "check state_left_behind: the target's key variables may not be restored"
    subject = f"Graduation of {tid} ({user}) failed: {error_name}" + (" (restored)" if restored else "")
    # GraduatePlan recorded the graduation and took the lock under one id: both are there or neither is.
    failed = FailedRun(user, gid, record=True, release_lock=True) if user and isinstance(gid, str) else None
    return {**event, "alert": finish(deps, failed, error_name, whole_cause, subject, message, "HIGH")}
