"""GraduatePlan: which target graduates, refused (LOW, nothing changed) unless it can; then the user's lock.

Input (console or ``ci-key-rotator graduate``): ``{"user": "<iam user>", "target": "<target id>",
"note": "<optional text>"}``; without ``target`` the user's only graduable target (a user with several
is refused with their list: the CLI starts one execution per target). The checks are
``graduation.target_verdicts``: the provider must federate, the user's permissions must be copyable, the
key the target holds must be restorable from the escrow. The lock keeps rotations and undos out until the
target is verified on OIDC (and, for the last target, until its key is Inactive).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib import clock
from chalicelib.audit.masking import mask_text
from chalicelib.config import timing_seconds
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError, RotationInProgress
from chalicelib.federation import Federation, federation_for
from chalicelib.graduation import role_arn, role_name, target_verdicts
from chalicelib.observability import logger
from chalicelib.workflow.graduate_state import GraduationRefused, GraduationState, account_of
from chalicelib.workflow.plan import NOTE_MAX, InvalidExecutionInput
from chalicelib.workflow.state import rotation_id_from_execution

_INPUT_SHAPE = '{"user": "<iam user>", "target": "<target id, optional>", "note": "<optional text>"}'


def _request(raw: Any) -> tuple[str, str | None, str | None]:
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str) or not raw["user"].strip():
        raise InvalidExecutionInput(f"field 'user' is missing or not a string; the input is {_INPUT_SHAPE}")
    unknown = sorted(set(raw) - {"user", "target", "note"})
    if unknown:
        raise InvalidExecutionInput(f"unknown field(s) {unknown}; the input is {_INPUT_SHAPE}")
    target, note = raw.get("target"), raw.get("note")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise InvalidExecutionInput(f"field 'target' must be a target id; the input is {_INPUT_SHAPE}")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        raise InvalidExecutionInput(f"field 'note' must be text of at most {NOTE_MAX} characters")
    return str(raw["user"]), target, note


def choose(deps: Deps, user: str, target: str | None) -> dict[str, Any]:
    """The verdict of the target to graduate, or GraduationRefused saying why (also used by the CLI)."""
    try:
        verdicts = target_verdicts(deps, user)
    except ConfigError as exc:
        raise GraduationRefused(f"{exc}; nothing was changed") from None
    if target is None:
        ready = [v for v in verdicts if v["verdict"] == "can graduate"]
        if len(ready) != 1:
            names = ", ".join(v["target_id"] for v in ready) or "none"
            raise GraduationRefused(f"name the target to graduate: {user!r} has {len(ready)} graduable target(s) "
                                    f"({names}); nothing was changed")
        return ready[0]
    verdict = next((v for v in verdicts if v["target_id"] == target), None)
    if verdict is None:
        raise GraduationRefused(f"user {user!r} has no target {target!r}; nothing was changed")
    if verdict["verdict"] == "graduated":
        raise GraduationRefused(f"target {target!r} of {user!r} graduated already ({verdict.get('role_arn')}); "
                                "nothing was changed")
    if verdict["verdict"] == "blocked":
        raise GraduationRefused(f"target {target!r} of {user!r} cannot graduate: "
                                f"{'; '.join(verdict['blocked_by'])}. Nothing was changed")
    return verdict


def run(wrapper: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``wrapper`` is ``{"input": <execution input>, "execution_name": ..., "execution_arn": ...}``."""
    user, target_id, note = _request(wrapper.get("input"))
    execution_arn = str(wrapper.get("execution_arn", ""))
    gid = rotation_id_from_execution(user, str(wrapper.get("execution_name", "")))
    existing = deps.ledger.rotation(user, gid)
    if existing and existing.get("plan"):  # a retried GraduatePlan: its lock and record are there
        return dict(existing["plan"])
    holder = deps.ledger.lock_holder(user)
    if holder and holder.get("rotation_id") != gid:
        raise RotationInProgress(f"user {user!r} is being rotated, undone or graduated by "
                                 f"{holder.get('rotation_id')} (since {holder.get('acquired_at')}); "
                                 "nothing was changed")
    verdict = choose(deps, user, target_id)
    target = deps.config.target(user, verdict["target_id"])
    federation = federation_for(target)
    if not isinstance(federation, Federation):  # choose() refused it already; the config may have changed since
        raise GraduationRefused(f"target {target.id!r} cannot graduate: {federation.reason}. Nothing was changed")
    partition, account = account_of(execution_arn)
    name = role_name(user, target)
    timings = timing_seconds(deps.config.timings(user))
    key_id = next(k.key_id for k in _active(user))
    if deps.escrow.current_for(user, key_id) is None:  # what a rollback would restore: checked before any change
        raise GraduationRefused(f"the escrow holds no secret of {key_id}: a failed graduation could not restore "
                                f"target {target.id!r}; rotate {user!r} once first. Nothing was changed")
    state = GraduationState(
        user=user, rotation_id=gid, execution_arn=execution_arn, target_id=target.id, provider=target.provider,
        key_id=key_id, key_variables=[target.secret_names.access_key_id, target.secret_names.secret_access_key],
        issuer=federation.issuer, audience=federation.audience,
        provider_arn=federation.provider_arn(account, partition), role_name=name,
        role_arn=role_arn(account, name, partition), note=mask_text(note) if note else None,
        drain_seconds=timings["drain_period"], recovery_seconds=timings["recovery_window"],
        verify_timeout_seconds=timings["verify_timeout"],
    )
    deps.ledger.acquire_lock(user, gid, execution_arn,
                             timedelta(seconds=2 * state.verify_timeout_seconds + state.drain_seconds + 3600))
    deps.ledger.start_rotation(user, gid, {
        "kind": "graduation", "reason": "graduation", "phase": "graduating", "execution_arn": execution_arn,
        "started_at": clock.iso(clock.now()), "target_id": target.id, "key_id": key_id, "note": state.note,
        "role_arn": state.role_arn, "plan": state.out(),
    })
    logger.info("graduation planned", extra={"graduation_id": gid, "target_id": target.id, "key_id": key_id,
                                             "role_arn": state.role_arn})
    return state.out()


def _active(user: str) -> list[Any]:
    from chalicelib import keys

    return [k for k in keys.list_keys(user) if k.status == "Active"]
