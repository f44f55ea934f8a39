"""DeleteOldKey: after the recovery window, delete the retired key by id (if still Inactive)."""

from __future__ import annotations

from typing import Any

from chalicelib.deps import Deps
from chalicelib.workflow.retire import delete_retired_key
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    if state.old_key_id:
        delete_retired_key(deps, state.user, state.old_key_id, state.rotation_id)
    deps.ledger.update_rotation(state.user, state.rotation_id, phase="deleted")
    return state.out()
