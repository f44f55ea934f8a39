"""UndoPlan: which rotation to undo, refused (LOW, nothing changed) unless one is in its recovery window.

Refused when the user has no rotation whose old key waits Inactive inside its recovery window, when that
key was deleted, or when a rotation (or another undo) holds the user's lock. Otherwise it takes the lock
and stops the rotation's execution, whose next step would delete the key this undo brings back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock, keys
from chalicelib.aws import error_code, reraise_transient
from chalicelib.config import timing_seconds
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError, RotationInProgress
from chalicelib.observability import logger
from chalicelib.workflow.plan import InvalidExecutionInput
from chalicelib.workflow.state import rotation_id_from_execution
from chalicelib.workflow.undo_state import NothingToUndo, OldKeyDeleted, UndoState

#: The documented input: ``{"user": "<iam user>"}`` and an optional free-text ``note``.
_INPUT_SHAPE = '{"user": "<iam user>", "note": "<optional text>"}'


def _user(raw: Any) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str) or not raw["user"].strip():
        raise InvalidExecutionInput(f"field 'user' is missing or not a string; the input is {_INPUT_SHAPE}")
    unknown = sorted(set(raw) - {"user", "note"})
    if unknown:
        raise InvalidExecutionInput(f"unknown field(s) {unknown}; the input is {_INPUT_SHAPE}")
    return str(raw["user"])


def undoable(deps: Deps, user: str) -> dict[str, Any]:
    """The rotation an undo of ``user`` would reverse, or the refusal (also used by the CLI)."""
    try:
        deps.config.user(user)
    except ConfigError as exc:
        raise NothingToUndo(f"{exc}; nothing was changed") from None
    # The last rotation that retired its old key: only it can still be undone.
    retired = [r for r in deps.ledger.rotations(user) if r.get("kind") != "undo" and r.get("deactivated_at")]
    if not retired:
        raise NothingToUndo(f"{user!r} has no rotation in its recovery window; nothing was changed")
    rotation = retired[-1]
    rid, old, new = rotation["rotation_id"], rotation.get("old_key_id"), rotation.get("new_key_id")
    if rotation.get("outcome") == "undone":
        raise NothingToUndo(f"rotation {rid} of {user!r} was undone already ({rotation.get('undone_by')}); "
                            "nothing was changed")
    if not old or not new:
        raise NothingToUndo(f"rotation {rid} of {user!r} had no old key to go back to; nothing was changed")
    record = deps.ledger.key(user, old) or {}
    if rotation.get("phase") == "deleted" or record.get("status") == "deleted" or keys.key_status(user, old) is None:
        raise OldKeyDeleted(f"key {old} of {user!r} was deleted when rotation {rid}'s recovery window ended; "
                            "nothing to undo and nothing was changed")
    if rotation.get("adoption"):
        raise NothingToUndo(f"key {old} of {user!r} was made by hand and adopted by rotation {rid}: the escrow has "
                            "no secret of it to give back to the targets; nothing was changed")
    until = record.get("recovery_until")
    if record.get("status") != "retired" or record.get("retired_by") != rid or not isinstance(until, str):
        raise NothingToUndo(f"key {old} of {user!r} is not the Inactive key rotation {rid} retired; "
                            "nothing was changed")
    if clock.parse_iso(until) <= clock.now():
        raise NothingToUndo(f"the recovery window of rotation {rid} ended at {until}; nothing was changed")
    if keys.key_status(user, new) != "Active":
        raise NothingToUndo(f"key {new} of {user!r} is not Active; nothing was changed")
    return rotation


def run(wrapper: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``wrapper`` is ``{"input": <execution input>, "execution_name": ..., "execution_arn": ...}``."""
    user = _user(wrapper.get("input"))
    undo_id = rotation_id_from_execution(user, str(wrapper.get("execution_name", "")))
    holder = deps.ledger.lock_holder(user)
    if holder and holder.get("rotation_id") != undo_id:  # a retried UndoPlan finds its own lock
        raise RotationInProgress(f"user {user!r} is being rotated or undone by {holder.get('rotation_id')} "
                                 f"(since {holder.get('acquired_at')}); nothing was changed")
    rotation = undoable(deps, user)
    timings = timing_seconds(deps.config.timings(user))
    state = UndoState(
        user=user, undo_id=undo_id, rotation_id=rotation["rotation_id"],
        execution_arn=str(wrapper.get("execution_arn", "")),
        old_key_id=rotation["old_key_id"], new_key_id=rotation["new_key_id"],
        targets=[t.id for t in deps.config.user(user).targets if t.id not in deps.ledger.graduations(user)],
        verify_timeout_seconds=timings["verify_timeout"], recovery_seconds=timings["recovery_window"],
    )
    deps.ledger.acquire_lock(user, undo_id, state.execution_arn,
                             timedelta(seconds=2 * state.verify_timeout_seconds + 3600))
    deps.ledger.update_rotation(user, undo_id, kind="undo", undoes=state.rotation_id, phase="undoing",
                                reason="undo", started_at=clock.iso(clock.now()),
                                execution_arn=state.execution_arn, restore_key_id=state.old_key_id,
                                replace_key_id=state.new_key_id)
    _stop(deps, rotation.get("execution_arn"), undo_id)
    logger.info("undo planned", extra={"undo_id": undo_id, "rotation_id": state.rotation_id,
                                       "old_key_id": state.old_key_id, "new_key_id": state.new_key_id})
    return state.out()


def _stop(deps: Deps, execution_arn: str | None, undo_id: str) -> None:
    """The rotation waits out its recovery window and would then delete the key this undo re-activates:
    it ends here (its record says it was undone once the undo succeeds)."""
    if not execution_arn:
        return
    try:
        if deps.sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING":
            deps.sfn.stop_execution(executionArn=execution_arn, error="Undone",
                                    cause=f"undone by {undo_id} inside its recovery window")
    except ClientError as exc:
        if error_code(exc) != "ExecutionDoesNotExist":
            reraise_transient(exc)
            raise
