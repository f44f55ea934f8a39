"""DrainCheck: did every build use the new key, and is anyone but the configured targets still using the old one?

First, the new key must still be Active in IAM: IAM keeps a deleted or deactivated key working for seconds,
so a build can pass with a key someone revoked meanwhile (``NewKeyRevoked``: the state machine rolls back).

Evidence that a verification build used the new key, strongest first:

1. the build itself reported which access key it authenticated with (a digest of the id, since CI masks
   the id as a secret), recorded per target when its result was confirmed;
2. otherwise ``GetAccessKeyLastUsed`` on the new key. AWS reports it to the minute and late (no freshness
   bound is documented), so a use in the minute of the push counts, and a missing record is waited for:
   ``LastUseNotSeenYet`` is retried by the state machine for about four hours, then alerts.

A green build that never used the new key proves nothing: a variable of the same name at a
higher-priority level (environment over repository, branch-specific) may shadow the pushed one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import LastUseNotSeenYet, NewKeyRevoked, UnknownConsumer, VerificationFailed
from chalicelib.observability import logger
from chalicelib.targets.base import key_id_digest
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    if not state.old_key_id or state.emergency:
        return state.out()
    retired = (deps.ledger.key(state.user, state.old_key_id) or {}).get("status") in ("retired", "deleted")
    if retired:  # a resumed rotation that got past this point before
        return state.out()
    if state.new_key_id:
        _require_new_key_active(state.user, state.new_key_id)
    rotation = deps.ledger.rotation(state.user, state.rotation_id) or {}
    targets = {tid: t for tid, t in rotation.get("targets", {}).items() if t.get("pushed_at")}
    pushed = [clock.parse_iso(t["pushed_at"]) for t in targets.values()]
    if pushed and state.new_key_id:
        _require_new_key_used(state, state.new_key_id, targets, max(pushed))
    if pushed:
        _refuse_unknown_consumer(state, max(pushed))
    return state.out()


def _require_new_key_active(user: str, new_key_id: str) -> None:
    # IAM keeps a deleted or deactivated key working for seconds: a build that started in that window
    # passed with a key that no longer works. Only IAM's own record of the key says so.
    status = keys.key_status(user, new_key_id)
    if status != "Active":
        raise NewKeyRevoked(
            f"new key {new_key_id} is {status or 'deleted'} in IAM although every build passed with it: it was "
            "revoked outside the rotator. The targets get the old key back."
        )


def _require_new_key_used(state: RotationState, new_key_id: str, targets: dict[str, dict[str, Any]],
                          last_push: datetime) -> None:
    expected = key_id_digest(new_key_id)
    reported = {tid: t.get("used_key_sha256") for tid, t in targets.items()}
    other = sorted(tid for tid, digest in reported.items() if digest and digest != expected)
    if other:
        raise VerificationFailed(
            f"the verification build of {', '.join(other)} passed with another access key than "
            f"{new_key_id}: a CI variable may shadow the pushed one. The old key stays Active."
        )
    if all(reported.values()):
        return
    used = keys.last_used(new_key_id)
    # LastUsedDate is the start of its minute: a use in the minute of the push may be the build's.
    if used is None or used < _minute(last_push):
        unreported = sorted(tid for tid, digest in reported.items() if not digest)
        raise LastUseNotSeenYet(
            f"the verification builds of {', '.join(unreported)} passed but AWS has not reported "
            f"{new_key_id} used since the push (last used: {clock.iso(used) if used else 'never'}). "
            "Either its last-used data is late or a CI variable shadows the pushed one. The old key stays Active."
        )
    logger.info("new key use confirmed by last-used data", extra={
        "rotation_id": state.rotation_id, "new_key_id": new_key_id, "last_used": clock.iso(used)})


def _refuse_unknown_consumer(state: RotationState, last_push: datetime) -> None:
    used = keys.last_used(state.old_key_id) if state.old_key_id else None
    # Jobs that started before the push may use the old key for a while; half the drain period is
    # theirs. A use later than that comes from something the configuration does not know. LastUsedDate is
    # the start of the minute of the use, so "later than" holds for the use itself whenever it holds for
    # the report: a use inside the cut-off's minute is given the benefit of the doubt.
    cutoff = last_push + timedelta(seconds=state.drain_seconds / 2)
    if used is not None and used > cutoff:
        raise UnknownConsumer(
            f"old key {state.old_key_id} was used at {clock.iso(used)}, after every target received "
            f"{state.new_key_id}: an unknown consumer holds it. Both keys stay Active."
        )


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)
