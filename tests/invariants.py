"""Checks of DESIGN.md's invariants that every workflow test applies to the state it leaves behind."""

from __future__ import annotations

from chalicelib.deps import get_deps
from local.world import World


def assert_no_pipeline_holds_a_dead_key(world: World, user: str) -> None:
    """Invariant 1: every target holds an Active key, and a build with it passes."""
    statuses = world.key_statuses(user)
    for repo in world.users[user].repositories:
        held = world.held_key(repo)
        assert held is not None, f"{repo} holds no key"
        assert statuses.get(held) == "Active", f"{repo} holds {held}, which is {statuses.get(held, 'deleted')}"
        assert world.run_build(repo), f"a build of {repo} with {held} fails"


def assert_one_active_key_everywhere(world: World, user: str) -> str:
    """Invariant 2: exactly one Active key, no other key, and every target holds it."""
    statuses = world.key_statuses(user)
    assert list(statuses.values()) == ["Active"], statuses
    (key,) = statuses
    for repo in world.users[user].repositories:
        assert world.held_key(repo) == key
    return key


def assert_lock_released(user: str) -> None:
    assert get_deps().ledger.lock_holder(user) is None


def alerts_for(world: World, user: str) -> list[dict]:
    return [a for a in world.runtime.alerts() if a["message"].get("user") == user]


def assert_the_key_the_builds_use_stays_on(world: World, user: str, result: dict, key_id: str) -> None:
    """Invariant 1 when a verification build passed with another key than the one pushed (a copy held
    elsewhere in the CI overrides ours): the rotation failed, ``key_id`` stays Active, the alert says why and
    the user's lock is free."""
    assert result["status"] == "FAILED"
    assert world.key_statuses(user)[key_id] == "Active", "the key the builds really use stays on"
    failure = alerts_for(world, user)[-1]["message"]
    assert failure["error"] == "VerificationFailed", failure
    assert "passed with another access key" in failure["cause"], failure
    assert_lock_released(user)
