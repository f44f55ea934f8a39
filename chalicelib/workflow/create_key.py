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
    ledger.record_key(user, new_key_id, origin="created", rotation_id=rid, status="pending",
                      created_at=clock.iso(clock.now()))
    ledger.update_rotation(user, rid, new_key_id=new_key_id, phase="created")
    logger.info("created key", extra={"rotation_id": rid, "new_key_id": new_key_id})
    return state.out(new_key_id=new_key_id)


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
