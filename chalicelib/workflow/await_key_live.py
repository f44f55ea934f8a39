"""AwaitKeyLive: prove AWS accepts the new key before any CI receives it (IAM is eventually consistent)."""

from __future__ import annotations

from typing import Any

from chalicelib import keys
from chalicelib.deps import Deps
from chalicelib.errors import KeyNotLiveYet
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    credentials = deps.escrow.pending(state.user, state.rotation_id)
    if not keys.is_live(credentials):
        # Retried with backoff by the state machine's Retry on KeyNotLiveYet.
        raise KeyNotLiveYet(f"key {state.new_key_id} is not accepted by STS yet")
    return state.out()
