"""CreateKey: a new access key whose secret goes straight into the escrow; only its id leaves."""

from __future__ import annotations

from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.errors import EscrowError
from chalicelib.observability import logger
from chalicelib.workflow.state import RotationState


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = RotationState.model_validate(event)
    ledger, user, rid = deps.ledger, state.user, state.rotation_id
    rotation = ledger.rotation(user, rid) or {}
    if rotation.get("new_key_id"):
        return _already_created(deps, state, rotation["new_key_id"])

    escrowed = _escrowed_before_a_crash(deps, state)
    if escrowed is not None:
        return _record(deps, state, escrowed)

    _delete_orphans(deps, state, since=rotation.get("started_at"))
    ledger.record_intent(user, rid, "CreateAccessKey", None)
    credentials = keys.create_key(user)
    new_key_id = credentials.access_key_id
    try:
        deps.escrow.stash_pending(user, rid, credentials)
    except Exception:
        # The secret exists only in this process: without the escrow nobody can ever use the key.
        ledger.record_intent(user, rid, "DeleteAccessKey", new_key_id)
        keys.delete_key(user, new_key_id)
        raise
    logger.info("created key", extra={"rotation_id": rid, "new_key_id": new_key_id})
    return _record(deps, state, new_key_id)


def _record(deps: Deps, state: RotationState, new_key_id: str) -> dict[str, Any]:
    deps.ledger.record_key(state.user, new_key_id, origin="created", rotation_id=state.rotation_id,
                           status="pending", created_at=clock.iso(clock.now()))
    deps.ledger.update_rotation(state.user, state.rotation_id, new_key_id=new_key_id, phase="created")
    return state.out(new_key_id=new_key_id)


def _escrowed_before_a_crash(deps: Deps, state: RotationState) -> str | None:
    """The key an earlier attempt of this task created and escrowed before it died (or before its answer
    was lost) without recording it. Its escrow version holds this rotation's token and cannot be
    rewritten, so that key is the rotation's new key: keep it rather than delete it as an orphan and
    escrow a second one under the same token (AWS refuses that, ResourceExistsException)."""
    credentials = deps.escrow.stashed(state.user, state.rotation_id)
    if credentials is None:
        return None
    key_id = credentials.access_key_id
    if keys.key_status(state.user, key_id) is None:
        raise EscrowError(f"rotation {state.rotation_id} escrowed key {key_id}, which no longer exists in IAM; "
                          "start a new rotation")
    logger.info("recovered the key an interrupted CreateKey escrowed",
                extra={"rotation_id": state.rotation_id, "new_key_id": key_id})
    return key_id


def _already_created(deps: Deps, state: RotationState, new_key_id: str) -> dict[str, Any]:
    if keys.key_status(state.user, new_key_id) is None:
        raise EscrowError(f"key {new_key_id} recorded for rotation {state.rotation_id} no longer exists in IAM")
    deps.escrow.pending(state.user, state.rotation_id)  # raises if the escrow lost it
    return state.out(new_key_id=new_key_id)


def _delete_orphans(deps: Deps, state: RotationState, since: str | None) -> None:
    """A key this rotation created before a crash, whose secret never reached the escrow, is useless."""
    if since is None:
        return
    intents = [
        i for i in deps.ledger.intents(state.user, clock.parse_iso(since), clock.now())
        if i["rotation_id"] == state.rotation_id and i["action"] == "CreateAccessKey"
    ]
    if not intents:
        return
    first = min(clock.parse_iso(i["at"]) for i in intents)
    known = deps.ledger.keys(state.user)
    for key in keys.list_keys(state.user):
        if key.key_id != state.old_key_id and key.key_id not in known and key.created >= first.replace(microsecond=0):
            deps.ledger.record_intent(state.user, state.rotation_id, "DeleteAccessKey", key.key_id)
            keys.delete_key(state.user, key.key_id)
            logger.warning("deleted orphan key from an interrupted CreateKey",
                           extra={"rotation_id": state.rotation_id, "key_id": key.key_id})
