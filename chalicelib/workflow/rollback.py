"""Rollback: before the old key was retired something failed; put every target back and drop the new key.

Targets get the old secret back from the escrow. Where that is impossible (an adoption has no escrowed
old secret, or the CI refuses), the new key is kept so that no target holds a dead key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import EscrowError, RotatorError
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState

if TYPE_CHECKING:
    from chalicelib.targets.base import Credentials

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

    restored, not_restored = restore_targets(
        deps, user, rid, rotation.get("targets", {}), _MAY_HOLD_NEW, old_key_id, old_secret,
        missing="no escrowed secret of the old key (adoption)")

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


def restore_targets(deps: Deps, user: str, rid: str, targets: Mapping[str, Mapping[str, Any]],
                    may_hold: Collection[str], key_id: str | None, secret: Credentials | None, *,
                    missing: str) -> tuple[list[str], list[dict[str, str]]]:
    """Push ``secret`` (of ``key_id``) back to every target of run ``rid`` that may hold another key: its
    status is in ``may_hold``, or an earlier restore of it failed. Shared by Rollback (the old key back) and
    UndoRollback (the new key back), and safe to re-run: a target already restored is only counted.

    Returns the targets restored and, for the rest, why not (``missing`` when there is no secret to push).
    """
    restored: list[str] = []
    not_restored: list[dict[str, str]] = []
    for tid, result in sorted(targets.items()):
        if result.get("restored"):
            restored.append(tid)
            continue
        if result.get("status") not in may_hold and result.get("restored") is not False:
            continue
        if secret is None or not key_id:
            not_restored.append({"target_id": tid, "why": missing})
            continue
        try:
            deps.target(deps.config.target(user, tid)).push(secret)
        except RotatorError as exc:
            not_restored.append({"target_id": tid, "why": f"{type(exc).__name__}: {exc}"})
            deps.ledger.set_target(user, rid, tid, restored=False)
            continue
        deps.ledger.set_target(user, rid, tid, restored=True, status="restored")
        deps.ledger.set_holding(user, tid, key_id, rid)
        restored.append(tid)
    return restored, not_restored
