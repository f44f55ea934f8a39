"""Fleet pacing: a fleet that shares one CI token is started in slots that keep the token inside the
provider's documented limits (chalicelib/pacing.py), and the state machine waits for each slot."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import clock, pacing
from chalicelib.deps import get_deps
from chalicelib.pacing import POINTS, REQUESTS, WRITES, Demand, Limit, RateBudget
from chalicelib.scheduler import run_schedule, start_rotation
from chalicelib.targets.github import GITHUB_RATE_BUDGET, GITHUB_ROTATION_REQUESTS, GITHUB_ROTATION_WRITES
from chalicelib.targets.gitlab import GitLabTarget
from local import sim_clock
from local.world import World
from tests.conftest import new_user_name

GITHUB = ("github", "https://api.github.com", "secretsmanager:ci/github")
GITHUB_OTHER = ("github", "https://api.github.com", "secretsmanager:ci/github-other")
GITLAB = ("gitlab", "https://gitlab.com/api/v4", "secretsmanager:ci/gitlab")


def github_users(count: int, cred: pacing.Credential = GITHUB, prefix: str = "u") -> list[Demand]:
    return [Demand(f"{prefix}{i:03d}", {cred: (1, GITHUB_RATE_BUDGET)}) for i in range(count)]


# -- the pure function -------------------------------------------------------------------------------------


def test_one_token_keeps_every_documented_github_limit_with_margin() -> None:
    result = pacing.plan(github_users(200))

    starts = sorted(result.offsets.values())
    slot = GITHUB_RATE_BUDGET.slot_seconds(1)
    # 500 content-creating requests per hour is the binding limit: 3 writes at 80 % of 500/h is 27 s.
    assert slot == pytest.approx(3 * 3600 / (0.8 * 500))
    assert starts[0] == 0 and all(b - a == pytest.approx(slot) for a, b in itertools.pairwise(starts))
    for limit in GITHUB_RATE_BUDGET.limits:
        spent = pacing.worst_window(starts, limit, GITHUB_RATE_BUDGET.per_target[limit.metric])
        # The margin, give or take the one rotation a window can catch at its edge; never the limit itself.
        assert spent <= 0.8 * limit.count + GITHUB_RATE_BUDGET.per_target[limit.metric], limit
        assert spent <= limit.count, limit


def test_more_than_an_hour_of_work_is_left_for_the_next_pass() -> None:
    result = pacing.plan(github_users(200))

    assert max(result.offsets.values()) < 3600
    assert len(result.offsets) == 134 and len(result.deferred) == 66
    assert result.deferred == [f"u{i:03d}" for i in range(134, 200)], "config order is kept"
    # The next pass carries on at the same spacing: its first slot is where this pass's slots end.
    assert result.load[GITHUB] == (134, pytest.approx(134 * GITHUB_RATE_BUDGET.slot_seconds(1)))
    assert result.load[GITHUB][1] >= 3600


def test_two_tokens_are_paced_independently() -> None:
    demands = [d for pair in zip(github_users(10, GITHUB, "a"), github_users(10, GITHUB_OTHER, "b"),
                                 strict=True) for d in pair]

    offsets = pacing.plan(demands).offsets

    assert offsets["a000"] == offsets["b000"] == 0
    assert offsets["a009"] == offsets["b009"] == pytest.approx(9 * GITHUB_RATE_BUDGET.slot_seconds(1))


def test_a_user_on_two_providers_waits_for_both_tokens() -> None:
    budget = GitLabTarget.rate_budget
    assert budget is not None
    slow = RateBudget((Limit(REQUESTS, 100, 3600),), {REQUESTS: 10})  # a 450 s slot at 80 %
    demands = [
        Demand("gl-only", {GITLAB: (1, slow)}),
        Demand("gh-only", {GITHUB: (1, GITHUB_RATE_BUDGET)}),
        Demand("both", {GITHUB: (1, GITHUB_RATE_BUDGET), GITLAB: (1, slow)}),
        Demand("gh-after", {GITHUB: (1, GITHUB_RATE_BUDGET)}),
    ]

    offsets = pacing.plan(demands).offsets

    assert offsets["gl-only"] == offsets["gh-only"] == 0
    assert offsets["both"] == pytest.approx(450), "starts when the slower token has a slot"
    # GitHub's next slot is after "both"'s: it took one on each token.
    assert offsets["gh-after"] == pytest.approx(450 + GITHUB_RATE_BUDGET.slot_seconds(1))


def test_targets_of_one_user_on_one_token_take_a_longer_slot() -> None:
    one = pacing.plan([Demand("a", {GITHUB: (1, GITHUB_RATE_BUDGET)}), Demand("b", {GITHUB: (1, GITHUB_RATE_BUDGET)})])
    three = pacing.plan([Demand("a", {GITHUB: (3, GITHUB_RATE_BUDGET)}), Demand("b", {GITHUB: (1, GITHUB_RATE_BUDGET)})])

    assert three.offsets["b"] == pytest.approx(3 * one.offsets["b"])


def test_a_provider_without_documented_limits_is_not_paced_and_a_huge_slot_is_not_starved() -> None:
    unpaced = pacing.plan([Demand(f"t{i}", {("travis", "x", "y"): (1, None)}) for i in range(50)])
    huge = RateBudget((Limit(WRITES, 1, 3600),), {WRITES: 3})  # each rotation needs 3.75 h of the token

    alone = pacing.plan([Demand("big", {GITHUB: (1, huge)}), Demand("next", {GITHUB: (1, huge)})])

    assert set(unpaced.offsets.values()) == {0} and not unpaced.deferred
    assert alone.offsets == {"big": 0} and alone.deferred == ["next"]


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Limit(POINTS, 0, 60)
    with pytest.raises(ValueError):
        GITHUB_RATE_BUDGET.slot_seconds(1, margin=1.5)


# -- the scheduler, the state machine and the emulator's real limits ---------------------------------------

#: Tight enough that 12 rotations at once break it (36 content-creating requests), loose enough for one
#: rotation per 27 s slot (3 slots a minute, 9 writes) and a stray write of an earlier test's execution.
TIGHT_WRITES_PER_MINUTE = 12


@contextlib.contextmanager
def only_users(world: World, names: list[str]) -> Iterator[None]:
    """The schedule sees only these users (the session's world holds every other test's users too)."""
    saved = dict(world.users)
    world.users = {name: saved[name] for name in names}
    world.write_config()
    try:
        yield
    finally:
        world.users = {**saved, **world.users}
        world.write_config()


def fleet(world: World, size: int) -> list[str]:
    names = [new_user_name("pace") for _ in range(size)]
    for name in names:
        world.add_user(name, [f"acme/{name}"], timings={"rotate_after": "1d"})
    return names


def execution_input(world: World, arn: str) -> dict[str, object]:
    sfn = world.runtime.client("stepfunctions")
    loaded: dict[str, object] = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    return loaded


def test_paced_fleet_waits_out_its_slots_and_stays_inside_the_limits(clean_world: World,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if pacing is removed: 12 rotations at once make 36 content-creating requests in a minute."""
    names = fleet(clean_world, 12)
    github = clean_world.github
    github.limit_rates(secondary_per_minute=TIGHT_WRITES_PER_MINUTE, secondary_per_hour=500, points_per_minute=900)
    # The simulated clock only ever runs ahead of the wall clock, so a slot's wall time maps to a simulated
    # time no earlier than this offset says, however long the loaded machine takes to start the fleet.
    sim_before = sim_clock.now()
    sim_minus_wall = sim_before - datetime.now(UTC).timestamp()
    # This fleet's own requests (the poller may be asking about an earlier test's runs meanwhile).
    mine: list[tuple[float, str, str]] = []
    refuse = github._refuse

    def recorded(request: Any) -> Any:
        for name in names:
            if f"/{name}/" in f"{request.path}/":
                mine.append((sim_clock.now(), request.method, name))
        return refuse(request)

    monkeypatch.setattr(github, "_refuse", recorded)
    # The deployed poller runs every 5 minutes (app.py), the session's every 0.5 s of real time: on a loaded
    # machine it would ask about each parked verification dozens of times, requests no real rotation makes.
    # A few seconds keeps it a safety net here too (the webhooks resolve the builds) and the count real.
    monkeypatch.setattr(clean_world.runtime, "poll_interval", 5.0)

    with only_users(clean_world, names):
        with sim_clock.busy():
            started = run_schedule(get_deps(), clock.now() + timedelta(days=2))
        outcomes = [clean_world.runtime.wait(s.execution_arn, timeout=300)["status"] for s in started]

    assert [s.user for s in started] == names and outcomes == ["SUCCEEDED"] * 12
    assert not github.rate_limited, f"refused by the emulator's limits: {dict(github.rate_limited)}"
    slots = [execution_input(clean_world, s.execution_arn).get("start_at") for s in started]
    assert slots[0] is None and all(isinstance(s, str) for s in slots[1:]), slots
    assert slots[1:] == sorted(slots[1:]), "slots follow the configuration's order"
    # The waits were waited out on the simulated clock the emulator's windows run on: no paced rotation
    # wrote to GitHub before its slot, and the slots are a slot's length apart.
    times = [datetime.fromisoformat(str(slot)) for slot in slots[1:]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= GITHUB_RATE_BUDGET.slot_seconds(1) - 1, gaps  # whole seconds (ceil) on the wire
    for started_one, slot in zip(started[1:], slots[1:], strict=True):
        assert isinstance(slot, str)
        first_write = min(at for at, method, name in mine if method != "GET" and name == started_one.user)
        assert first_write >= datetime.fromisoformat(slot).timestamp() + sim_minus_wall - 0.5, started_one.user
    writes = [at for at, method, _ in mine if method != "GET"]
    assert sim_clock.now() - sim_before >= 11 * GITHUB_RATE_BUDGET.slot_seconds(1)
    # The budget the slots come from is not smaller than what a rotation really spends.
    assert len(writes) <= 12 * GITHUB_ROTATION_WRITES
    assert len(mine) <= 12 * GITHUB_ROTATION_REQUESTS, len(mine)


def test_unpaced_fleet_trips_the_secondary_limit(clean_world: World) -> None:
    """The same fleet started at once is refused by GitHub's secondary limit: what pacing avoids."""
    names = fleet(clean_world, 12)
    github = clean_world.github
    github.limit_rates(secondary_per_minute=TIGHT_WRITES_PER_MINUTE, secondary_per_hour=500, points_per_minute=900)

    with only_users(clean_world, names):
        started = run_schedule(get_deps(), clock.now() + timedelta(days=2), pace=False)
        descriptions = [clean_world.runtime.wait(s.execution_arn, timeout=300) for s in started]

    assert github.rate_limited["secondary"] > 0
    assert all("start_at" not in execution_input(clean_world, s.execution_arn) for s in started)
    # The state machine parks each refusal (RateLimited, Retry) instead of rolling back.
    assert [d["status"] for d in descriptions] == ["SUCCEEDED"] * 12


def test_a_user_waiting_for_last_hours_slot_is_not_started_again(clean_world: World) -> None:
    (name,) = fleet(clean_world, 1)
    now = clock.now() + timedelta(days=2)
    previous = f"sched-{now - timedelta(hours=1):%Y%m%dT%H}"

    with only_users(clean_world, [name]):
        with sim_clock.busy():  # keeps the earlier execution asleep in its slot
            waiting = start_rotation(get_deps(), name, "scheduled", previous,
                                     start_at=clock.now() + timedelta(minutes=40))
            sfn = clean_world.runtime.client("stepfunctions")
            for _ in range(100):
                if sim_clock.sleepers():
                    break
                sfn.describe_execution(executionArn=waiting.execution_arn)
            assert sim_clock.sleepers() == 1
            assert get_deps().ledger.lock_holder(name) is None, "no lock yet: Plan has not run"
            again = run_schedule(get_deps(), now)
        result = clean_world.runtime.wait(waiting.execution_arn, timeout=120)

    assert again == []
    assert result["status"] == "SUCCEEDED"


def test_start_at_is_waited_for_only_when_present_and_a_bad_one_is_refused(clean_world: World) -> None:
    (name,) = fleet(clean_world, 1)
    arn = get_deps().settings.state_machine_arn
    sfn = clean_world.runtime.client("stepfunctions")

    bad = sfn.start_execution(stateMachineArn=arn, name=f"{name}-bad-slot",
                              input=json.dumps({"user": name, "start_at": "tomorrow"}))
    result = clean_world.runtime.wait(bad["executionArn"], timeout=60)

    entered = [e["stateEnteredEventDetails"]["name"] for e in clean_world.runtime.history(bad["executionArn"])
               if e["type"].endswith("StateEntered")]
    assert entered[:3] == ["IsPaced", "Plan", "Alert"], "not a timestamp: no Wait, Plan refuses it"
    assert result["status"] == "FAILED"


def test_targets_are_grouped_by_the_token_they_use() -> None:
    from chalicelib.scheduler import credential
    from chalicelib.targets.github import GitHubTargetConfig

    def target(repo: str, token: str = "secretsmanager:ci/github", api: str = "https://api.github.com") -> Any:
        return GitHubTargetConfig.model_validate({"provider": "github", "id": repo.replace("/", "-"),
                                                  "repository": repo, "token": token, "api_url": api})

    assert credential(target("acme/a")) == credential(target("acme/b")) == GITHUB
    assert credential(target("acme/a", token="ssm:other")) != GITHUB
    assert credential(target("acme/a", api="https://ghe.example.com/api/v3")) != GITHUB
