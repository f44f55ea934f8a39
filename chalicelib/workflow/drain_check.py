"""DrainCheck: after the drain period, is anyone but the configured targets still using the old key?"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import UnknownConsumer, VerificationFailed
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    if not state.old_key_id or state.emergency:
        return state.out()
    retired = (deps.ledger.key(state.user, state.old_key_id) or {}).get("status") in ("retired", "deleted")
    if retired:  # a resumed rotation that got past this point before
        return state.out()
    rotation = deps.ledger.rotation(state.user, state.rotation_id) or {}
    pushed = [clock.parse_iso(t["pushed_at"]) for t in rotation.get("targets", {}).values() if t.get("pushed_at")]
    if pushed and state.new_key_id:
        new_used = keys.last_used(state.new_key_id)
        if new_used is None or new_used < max(pushed):  # AwaitKeyLive used it before the push
            # A green build that never used the new key proves nothing: a variable of the same name at a
            # higher-priority level (environment over repository, branch-specific) may shadow it.
            raise VerificationFailed(
                f"the verification builds passed but AWS never saw {state.new_key_id} used: a CI variable "
                "may shadow the pushed one. The old key stays Active."
            )
    used = keys.last_used(state.old_key_id)
    # Jobs that started before the push may use the old key for a while; half the drain period is
    # theirs. A use later than that comes from something the configuration does not know.
    grace = timedelta(seconds=state.drain_seconds / 2)
    if pushed and used is not None and used > max(pushed) + grace:
        raise UnknownConsumer(
            f"old key {state.old_key_id} was used at {clock.iso(used)}, after every target received "
            f"{state.new_key_id}: an unknown consumer holds it. Both keys stay Active."
        )
    return state.out()
