"""DeactivateCompromisedKey (emergency rotations only): the leaked key goes Inactive as soon as every
target holds its successor, before verification — the one documented exception to invariant 1, because
whoever holds the leaked key must lose it now. If verification then fails, rollback keeps the new key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import InterlockViolation
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    user, rid, key_id = state.user, state.rotation_id, state.compromised_key_id
    if not state.emergency or not key_id or key_id != state.old_key_id:
        raise InterlockViolation(f"rotation {rid} is not an emergency rotation of {key_id}; not deactivating")
    holdings = deps.ledger.holdings(user)
    behind = [t.id for t in deps.config.user(user).targets if holdings.get(t.id) != state.new_key_id]
    if behind:
        raise InterlockViolation(f"targets {behind} do not hold {state.new_key_id} yet; not deactivating {key_id}")
    if keys.key_status(user, key_id) == "Active":
        deps.ledger.record_intent(user, rid, "UpdateAccessKey", key_id)
        keys.set_status(user, key_id, "Inactive")
    now = clock.now()
    deps.ledger.record_key(user, key_id, status="retired", retired_at=clock.iso(now), retired_by=rid,
                           compromised=True,
                           recovery_until=clock.iso(now + timedelta(seconds=state.recovery_seconds)))
    deps.ledger.update_rotation(user, rid, compromised_deactivated_at=clock.iso(now))
    logger.warning("compromised key deactivated", extra={"rotation_id": rid, "key_id": key_id})
    return state.out()
