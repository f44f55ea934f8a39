"""Starting rotations: on the hourly schedule, by an operator, or on an exposure event.

The execution name is ``<user>-<rotation id>`` (with a digest of it when that is too long or has characters
Step Functions refuses: ``state.execution_name``); Step Functions refuses a second execution with the same
name, so a duplicate trigger (an EventBridge redelivery, a double click) cannot start a second rotation.
The per-user lock taken by Plan backs this up for triggers with different names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock, keys
from chalicelib.aws import error_code, reraise_transient
from chalicelib.deps import Deps
from chalicelib.observability import logger
from chalicelib.workflow.state import execution_name


@dataclass(frozen=True)
class Started:
    user: str
    rotation_id: str
    execution_arn: str
    duplicate: bool


def start_rotation(deps: Deps, user: str, reason: str, rotation_id: str | None = None,
                   compromised_key_id: str | None = None, resume: bool = False,
                   note: str | None = None) -> Started:
    """Start a rotation; ``resume`` re-runs rotation ``rotation_id`` from where it stopped (every task is
    idempotent per rotation id), for a failure after verification that an operator has fixed."""
    deps.config.user(user)  # unknown users are refused before anything starts
    rotation_id = rotation_id or f"{reason[:6]}-{clock.now():%Y%m%dT%H%M%S}"
    name = execution_name(user, rotation_id)
    if resume:
        name = execution_name(user, f"{rotation_id}-resume-{clock.now():%H%M%S%f}")
    payload: dict[str, Any] = {"user": user, "reason": reason, "rotation_id": rotation_id}
    if resume:
        payload["resume"] = True
    if compromised_key_id:
        payload["compromised_key_id"] = compromised_key_id
    if note:
        payload["note"] = note
    arn = deps.settings.state_machine_arn
    existing = arn.replace(":stateMachine:", ":execution:") + f":{name}"
    if _exists(deps, existing):
        logger.info("duplicate trigger ignored", extra={"user": user, "rotation_id": rotation_id})
        return Started(user, rotation_id, existing, duplicate=True)
    try:
        # Step Functions itself answers a same-name, same-input start with the running execution,
        # and refuses one with other input: two racing triggers still make one rotation.
        response = deps.sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
    except ClientError as exc:
        if error_code(exc) == "ExecutionAlreadyExists":
            return Started(user, rotation_id, existing, duplicate=True)
        reraise_transient(exc)
        raise
    logger.info("rotation started", extra={"user": user, "rotation_id": rotation_id, "reason": reason})
    return Started(user, rotation_id, response["executionArn"], duplicate=False)


def _exists(deps: Deps, execution_arn: str) -> bool:
    try:
        deps.sfn.describe_execution(executionArn=execution_arn)
        return True
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        reraise_transient(exc)
        raise


def due_users(deps: Deps, now: datetime) -> list[str]:
    """Users whose Active key is older than their ``rotate_after`` (or who have none), not locked and not
    paused (``paused: true`` in the config, or ``ci-key-rotator pause``)."""
    due = []
    config = deps.config  # one snapshot for the whole pass
    for user in config.users:
        if user.paused or deps.ledger.lock_holder(user.name) or deps.ledger.pause(user.name):
            continue
        active = [k for k in keys.list_keys(user.name) if k.status == "Active"]
        limit = config.timings(user.name).rotate_after
        if not active or any(now - k.created >= limit for k in active):
            due.append(user.name)
    return due


def run_schedule(deps: Deps, now: datetime | None = None) -> list[Started]:
    now = now or clock.now()
    # One rotation id per user per hour: a redelivered schedule event maps to the same execution name.
    rotation_id = f"sched-{now:%Y%m%dT%H}"
    return [start_rotation(deps, user, "scheduled", rotation_id) for user in due_users(deps, now)]
