"""Plan: load the user's config, take the lock, inspect the keys, decide what this rotation does.

Steady state is one Active key the ledger knows. Anything else the rotator cannot explain (two Active
keys, an Inactive key it did not retire) stops the rotation before anything changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, get_args

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib import clock, keys
from chalicelib.audit.masking import mask_text
from chalicelib.aws import error_code, reraise_transient
from chalicelib.config import timing_seconds
from chalicelib.deps import Deps
from chalicelib.errors import (
    ConfigError,
    RecoveryWindowOpen,
    RotationInProgress,
    RotatorError,
    UnsafeKeyState,
)
from chalicelib.observability import logger
from chalicelib.workflow.retire import delete_retired_key
from chalicelib.workflow.rollback import roll_back
from chalicelib.workflow.state import Reason, RotationState, rotation_id_from_execution

REASONS: tuple[str, ...] = get_args(Reason)
#: Longest ``note`` kept: it travels in the state, the ledger and every alert of the rotation.
NOTE_MAX = 500
#: The execution input as the README documents it; quoted in every refusal so the fix is one copy away.
INPUT_SHAPE = ('{"user": "<IAM user name from the configuration>", "reason": "' + '" | "'.join(REASONS)
               + '" (optional, default manual), "note": "<free text>" (optional)}')


class InvalidExecutionInput(RotatorError):
    """The execution input is not the documented shape (typed in the console): nothing was started."""


class ResumeRefused(RotatorError):
    """``resume`` names a rotation that does not exist or has ended: its record is left as it was."""


class UserPaused(RotatorError):
    """An operator paused the user (``ci-key-rotator pause``, or ``paused: true`` in the config)."""


class UserGraduated(RotatorError):
    """Every target of the user federates through OIDC (``ci-key-rotator graduate``): no key to rotate."""


#: Refusals of what an operator asked for: they change nothing, so Alert sends them LOW and leaves the
#: ledger alone (alert.py matches these names: the state machine passes only the class name).
OPERATOR_REFUSALS = frozenset({InvalidExecutionInput.__name__, ResumeRefused.__name__, UserPaused.__name__,
                               UserGraduated.__name__})


class ExecutionInput(BaseModel):
    """What the console, the scheduler or the exposure handler starts an execution with."""

    model_config = ConfigDict(extra="forbid")

    user: str
    reason: Reason = "manual"
    compromised_key_id: str | None = None
    rotation_id: str | None = None
    #: Continue rotation ``rotation_id`` where it failed (after verification), instead of a new one.
    resume: bool = False
    #: Why an operator started it, in their words; carried to the ledger, the alert and the report.
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    #: The slot the scheduler gave this rotation on a shared CI token; the state machine waited for it
    #: (AwaitStartSlot) before Plan, so Plan only checks its shape.
    start_at: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class PlanInput(ExecutionInput):
    execution_name: str
    execution_arn: str


def _field_problem(error: Any) -> str:
    field = ".".join(str(p) for p in error.get("loc", ())) or "input"
    kind = error.get("type")
    if kind == "missing":
        return f"{field}: required"
    if kind == "extra_forbidden":
        hint = " (field names are lower case)" if field.lower() in ExecutionInput.model_fields else ""
        return f"{field}: not a field of the input{hint}"
    if field == "reason":
        return f"reason: must be one of {', '.join(REASONS)}; put free text in note"
    if field == "note" and kind == "string_too_long":
        return f"note: at most {NOTE_MAX} characters"
    return f"{field}: expected {kind.split('_')[0] if kind else 'another value'}"


def parse_input(event: dict[str, Any]) -> PlanInput:
    """The execution input, or InvalidExecutionInput naming each bad field and the documented shape
    (never pydantic's own text: it quotes the input back, and the input may be anything)."""
    raw = event.get("input")
    if not isinstance(raw, dict):
        raise InvalidExecutionInput(f"the execution input must be a JSON object; expected {INPUT_SHAPE}")
    try:
        return PlanInput.model_validate({**raw, "execution_name": event.get("execution_name"),
                                         "execution_arn": event.get("execution_arn")})
    except ValidationError as exc:
        problems = "; ".join(_field_problem(e) for e in exc.errors())
        raise InvalidExecutionInput(f"execution input refused ({problems}); expected {INPUT_SHAPE}") from None


def _check_operator_request(deps: Deps, request: PlanInput, rotation_id: str) -> None:
    """What an operator may have got wrong, checked before the lock is taken, so a refusal leaves the
    running rotation (if any) and every record as they were."""
    if request.reason != "exposure":
        # A leaked key is being abused now: a pause (planned maintenance, a freeze) never keeps it Active.
        paused = deps.ledger.pause(request.user)
        if paused or deps.config.user(request.user).paused:
            where = "ci-key-rotator unpause " + request.user if paused else "remove paused: true from the config"
            raise UserPaused(f"{request.user!r} is paused{_since(paused)}; nothing was started. To rotate it, "
                             f"first: {where}")
        # An exposure still runs: an Active key of a graduated user (its retirement halted) must be contained.
        targets = deps.config.user(request.user).targets
        graduated = deps.ledger.graduations(request.user)
        if targets and all(t.id in graduated for t in targets):
            raise UserGraduated(f"every target of {request.user!r} federates through OIDC (graduated): there is no "
                                "key to rotate; nothing was started")
    if request.resume:
        existing = deps.ledger.rotation(request.user, rotation_id)
        if not existing or not existing.get("plan"):
            raise ResumeRefused(f"rotation {rotation_id} of {request.user!r} does not exist; nothing to resume "
                                f"(ci-key-rotator history {request.user} lists its rotations)")
        _check_resumable(existing)
        if _running(deps, existing.get("execution_arn")):
            raise ResumeRefused(f"rotation {rotation_id} of {request.user!r} is still running "
                                f"({existing['execution_arn']}); nothing to resume")


def _since(pause: dict[str, Any] | None) -> str:
    if not pause:
        return " in the configuration"
    note = f": {pause['note']}" if pause.get("note") else ""
    return f" since {pause.get('paused_at')} by {pause.get('paused_by', '?')}{note}"


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``event`` is ``{"input": <execution input>, "execution_name": ..., "execution_arn": ...}``."""
    request = parse_input(event)
    config = deps.config  # a broken configuration is not an operator's typo: it fails (HIGH) here
    try:
        user = config.user(request.user)
    except ConfigError as exc:
        raise InvalidExecutionInput(f"user: {exc}; expected {INPUT_SHAPE}") from None
    timings = timing_seconds(config.timings(user.name))
    rotation_id = request.rotation_id or rotation_id_from_execution(user.name, request.execution_name)
    note = mask_text(request.note) if request.note else None
    _check_operator_request(deps, request, rotation_id)
    ledger = deps.ledger
    # Held until the old key is retired; the margin covers retries and the drain period.
    lock_ttl = timedelta(seconds=2 * timings["verify_timeout"] + timings["drain_period"] + 3600)
    _lock(deps, user.name, rotation_id, request.execution_arn, lock_ttl)

    existing = ledger.rotation(user.name, rotation_id)
    if existing and existing.get("plan"):
        if request.resume:
            try:
                _check_resumable(existing)  # again under the lock: it may have ended meanwhile
            except ResumeRefused:
                ledger.release_lock(user.name, rotation_id)
                raise
            ledger.update_rotation(user.name, rotation_id, outcome="resuming", alerted_at="",
                                   execution_arn=request.execution_arn)
        logger.info("plan already made; returning it", extra={"rotation_id": rotation_id})
        return {**existing["plan"], "execution_arn": request.execution_arn}

    _recover_abandoned(deps, user.name, rotation_id)
    old_key_id, adoption = _inspect(deps, user.name, rotation_id, request.reason, user.adopt_existing_key)
    if request.reason == "exposure" and request.compromised_key_id != old_key_id:
        raise UnsafeKeyState(
            f"compromised key {request.compromised_key_id} is not {user.name!r}'s Active key "
            f"({old_key_id}); nothing was changed"
        )
    state = RotationState(
        user=user.name,
        rotation_id=rotation_id,
        execution_arn=request.execution_arn,
        reason=request.reason,
        # A graduated target federates (OIDC) and holds no key variables: it never gets a key again.
        targets=[t.id for t in user.targets if t.id not in ledger.graduations(user.name)],
        old_key_id=old_key_id,
        adoption=adoption,
        emergency=request.reason == "exposure",
        compromised_key_id=request.compromised_key_id,
        drain_seconds=0 if request.reason == "exposure" else timings["drain_period"],
        recovery_seconds=timings["recovery_window"] if old_key_id else 0,
        verify_timeout_seconds=timings["verify_timeout"],
    ).out(**({"note": note} if note else {}))
    ledger.start_rotation(
        user.name,
        rotation_id,
        {
            "execution_arn": request.execution_arn,
            "reason": request.reason,
            "note": note,
            "started_at": clock.iso(clock.now()),
            "old_key_id": old_key_id,
            "adoption": adoption,
            "phase": "planned",
            "plan": state,
        },
    )
    if adoption and old_key_id:
        ledger.record_key(user.name, old_key_id, origin="adopted", rotation_id=rotation_id, status="active")
    logger.info("planned rotation", extra={"rotation_id": rotation_id, "old_key_id": old_key_id,
                                           "adoption": adoption, "reason": request.reason})
    return state


def _check_resumable(rotation: dict[str, Any]) -> None:
    """Only a rotation whose new key is in place everywhere can go on; a rolled-back one cannot."""
    if rotation.get("rollback") or rotation.get("outcome") in ("succeeded", "abandoned"):
        ended = "succeeded" if rotation.get("outcome") == "succeeded" else (
            "was abandoned" if rotation.get("outcome") == "abandoned" else "was rolled back")
        raise ResumeRefused(
            f"rotation {rotation['rotation_id']} {ended}; nothing to resume and its record is unchanged"
            + ("" if ended == "succeeded" else "; start a new rotation instead")
        )


def _running(deps: Deps, execution_arn: str | None) -> bool:
    if not execution_arn:
        return False
    try:
        status: str = deps.sfn.describe_execution(executionArn=execution_arn)["status"]
        return status == "RUNNING"
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        reraise_transient(exc)
        raise


def _lock(deps: Deps, user: str, rotation_id: str, execution_arn: str, ttl: timedelta) -> None:
    """The per-user lock; a lock whose execution ended without releasing it (an operator stopped it,
    its Alert failed) is taken over instead of blocking the user until it expires."""
    try:
        deps.ledger.acquire_lock(user, rotation_id, execution_arn, ttl)
    except RotationInProgress:
        holder = deps.ledger.lock_holder(user)
        if holder is None or _running(deps, holder.get("execution_arn")):
            raise
        logger.warning("taking over a stale lock", extra={"stale_rotation_id": holder["rotation_id"]})
        deps.ledger.take_over_lock(user, rotation_id, execution_arn, ttl, holder["rotation_id"])


def _recover_abandoned(deps: Deps, user: str, rotation_id: str) -> None:
    """Undo rotations whose execution ended without Report or Alert (stopped by an operator)."""
    for rotation in deps.ledger.rotations(user):
        rid = rotation["rotation_id"]
        if rid == rotation_id or rotation.get("outcome") or _running(deps, rotation.get("execution_arn")):
            continue
        if rotation.get("kind") == "graduation":  # not a rotation: its own rollback and alert own it
            continue
        if rotation.get("phase") in ("planned", "created"):
            summary = roll_back(deps, user, rid)
            deps.ledger.update_rotation(user, rid, outcome="abandoned", recovered_by=rotation_id)
            logger.warning("rolled back an abandoned rotation", extra={"abandoned_rotation_id": rid,
                                                                        "new_key_deleted": summary["new_key_deleted"]})
        else:  # it retired the old key already: nothing to undo, the Inactive key is handled below
            deps.ledger.update_rotation(user, rid, outcome="abandoned", recovered_by=rotation_id)


def _inspect(deps: Deps, user: str, rotation_id: str, reason: str, may_adopt: bool) -> tuple[str | None, bool]:
    """(the Active key to replace, whether it is adopted); clears expired retired keys by id."""
    known = deps.ledger.keys(user)
    present = keys.list_keys(user)
    active = [k for k in present if k.status == "Active"]
    if len(active) > 1:
        raise UnsafeKeyState(
            f"user {user!r} has two Active keys ({', '.join(k.key_id for k in active)}); "
            "a rotation needs exactly one. Nothing was changed: retire the one no pipeline uses."
        )
    for key in (k for k in present if k.status != "Active"):
        record = known.get(key.key_id)
        if not record or record.get("status") != "retired":
            raise UnsafeKeyState(
                f"user {user!r} has an Inactive key {key.key_id} the rotator did not retire; "
                "it was left alone and nothing was changed"
            )
        expired = clock.parse_iso(record["recovery_until"]) <= clock.now()
        if not expired and reason != "exposure":
            raise RecoveryWindowOpen(
                f"key {key.key_id} of {user!r} is Inactive inside its recovery window until "
                f"{record['recovery_until']}; nothing was changed"
            )
        delete_retired_key(deps, user, key.key_id, rotation_id)
    if not active:
        return None, False
    old = active[0]
    adoption = old.key_id not in known
    if adoption and not may_adopt:
        raise UnsafeKeyState(
            f"Active key {old.key_id} of {user!r} was not created by the rotator and adopt_existing_key "
            "is off; nothing was changed"
        )
    return old.key_id, adoption
