"""Invariants enforced in the code of each destructive step, not only by the state machine's ordering."""

from __future__ import annotations

import pytest

from chalicelib.deps import get_deps
from chalicelib.errors import InterlockViolation
from chalicelib.workflow import deactivate_old_key
from chalicelib.workflow.retire import delete_retired_key
from local.world import World
from tests.conftest import new_user_name


def test_old_key_is_not_deactivated_while_a_target_has_not_verified(clean_world: World) -> None:
    """Invariant 1: even if the workflow reached DeactivateOldKey early, the step refuses."""
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}-a", f"acme/{name}-b"])
    assert clean_world.rotate(name)["status"] == "SUCCEEDED"
    (current,) = clean_world.key_statuses(name)
    rotation = get_deps().ledger.rotations(name)[-1]
    state = {**rotation["plan"], "old_key_id": current, "new_key_id": "AKIAFAKEFAKEFAKEFAKE"}

    with pytest.raises(InterlockViolation, match="have not verified"):
        deactivate_old_key.run(state, get_deps())

    assert clean_world.key_statuses(name) == {current: "Active"}


def test_a_key_the_rotator_did_not_retire_is_never_deleted(clean_world: World, user: str) -> None:
    """Invariant 4: deletion needs an explicit id that the ledger retired."""
    (hand_made,) = clean_world.key_statuses(user)
    clean_world.runtime.client("iam").update_access_key(UserName=user, AccessKeyId=hand_made, Status="Inactive")

    with pytest.raises(InterlockViolation, match="not retired by the rotator"):
        delete_retired_key(get_deps(), user, hand_made, "test")

    assert clean_world.key_statuses(user) == {hand_made: "Inactive"}


def test_every_destructive_call_named_a_key_the_rotator_recorded(clean_world: World, user: str) -> None:
    """Invariant 4 over a whole rotation: each Update/Delete intent names a key in the ledger."""
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    ledger = get_deps().ledger
    from datetime import timedelta

    from chalicelib import clock

    intents = ledger.intents(user, clock.now() - timedelta(hours=1), clock.now())
    destructive = [i for i in intents if i["action"] in ("UpdateAccessKey", "DeleteAccessKey")]
    known = ledger.keys(user)
    assert len(destructive) == 4, destructive  # two rotations: deactivate + delete each
    for intent in destructive:
        assert intent["key_id"] in known and known[intent["key_id"]]["origin"] in ("created", "adopted")
