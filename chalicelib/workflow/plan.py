"""Plan: load the user's config, take the lock, inspect the keys, decide what this rotation does.

Steady state is one Active key the ledger knows. Anything else the rotator cannot explain (two Active
keys, an Inactive key it did not retire) stops the rotation before anything changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from chalicelib import clock, keys
from chalicelib.aws import error_code, reraise_transient
from chalicelib.config import timing_seconds
from chalicelib.deps import Deps
from chalicelib.errors import RecoveryWindowOpen, RotationInProgress, UnsafeKeyState
from chalicelib.observability import logger
from chalicelib.workflow.retire import delete_retired_key
from chalicelib.workflow.rollback import roll_back
from chalicelib.workflow.state import Reason, RotationState, rotation_id_from_execution


class ExecutionInput(BaseModel):
    """What the console, the scheduler or the exposure handler starts an execution with."""

    model_config = ConfigDict(extra="forbid")

    user: str
    reason: Reason = "manual"
    compromised_key_id: str | None = None
    rotation_id: str | None = None
    #: Continue rotation ``rotation_id`` where it failed (after verification), instead of a new one.
    resume: bool = False


class PlanInput(ExecutionInput):
    execution_name: str
    execution_arn: str


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``event`` is ``{"input": <execution input>, "execution_name": ..., "execution_arn": ...}``."""
    request = PlanInput.model_validate(
        {**event.get("input", {}), "execution_name": event.get("execution_name"),
         "execution_arn": event.get("execution_arn")}
    )
    config = deps.config
    user = config.user(request.user)
    timings = timing_seconds(config.timings(user.name))
    rotation_id = request.rotation_id or rotation_id_from_execution(user.name, request.execution_name)
    ledger = deps.ledger
    # Held until the old key is retired; the margin covers retries and the drain period.
    lock_ttl = timedelta(seconds=2 * timings["verify_timeout"] + timings["drain_period"] + 3600)
    _lock(deps, user.name, rotation_id, request.execution_arn, lock_ttl)

    existing = ledger.rotation(user.name, rotation_id)
    if existing and existing.get("plan"):
        if request.resume:
            _check_resumable(existing)
            ledger.update_rotation(user.name, rotation_id, outcome="resuming", alerted_at="",
                                   execution_arn=request.execution_arn)
        logger.info("plan already made; returning it", extra={"rotation_id": rotation_id})
        return {**existing["plan"], "execution_arn": request.execution_arn}
    if request.resume:
        raise UnsafeKeyState(f"rotation {rotation_id} of {user.name!r} does not exist; nothing to resume")

    _recover_abandoned(deps, user.name, rotation_id)
    old_key_id, adoption = _inspect(deps, user.name, rotation_id, request.reason, user.adopt_existing_key)
    if request.reason == "exposure" and request.compromised_key_id != old_key_id:
        raise UnsafeKeyState(
            f"compromised key {request.compromised_key_id} is not {user.name!r}'s Active key "
            f"({old_key_id}); nothing was changed"
        )
    state = RotationState(
        user=user.name,
        rotation_id=rotation_id,
        execution_arn=request.execution_arn,
        reason=request.reason,
        targets=[t.id for t in user.targets],
        old_key_id=old_key_id,
        adoption=adoption,
        emergency=request.reason == "exposure",
        compromised_key_id=request.compromised_key_id,
        drain_seconds=0 if request.reason == "exposure" else timings["drain_period"],
        recovery_seconds=timings["recovery_window"] if old_key_id else 0,
        verify_timeout_seconds=timings["verify_timeout"],
    ).out()
    ledger.start_rotation(
        user.name,
        rotation_id,
        {
            "execution_arn": request.execution_arn,
            "reason": request.reason,
            "started_at": clock.iso(clock.now()),
            "old_key_id": old_key_id,
            "adoption": adoption,
            "phase": "planned",
            "plan": state,
        },
    )
    if adoption and old_key_id:
        ledger.record_key(user.name, old_key_id, origin="adopted", rotation_id=rotation_id, status="active")
    logger.info("planned rotation", extra={"rotation_id": rotation_id, "old_key_id": old_key_id,
                                           "adoption": adoption, "reason": request.reason})
    return state


