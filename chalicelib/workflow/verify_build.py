"""VerifyBuilds (one Map iteration, .waitForTaskToken): start a build and park the task token.

The execution resumes when the webhook route or the poller calls SendTaskSuccess/SendTaskFailure
(``chalicelib/verification.py``); the state's TimeoutSeconds bounds the wait.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.errors import RotatorError, TransientError, VerificationTriggerFailed
from chalicelib.observability import logger
from chalicelib.workflow.state import TargetTask


def nonce(rotation_id: str, target_id: str, token: str) -> str:
    """Unique per attempt (a retry gets a new token) and short enough for a run name."""
    digest = hashlib.sha256(f"{rotation_id}/{target_id}/{token}".encode()).hexdigest()[:12]
    return f"{target_id[:24]}-{digest}"


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    task = TargetTask.model_validate(event)
    if not task.task_token:
        raise VerificationTriggerFailed("no task token: this task must be invoked with .waitForTaskToken")
    config = deps.config.target(task.user, task.target_id)
    try:
        run_ref = deps.target(config).trigger_verification(nonce(task.rotation_id, task.target_id,
                                                                 task.task_token))
    except (TransientError, VerificationTriggerFailed):
        raise
    except RotatorError as exc:
        raise VerificationTriggerFailed(f"target {task.target_id!r}: {exc}") from None
    deps.ledger.put_callback(
        config.provider,
        run_ref.run_id,
        ttl=timedelta(seconds=task.verify_timeout_seconds + 3600),
        task_token=task.task_token,
        user=task.user,
        rotation_id=task.rotation_id,
        target_id=task.target_id,
    )
    deps.ledger.set_target(task.user, task.rotation_id, task.target_id, status="verifying",
                           run_id=run_ref.run_id, run_url=run_ref.url, triggered_at=clock.iso(clock.now()))
    logger.info("verification build started", extra={"rotation_id": task.rotation_id,
                                                      "target_id": task.target_id, "run_id": run_ref.run_id})
    return {"target_id": task.target_id, "run_id": run_ref.run_id}
