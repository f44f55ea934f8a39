"""Resolving a parked verification: the webhook route and the poller both end up here.

The CI's status API decides (a webhook is only a hint); the task token is decrypted from the ledger only
to resume the execution. The webhook route calls this under a time budget (``targets.http.time_budget``),
the poller with a larger one per run.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.aws import error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.observability import logger
from chalicelib.targets.base import RunState, RunStatus

Outcome = Literal["succeeded", "failed", "pending", "unknown-run", "already-resolved", "stale"]


def confirm_and_resolve(deps: Deps, provider: str, run_id: str, source: str) -> Outcome:
    """Ask the CI for the run's authoritative state and, if it is final, resume the execution.

    Webhooks are hints (they can be lost, replayed or forged by a leaked secret); the status API decides.
    """
    callback = deps.ledger.callback(provider, run_id)
    if callback is None:
        return "unknown-run"
    target = deps.target(deps.config.target(callback["user"], callback["target_id"]))
    status = target.run_status(run_id)
    if not status.terminal:
        return "pending"
    return resolve(deps, callback, status, source)


def resolve(deps: Deps, callback: dict[str, Any], status: RunStatus, source: str) -> Outcome:
    provider, run_id = callback["provider"], callback["run_id"]
    user, rid, tid = callback["user"], callback["rotation_id"], callback["target_id"]
    passed = status.state is RunState.SUCCEEDED
    # Decrypted only here, once the status API has spoken (chalicelib/task_tokens.py); before anything is
    # recorded, so an unusable token leaves the ledger as it was.
    task_token = deps.ledger.task_token(callback)
    now = clock.iso(clock.now())
    # Which key the build authenticated with, when the provider reports it: DrainCheck's best evidence.
    used_key = {"used_key_sha256": status.used_key_sha256} if status.used_key_sha256 else {}
    if status.used_role:  # an OIDC build (graduation): the role session it authenticated as
        used_key["used_role"] = status.used_role
    deps.ledger.set_target(user, rid, tid, status="verified" if passed else "verification-failed",
                           verified=passed, verified_at=now, run_result=status.detail, resolved_by=source,
                           **used_key)
    try:
        if passed:
            deps.sfn.send_task_success(
                taskToken=task_token,
                output=json.dumps({"target_id": tid, "run_id": run_id, "result": status.detail}),
            )
        else:
            deps.sfn.send_task_failure(
                taskToken=task_token,
                error="VerificationFailed",
                cause=f"target {tid}: build {run_id} ended {status.detail}",
            )
    except ClientError as exc:
        if error_code(exc) in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
            # The execution stopped waiting (timeout, operator stop, retried attempt): nothing to resume.
            deps.ledger.delete_callback(provider, run_id)
            logger.info("verification result arrived for a task no longer waiting",
                        extra={"run_id": run_id, "target_id": tid, "code": error_code(exc)})
            return "stale"
        reraise_transient(exc)
        raise
    if not deps.ledger.delete_callback(provider, run_id):
        return "already-resolved"
    logger.info("verification resolved", extra={"rotation_id": rid, "target_id": tid, "run_id": run_id,
                                                 "result": status.detail, "source": source})
    return "succeeded" if passed else "failed"
