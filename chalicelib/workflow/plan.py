"""Plan: load the user's config, take the lock, inspect the keys, decide what this rotation does.

Steady state is one Active key the ledger knows. Anything else the rotator cannot explain (two Active
keys, an Inactive key it did not retire) stops the rotation before anything changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from chalicelib import clock, keys
from chalicelib.config import timing_seconds
from chalicelib.deps import Deps
from chalicelib.errors import RecoveryWindowOpen, UnsafeKeyState
from chalicelib.observability import logger
from chalicelib.workflow.retire import delete_retired_key
from chalicelib.workflow.state import Reason, RotationState, rotation_id_from_execution


class ExecutionInput(BaseModel):
    """What the console, the scheduler or the exposure handler starts an execution with."""

    model_config = ConfigDict(extra="forbid")

    user: str
    reason: Reason = "manual"
    compromised_key_id: str | None = None
    rotation_id: str | None = None


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
    ledger.acquire_lock(user.name, rotation_id, request.execution_arn, lock_ttl)

    existing = ledger.rotation(user.name, rotation_id)
    if existing and existing.get("plan"):
        logger.info("plan already made; returning it", extra={"rotation_id": rotation_id})
        return dict(existing["plan"])

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