def _check_resumable(rotation: dict[str, Any]) -> None:
    """Only a rotation whose new key is in place everywhere can go on; a rolled-back one cannot."""
    if rotation.get("rollback") or rotation.get("outcome") in ("succeeded", "abandoned"):
        raise UnsafeKeyState(
            f"rotation {rotation['rotation_id']} ended {rotation.get('outcome') or 'rolled back'}; "
            "start a new rotation instead of resuming it"
        )


def _running(deps: Deps, execution_arn: str | None) -> bool:
    if not execution_arn:
        return False
    try:
        return deps.sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        reraise_transient(exc)
        raise


def _lock(deps: Deps, user: str, rotation_id: str, execution_arn: str, ttl: timedelta) -> None:
    """The per-user lock; a lock whose execution ended without releasing it (an operator stopped it,
    its Alert failed) is taken over instead of blocking the user until it expires."""
    try:
        deps.ledger.acquire_lock(user, rotation_id, execution_arn, ttl)
    except RotationInProgress:
        holder = deps.ledger.lock_holder(user)
        if holder is None or _running(deps, holder.get("execution_arn")):
            raise
        logger.warning("taking over a stale lock", extra={"stale_rotation_id": holder["rotation_id"]})
        deps.ledger.take_over_lock(user, rotation_id, execution_arn, ttl, holder["rotation_id"])


def _recover_abandoned(deps: Deps, user: str, rotation_id: str) -> None:
    """Undo rotations whose execution ended without Report or Alert (stopped by an operator)."""
    for rotation in deps.ledger.rotations(user):
        rid = rotation["rotation_id"]
        if rid == rotation_id or rotation.get("outcome") or _running(deps, rotation.get("execution_arn")):
            continue
        if rotation.get("phase") in ("planned", "created"):
            summary = roll_back(deps, user, rid)
            deps.ledger.update_rotation(user, rid, outcome="abandoned", recovered_by=rotation_id)
            logger.warning("rolled back an abandoned rotation", extra={"abandoned_rotation_id": rid,
                                                                        "new_key_deleted": summary["new_key_deleted"]})
        else:  # it retired the old key already: nothing to undo, the Inactive key is handled below
            deps.ledger.update_rotation(user, rid, outcome="abandoned", recovered_by=rotation_id)


def _inspect(deps: Deps, user: str, rotation_id: str, reason: str, may_adopt: bool) -> tuple[str | None, bool]:
    """(the Active key to replace, whether it is adopted); clears expired retired keys by id."""
    known = deps.ledger.keys(user)
    present = keys.list_keys(user)
    active = [k for k in present if k.status == "Active"]
    if len(active) > 1:
        raise UnsafeKeyState(
            f"user {user!r} has two Active keys ({', '.join(k.key_id for k in active)}); "
            "a rotation needs exactly one. Nothing was changed: retire the one no pipeline uses."
        )
    for key in (k for k in present if k.status != "Active"):
        record = known.get(key.key_id)
        if not record or record.get("status") != "retired":
            raise UnsafeKeyState(
                f"user {user!r} has an Inactive key {key.key_id} the rotator did not retire; "
                "it was left alone and nothing was changed"
            )
        expired = clock.parse_iso(record["recovery_until"]) <= clock.now()
        if not expired and reason != "exposure":
            raise RecoveryWindowOpen(
                f"key {key.key_id} of {user!r} is Inactive inside its recovery window until "
                f"{record['recovery_until']}; nothing was changed"
            )
        delete_retired_key(deps, user, key.key_id, rotation_id)
    if not active:
        return None, False
    old = active[0]
    adoption = old.key_id not in known
    if adoption and not may_adopt:
        raise UnsafeKeyState(
            f"Active key {old.key_id} of {user!r} was not created by the rotator and adopt_existing_key "
            "is off; nothing was changed"
        )
    return old.key_id, adoption
