"""DrainCheck: after the drain period, is anyone but the configured targets still using the old key?"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import UnknownConsumer
from chalicelib.workflow.state import RotationState

#: IAM's LastUsedDate is coarse; a use this close to the push may be a build that started before it.
CLOCK_SKEW = timedelta(minutes=1)


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    if not state.old_key_id or state.emergency:
        return state.out()
    rotation = deps.ledger.rotation(state.user, state.rotation_id) or {}
    pushed = [clock.parse_iso(t["pushed_at"]) for t in rotation.get("targets", {}).values() if t.get("pushed_at")]
    used = keys.last_used(state.old_key_id)
    if pushed and used is not None and used > max(pushed) + CLOCK_SKEW:
        raise UnknownConsumer(
            f"old key {state.old_key_id} was used at {clock.iso(used)}, after every target received "
            f"{state.new_key_id}: an unknown consumer holds it. Both keys stay Active."
        )
    return state.out()
