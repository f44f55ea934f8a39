"""UndoPushTargets (one Map iteration): put the escrowed old key pair back into one CI target."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.errors import TargetPushFailed
from chalicelib.observability import logger
from chalicelib.workflow.state import TargetTask
from chalicelib.workflow.undo_state import escrowed


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``rotation_id`` is the undo's id and ``new_key_id`` the key pushed (the old one), as VerifyBuild
    reads them: the undo's per-target results are its own."""
    task = TargetTask.model_validate(event)
    if not task.new_key_id:
        raise TargetPushFailed("no key id to push", changed=False)
    config = deps.config.target(task.user, task.target_id)
    credentials = escrowed(deps, task.user, task.new_key_id)
    # Recorded before the call: if we crash after the CI accepted it, UndoRollback still restores it.
    deps.ledger.set_target(task.user, task.rotation_id, task.target_id, provider=config.provider, status="pushing")
    try:
        deps.target(config).push(credentials)
    except TargetPushFailed as exc:
        if not exc.changed:
            deps.ledger.set_target(task.user, task.rotation_id, task.target_id, status="push-refused")
        raise
    deps.ledger.set_target(task.user, task.rotation_id, task.target_id, status="pushed",
                           pushed_key_id=credentials.access_key_id, pushed_at=clock.iso(clock.now()))
    deps.ledger.set_holding(task.user, task.target_id, credentials.access_key_id, task.rotation_id)
    logger.info("pushed the old key back", extra={"undo_id": task.rotation_id, "target_id": task.target_id,
                                                   "key_id": credentials.access_key_id})
    return {"target_id": task.target_id, "key_id": credentials.access_key_id}
