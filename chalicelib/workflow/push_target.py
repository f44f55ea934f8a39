"""PushToTargets (one Map iteration): upsert the pending key pair into one CI target."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.errors import TargetPushFailed
from chalicelib.observability import logger
from chalicelib.workflow.state import TargetTask


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    task = TargetTask.model_validate(event)
    config = deps.config.target(task.user, task.target_id)
    credentials = deps.escrow.pending(task.user, task.rotation_id)
    # Recorded before the call: if we crash after the CI accepted it, rollback still restores it.
    deps.ledger.set_target(task.user, task.rotation_id, task.target_id, provider=config.provider,
                           status="pushing")
    try:
        deps.target(config).push(credentials)
    except TargetPushFailed as exc:
        if not exc.changed:  # the CI refused the first write: it still holds what it held
            deps.ledger.set_target(task.user, task.rotation_id, task.target_id, status="push-refused")
        raise
    deps.ledger.set_target(task.user, task.rotation_id, task.target_id, status="pushed",
                           pushed_key_id=credentials.access_key_id, pushed_at=clock.iso(clock.now()))
    deps.ledger.set_holding(task.user, task.target_id, credentials.access_key_id, task.rotation_id)
    logger.info("pushed key to target", extra={"rotation_id": task.rotation_id, "target_id": task.target_id,
                                                "key_id": credentials.access_key_id})
    return {"target_id": task.target_id, "key_id": credentials.access_key_id}
