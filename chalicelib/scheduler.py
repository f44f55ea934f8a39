"""Starting rotations: on the hourly schedule, by an operator, or on an exposure event.

The execution name is ``<user>-<rotation id>`` (with a digest of it when that is too long or has characters
Step Functions refuses: ``state.execution_name``); Step Functions refuses a second execution with the same
name, so a duplicate trigger (an EventBridge redelivery, a double click) cannot start a second rotation.
The per-user lock taken by Plan backs this up for triggers with different names.

Fleet pacing (chalicelib/pacing.py): the hourly pass gives every due user a start time so the users that
share a CI token stay inside that provider's documented limits; the state machine waits for it
(``start_at``, AwaitStartSlot) before Plan. What does not fit in the hour stays due for the next pass. A
user whose previous pass's execution is still running (waiting for its slot, so not yet locked) is not
started again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock, keys, pacing
from chalicelib.aws import error_code, reraise_transient
from chalicelib.config import UserConfig
from chalicelib.deps import Deps
from chalicelib.observability import logger
from chalicelib.secret_ref import SecretRef
from chalicelib.targets.base import TargetConfig
from chalicelib.workflow.state import execution_name


@dataclass(frozen=True)
class Started:
    user: str
    rotation_id: str
    execution_arn: str
    duplicate: bool


def start_rotation(deps: Deps, user: str, reason: str, rotation_id: str | None = None,
                   compromised_key_id: str | None = None, resume: bool = False,
                   note: str | None = None, start_at: datetime | None = None) -> Started:
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
    if start_at is not None:
        # Whole seconds, rounded up: a slot never starts early.
        payload["start_at"] = f"{datetime.fromtimestamp(math.ceil(start_at.timestamp()), tz=UTC):%Y-%m-%dT%H:%M:%SZ}"
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
        if _fully_graduated(deps, user):
            continue  # every pipeline federates (OIDC): the user needs no key, and gets none
        active = [k for k in keys.list_keys(user.name) if k.status == "Active"]
        limit = config.timings(user.name).rotate_after
        if not active or any(now - k.created >= limit for k in active):
            due.append(user.name)
    return due


def run_schedule(deps: Deps, now: datetime | None = None, *, pace: bool = True) -> list[Started]:
    """Start every due user's rotation; with ``pace`` (always, except benchmarks of the runtime itself)
    at the start time its shared CI tokens allow, and only those whose time falls in this hour."""
    now = now or clock.now()
    # One rotation id per user per hour: a redelivered schedule event maps to the same execution name.
    rotation_id = f"sched-{now:%Y%m%dT%H}"
    due = due_users(deps, now)
    if not pace:
        return [start_rotation(deps, user, "scheduled", rotation_id) for user in due]
    previous = f"sched-{now - timedelta(hours=1):%Y%m%dT%H}"
    due = [user for user in due if not _waiting_for_slot(deps, user, previous)]
    config = deps.config
    plan = pacing.plan([demand(config.user(user)) for user in due])
    if plan.deferred:
        logger.info("fleet pacing: users left for the next pass", extra={
            "deferred": len(plan.deferred), "started": len(plan.offsets),
            "slots_seconds": {"/".join(cred): round(seconds) for cred, (_, seconds) in plan.load.items()}})
    # The slots are absolute times: a slow pass (many StartExecution calls) does not push them back.
    base = clock.now()
    return [start_rotation(deps, user, "scheduled", rotation_id,
                           start_at=base + timedelta(seconds=offset) if offset > 0 else None)
            for user, offset in plan.offsets.items()]


def credential(target: TargetConfig) -> pacing.Credential:
    """The token a provider counts a target's requests against: the same token at the same API is one
    budget, whichever repositories it writes to (a GitHub App: per installation, i.e. per app and owner)."""
    ref: SecretRef | None = target.token
    app = getattr(target, "app", None)
    scope = getattr(target, "rate_scope", None)
    if callable(scope):
        # A provider that counts per resource, not per token (Travis: API-triggered builds per repository).
        return (target.provider, target.api_url.rstrip("/").lower(), str(scope()))
    if ref is not None:
        where = f"{ref.source}:{ref.name}"
    elif app is not None:
        where = f"app:{app.app_id}:{str(getattr(target, 'repository', '')).split('/')[0].lower()}"
    else:
        where = f"target:{target.id}"
    return (target.provider, target.api_url.rstrip("/").lower(), where)


def demand(user: UserConfig) -> pacing.Demand:
    from chalicelib.targets.registry import provider

    uses: dict[pacing.Credential, tuple[int, pacing.RateBudget | None]] = {}
    for target in user.targets:
        cred = credential(target)
        count, budget = uses.get(cred, (0, provider(target.provider).rate_budget))
        uses[cred] = (count + 1, budget)
    return pacing.Demand(user.name, uses)


def _fully_graduated(deps: Deps, user: UserConfig) -> bool:
    graduated = deps.ledger.graduations(user.name)
    return bool(user.targets) and all(t.id in graduated for t in user.targets)


def _waiting_for_slot(deps: Deps, user: str, previous_rotation_id: str) -> bool:
    """Whether the previous pass's rotation of ``user`` is still running: it may still be waiting for its
    slot, before Plan takes the lock that ``due_users`` looks for."""
    arn = deps.settings.state_machine_arn.replace(":stateMachine:", ":execution:")
    try:
        status: str = deps.sfn.describe_execution(
            executionArn=f"{arn}:{execution_name(user, previous_rotation_id)}")["status"]
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        reraise_transient(exc)
        raise
    return status == "RUNNING"
