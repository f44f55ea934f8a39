"""Rollback: before the old key was retired something failed; put every target back and drop the new key.

Targets get the old secret back from the escrow. Where that is impossible (an adoption has no escrowed
old secret, or the CI refuses), the new key is kept so that no target holds a dead key.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import EscrowError, RotatorError
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState

#: Target statuses after which the target may hold the new key.
_MAY_HOLD_NEW = {"pushing", "pushed", "verifying", "verified", "verification-failed"}


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    summary = roll_back(deps, state.user, state.rotation_id, state.new_key_id, state.old_key_id)
    return state.out(new_key_id=summary["new_key_id"], rollback=summary)


def roll_back(deps: Deps, user: str, rid: str, new_key_id: str | None = None,
              old_key_id: str | None = None) -> dict[str, Any]:
    """Undo rotation ``rid`` as far as it got; also used by Plan for a rotation whose execution died."""
    rotation = deps.ledger.rotation(user, rid) or {}
    new_key_id = rotation.get("new_key_id") or new_key_id
    old_key_id = rotation.get("old_key_id") or old_key_id
    try:
        old_secret = deps.escrow.current_for(user, old_key_id)
    except EscrowError:
        old_secret = None  # an unreadable escrow means: nothing to restore from, so keep the new key
    if rotation.get("compromised_deactivated_at"):
        # An emergency rotation already switched the leaked key off: never hand it back to a pipeline,
        # and keep the new key, which every target holds.
        summary: dict[str, Any] = {"restored": [], "not_restored": [], "new_key_deleted": False, "new_key_id": new_key_id,
                   "kept": "the compromised key stays Inactive; every target keeps the new key"}
        deps.ledger.update_rotation(user, rid, phase="emergency-kept-new-key", rollback=summary)
        deps.ledger.release_lock(user, rid)
        return summary

    restored, not_restored = [], []
    for tid, result in sorted(rotation.get("targets", {}).items()):
        if result.get("status") not in _MAY_HOLD_NEW and result.get("restored") is not False:
            continue
        if result.get("restored"):
            restored.append(tid)
            continue
        if old_secret is None or not old_key_id:
            not_restored.append({"target_id": tid, "why": "no escrowed secret of the old key (adoption)"})
            continue
        try:
            deps.target(deps.config.target(user, tid)).push(old_secret)
        except RotatorError as exc:
            not_restored.append({"target_id": tid, "why": f"{type(exc).__name__}: {exc}"})
            deps.ledger.set_target(user, rid, tid, restored=False)
            continue
        deps.ledger.set_target(user, rid, tid, restored=True, status="restored")
        deps.ledger.set_holding(user, tid, old_key_id, rid)
        restored.append(tid)

    new_key_deleted = False
    if new_key_id and not not_restored:
        deps.ledger.record_intent(user, rid, "DeleteAccessKey", new_key_id)
        keys.delete_key(user, new_key_id)
        deps.ledger.record_key(user, new_key_id, status="deleted", deleted_at=clock.iso(clock.now()))
        new_key_deleted = True
    if new_key_id:
        try:
            deps.escrow.discard_pending(user, rid)
        except (EscrowError, ClientError):
            logger.warning("could not clear the escrow's pending label", extra={"rotation_id": rid})
    summary = {"restored": restored, "not_restored": not_restored, "new_key_deleted": new_key_deleted,
               "new_key_id": new_key_id}
    deps.ledger.update_rotation(user, rid, phase="rolled-back" if not not_restored else "rollback-incomplete",
                                rollback=summary)
    # The user's keys are as consistent as rollback can make them; Alert describes the rest.
    deps.ledger.release_lock(user, rid)
    logger.warning("rolled back", extra={"rotation_id": rid, **{k: v for k, v in summary.items()
                                                                if k != "not_restored"}})
    return summary
