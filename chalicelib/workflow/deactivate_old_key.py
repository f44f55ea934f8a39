"""DeactivateOldKey: retire the old key by id, and only once every target verified its successor."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.notify import publish
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState


def unverified_targets(deps: Deps, state: RotationState) -> list[str]:
    """Targets for which it is NOT proven that they hold the new key and passed a build with it."""
    rotation = deps.ledger.rotation(state.user, state.rotation_id) or {}
    results = rotation.get("targets", {})
    holdings = deps.ledger.holdings(state.user)
    graduated = deps.ledger.graduations(state.user)  # they federate (OIDC) and hold no key
    configured = [t.id for t in deps.config.user(state.user).targets if t.id not in graduated]
    return [
        tid
        for tid in configured
        if not (
            results.get(tid, {}).get("verified") is True
            and results.get(tid, {}).get("pushed_key_id") == state.new_key_id
            and holdings.get(tid) == state.new_key_id
        )
    ]


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    user, rid = state.user, state.rotation_id
    if not state.new_key_id:
        raise InterlockViolation(f"rotation {rid} has no new key; refusing to retire anything")
    # Invariant 1, enforced here and not only by the state machine's ordering.
    missing = unverified_targets(deps, state)
    if missing:
        raise InterlockViolation(
            f"not retiring {state.old_key_id}: targets {missing} have not verified {state.new_key_id}"
        )
    now = clock.now()
    # A retried task (its first attempt crashed after the ledger said "retired") must not announce twice.
    announced = (deps.ledger.rotation(user, rid) or {}).get("phase") == "retired"
    recovery_until = now + timedelta(seconds=state.recovery_seconds)
    if state.old_key_id:
        record = deps.ledger.key(user, state.old_key_id)
        if record is None or record.get("origin") not in ("created", "adopted"):
            raise InterlockViolation(f"key {state.old_key_id} is not in the ledger; refusing to retire it")
        if keys.key_status(user, state.old_key_id) == "Active":
            deps.ledger.record_intent(user, rid, "UpdateAccessKey", state.old_key_id)
            keys.set_status(user, state.old_key_id, "Inactive")
        if record.get("status") != "retired":
            deps.ledger.record_key(
                user, state.old_key_id, status="retired", retired_at=clock.iso(now), retired_by=rid,
                recovery_until=clock.iso(recovery_until),
            )
    deps.escrow.promote(user, rid)
    deps.ledger.record_key(user, state.new_key_id, status="active")
    deps.ledger.update_rotation(user, rid, phase="retired", deactivated_at=clock.iso(now))
    # The user's keys are consistent again (one Active, verified everywhere): others may rotate now.
    deps.ledger.release_lock(user, rid)
    logger.info("old key deactivated", extra={"rotation_id": rid, "old_key_id": state.old_key_id,
                                              "new_key_id": state.new_key_id})
    if not announced:
        _announce_live(deps, state, recovery_until)
    return state.out()


def _announce_live(deps: Deps, state: RotationState, recovery_until: datetime) -> None:
    """The moment an operator cares about: every pipeline runs on the new key and the old one is off.
    The final message (Report) follows once the recovery window ends and the old key is deleted."""
    if state.old_key_id:
        live = (f"old key {state.old_key_id} is Inactive; it can be re-activated until "
                f"{clock.iso(recovery_until)}, then it is deleted")
    else:
        live = "there was no old key to retire"
    message = {
        "kind": "rotation-live",
        "user": state.user,
        "rotation_id": state.rotation_id,
        "reason": state.reason,
        "old_key_id": state.old_key_id,
        "new_key_id": state.new_key_id,
        "targets": state.targets,
        "old_key_deleted_after": clock.iso(recovery_until) if state.old_key_id else None,
        "live": f"every target verified {state.new_key_id}; {live}",
        "note": state.model_extra.get("note") if state.model_extra else None,
        "execution_arn": state.execution_arn,
    }
    publish(deps.settings.topic_arn, f"New key live for {state.user}: {state.new_key_id}", message, "INFO")
