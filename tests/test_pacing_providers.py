"""Fleet pacing for Travis CI, CircleCI and Azure DevOps: each declares only what its provider documents
(chalicelib/targets/<provider>.py, docs/ci-providers/<provider>.md), and each emulator refuses as the provider
does once its limit is switched on.

- Travis CI counts API-triggered builds per repository (10 an hour by default): declared, paced per repository,
  enforced by the emulator at all times.
- CircleCI publishes no figure: nothing is declared; its emulator answers the documented 429 when switched on
  and the state machine parks the refused rotation.
- Azure DevOps documents 200 TSTUs per identity in a sliding five minutes but no way to compute a request's
  TSTUs: nothing is declared by default; ``azure_devops_rate_budget(cost)`` declares what an operator measured,
  and its emulator enforces the window with the documented headers.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3

from chalicelib import clock, pacing
from chalicelib.deps import get_deps
from chalicelib.pacing import Demand
from chalicelib.scheduler import credential, run_schedule
from chalicelib.targets.base import Credentials
from chalicelib.targets.travis import (
    TRAVIS_API_BUILDS,
    TRAVIS_ROTATION_API_BUILDS,
    TravisTarget,
    TravisTargetConfig,
    travis_rate_budget,
)
from local import iam_consistency, sim_clock
from local.world import CI_USER_POLICY, ManagedUser, World
from tests.conftest import new_user_name

pytestmark = pytest.mark.timeout(600)


def execution_input(world: World, arn: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        world.runtime.client("stepfunctions").describe_execution(executionArn=arn)["input"])
    return loaded


def errors_in(world: World, arn: str) -> list[str]:
    """The error names of every failed task attempt of an execution (what its Retry/Catch saw)."""
    found = []
    for event in world.runtime.history(arn):
        for key, details in event.items():
            if key.endswith("EventDetails") and isinstance(details, dict) and details.get("error"):
                found.append(str(details["error"]))
    return found


# -- Travis CI: API-triggered builds per repository ------------------------------------------------------

TRAVIS_BUDGET = TravisTarget.rate_budget
#: 10 requests an hour at 80 %: one rotation per 450 s of a repository.
TRAVIS_SLOT = 3600 / (0.8 * 10)


def travis_target(repository: str, token: str = "secretsmanager:ci/travis", branch: str = "main") -> Any:
    return TravisTargetConfig.model_validate({"provider": "travis", "id": f"t-{branch}", "repository": repository,
                                              "token": token, "branch": branch, "variable_branch": branch})


def test_travis_declares_its_request_limit_per_repository() -> None:
    assert TRAVIS_BUDGET == travis_rate_budget()
    assert TRAVIS_BUDGET is not None and TRAVIS_BUDGET.slot_seconds(1) == pytest.approx(TRAVIS_SLOT)
    (limit,) = TRAVIS_BUDGET.limits
    assert (limit.metric, limit.count, limit.window_seconds) == (TRAVIS_API_BUILDS, 10, 3600)
    assert limit.source.startswith("https://github.com/travis-ci/travis-api/")
    # Travis counts per repository, whichever token triggers: the scheduler groups by repository.
    same_repo = {credential(travis_target("acme/mono", token=t, branch=b))
                 for t, b in (("secretsmanager:a", "staging"), ("ssm:b", "prod"))}
    assert len(same_repo) == 1
    assert credential(travis_target("acme/mono")) != credential(travis_target("acme/other"))
    assert credential(travis_target("acme/Mono")) == credential(travis_target("acme/mono")), "slugs are case-blind"


def test_travis_plan_keeps_a_shared_repository_inside_ten_an_hour() -> None:
    cred = credential(travis_target("acme/mono"))
    result = pacing.plan([Demand(f"u{i:02d}", {cred: (1, TRAVIS_BUDGET)}) for i in range(12)])

    starts = sorted(result.offsets.values())
    assert len(starts) == 8 and result.deferred == ["u08", "u09", "u10", "u11"]
    assert all(b - a == pytest.approx(TRAVIS_SLOT) for a, b in itertools.pairwise(starts))
    (limit,) = TRAVIS_BUDGET.limits if TRAVIS_BUDGET else ()
    assert pacing.worst_window(starts, limit, TRAVIS_ROTATION_API_BUILDS) <= 0.8 * limit.count


@contextlib.contextmanager
def travis_branch_fleet(world: World, size: int) -> Iterator[tuple[str, list[str]]]:
    """``size`` users deploying from one Travis repository, each from its own branch with its own
    branch-scoped variables (one repository, a key per environment); the schedule sees only them.

    Yields the repository and the users in configuration order; afterwards the world is as it was."""
    travis = world.emulator("travis")
    repository = f"acme/{new_user_name('mono')}"  # fresh: no request of an earlier test counts against it
    travis.add_project(repository)
    plain = world.target_config

    def target_config(project: str) -> dict[str, Any]:
        base, _, branch = project.partition("@")
        config = plain(base)
        if branch:
            config.update(id=f"{config['id']}-{branch}", branch=branch, variable_branch=branch)
        return config

    saved = dict(world.users)
    world.target_config = target_config  # type: ignore[method-assign]
    names = [new_user_name("tpace") for _ in range(size)]
    try:
        iam = world.runtime.client("iam")
        world.users = {}
        for name in names:
            iam.create_user(UserName=name, Path=world.runtime.names.managed_path)
            iam.put_user_policy(UserName=name, PolicyName="ci", PolicyDocument=json.dumps(CI_USER_POLICY))
            world.users[name] = ManagedUser(name, [f"travis:{repository}@{name}"], {"rotate_after": "1d"})
        world.write_config()
        keys = [iam.create_access_key(UserName=name)["AccessKey"] for name in names]
        iam_consistency.settle()
        for name, key in zip(names, keys, strict=True):
            world.target(f"travis:{repository}@{name}").push(Credentials(key["AccessKeyId"], key["SecretAccessKey"]))
        yield repository, names
    finally:
        del world.target_config
        world.users = saved
        world.write_config()


def record_travis_triggers(world: World, monkeypatch: pytest.MonkeyPatch, repository: str) -> list[tuple[float, str]]:
    """(simulated time, branch) of every verification request the fleet's repository receives."""
    travis = world.emulator("travis")
    seen: list[tuple[float, str]] = []
    refuse = travis._refuse
    encoded = repository.replace("/", "%2F").lower()

    def recorded(request: Any) -> Any:
        if request.method == "POST" and request.path.lower().endswith(f"/repo/{encoded}/requests"):
            fields = json.loads(request.raw or b"{}").get("request") or {}
            seen.append((sim_clock.now(), str(fields.get("branch"))))
        return refuse(request)

    monkeypatch.setattr(travis, "_refuse", recorded)
    return seen


def test_travis_unpaced_fleet_on_one_repository_trips_its_request_limit(clean_world: World,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve rotations at once ask for twelve builds of one repository: Travis refuses the 11th and 12th."""
    travis = clean_world.emulator("travis")
    with travis_branch_fleet(clean_world, 12) as (repository, names):
        triggers = record_travis_triggers(clean_world, monkeypatch, repository)
        started = run_schedule(get_deps(), clock.now() + timedelta(days=2), pace=False)
        arns = [s.execution_arn for s in started]
        for arn in arns:
            clean_world.runtime.wait(arn, timeout=300)

    assert [s.user for s in started] == names
    assert all("start_at" not in execution_input(clean_world, arn) for arn in arns)
    assert travis.requests_limited >= 2, "ten builds an hour per repository, twelve asked for at once"
    # Each refusal reached the state machine as RateLimited (parked and retried), never as a failed trigger.
    parked = [arn for arn in arns if "RateLimited" in errors_in(clean_world, arn)]
    assert parked, [errors_in(clean_world, arn) for arn in arns]
    assert not any("VerificationTriggerFailed" in errors_in(clean_world, arn) for arn in arns)
    assert len(triggers) >= 12


def test_travis_paced_fleet_waits_for_its_slots_and_stays_inside_the_limit(clean_world: World,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if Travis targets are not paced per repository: the unpaced fleet above is refused."""
    travis = clean_world.emulator("travis")
    sim_before = sim_clock.now()
    sim_minus_wall = sim_before - datetime.now(UTC).timestamp()
    with travis_branch_fleet(clean_world, 12) as (repository, names):
        triggers = record_travis_triggers(clean_world, monkeypatch, repository)
        with sim_clock.busy():
            started = run_schedule(get_deps(), clock.now() + timedelta(days=2))
        outcomes = [clean_world.runtime.wait(s.execution_arn, timeout=300)["status"] for s in started]

    # Eight 450 s slots fit in the hour; the other four stay due for the next pass.
    assert [s.user for s in started] == names[:8] and outcomes == ["SUCCEEDED"] * 8
    assert travis.requests_limited == 0
    slots = [execution_input(clean_world, s.execution_arn).get("start_at") for s in started]
    assert slots[0] is None and all(isinstance(s, str) for s in slots[1:]), slots
    times = [datetime.fromisoformat(str(s)).timestamp() for s in slots[1:]]
    assert min(b - a for a, b in itertools.pairwise(times)) >= TRAVIS_SLOT - 1
    by_branch = {branch: at for at, branch in triggers}
    for one, slot_at in zip(started[1:], times, strict=True):
        # No paced rotation asked Travis for its build before its slot (on the clock the limit runs on).
        assert by_branch[one.user] >= slot_at + sim_minus_wall - 0.5, one.user
    # What the budget assumes one rotation spends is what it really sent.
    assert sorted(branch for _, branch in triggers) == sorted(names[:8])
    assert len(triggers) <= 8 * TRAVIS_ROTATION_API_BUILDS
    (limit,) = TRAVIS_BUDGET.limits if TRAVIS_BUDGET else ()
    assert pacing.worst_window([at for at, _ in triggers], limit, 1) <= limit.count


# -- CircleCI: a documented 429, no published figure ---------------------------------------------------------


def test_circleci_declares_no_budget_and_its_429_is_parked(clean_world: World) -> None:
    from chalicelib.errors import RateLimited
    from chalicelib.targets.circleci import CircleCITarget

    assert CircleCITarget.rate_budget is None, "CircleCI publishes no figure to pace by"
    circleci = clean_world.emulator("circleci")
    project = f"acme/{new_user_name('cc')}"
    circleci.add_project(project)
    target = clean_world.target(f"circleci:{project}")
    circleci.limit_rates(2, 3600)

    target.push(Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private"))
    with pytest.raises(RateLimited) as refused:
        target.trigger_verification("nonce-1")

    # The client waits what Retry-After says, which is when the oldest request leaves the hour.
    assert 3500 < refused.value.retry_after_seconds <= 3600
    assert circleci.rate_limited == 1
    answer = urllib3.request("GET", f"{circleci.api_url}/project/{circleci.slug(project)}/pipeline",
                             headers={"Circle-Token": clean_world._tokens["circleci"]}, retries=False)
    assert answer.status == 429
    headers = answer.headers
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"], headers["X-RateLimit-Remaining"],
            headers["X-RateLimit-Limit-Hour"]) == ("2", "0", "0", "2")
    assert headers["Retry-After"] == headers["RateLimit-Reset"] == headers["X-RateLimit-Reset"]

    circleci.limit_rates(1, 60, retry_after=False)  # "in most cases" with Retry-After: not always
    refused_before = circleci.rate_limited
    with pytest.raises(RateLimited) as refused:  # the first variable is written, the second refused
        target.push(Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private"))
    # Without Retry-After the wait is X-RateLimit-Reset, seconds until the minute's window ends (not a Unix
    # time, which would read as "already past" and have the client hammer the limit).
    assert 50 < refused.value.retry_after_seconds <= 60
    assert circleci.rate_limited == refused_before + 1


def test_circleci_fleet_is_not_paced_and_its_refusals_are_parked(clean_world: World) -> None:
    """No budget, so no slots: six rotations at once meet the emulator's limit, and each refused call is
    parked and retried by the state machine instead of rolling the rotation back."""
    circleci = clean_world.emulator("circleci")
    names = [new_user_name("ccpace") for _ in range(6)]
    for name in names:
        # A verification whose status calls are refused is confirmed only once the window frees: the world's
        # one-minute verify_timeout would turn a throttled poll into a failed verification.
        clean_world.add_user(name, [f"circleci:acme/{name}"], timings={"rotate_after": "1d", "verify_timeout": "10m"})
    # A Retry-After of up to 30 s is longer than the client waits in-line (20 s): refused calls are parked.
    circleci.limit_rates(12, 30)
    saved = dict(clean_world.users)
    clean_world.users = {name: saved[name] for name in names}
    clean_world.write_config()
    try:
        started = run_schedule(get_deps(), clock.now() + timedelta(days=2))
        descriptions = [clean_world.runtime.wait(s.execution_arn, timeout=300) for s in started]
    finally:
        clean_world.users = saved
        clean_world.write_config()

    assert [s.user for s in started] == names
    assert all("start_at" not in execution_input(clean_world, s.execution_arn) for s in started)
    assert circleci.rate_limited > 0
    assert any("RateLimited" in errors_in(clean_world, s.execution_arn) for s in started)
    assert [d["status"] for d in descriptions] == ["SUCCEEDED"] * 6, [
        (d.get("error"), errors_in(clean_world, s.execution_arn)) for d, s in zip(descriptions, started, strict=True)]


# -- Azure DevOps: 200 TSTUs per identity in a sliding five minutes -----------------------------------------

#: What the tests charge per request: Microsoft publishes no per-request cost, so the figure is the test's.
TSTU_PER_REQUEST = 10
#: Requests one target's rotation may send (GET and two PUTs of the group, the run, status reads), with room.
AZURE_ROTATION_REQUESTS = 10


def test_azure_devops_declares_no_budget_unless_the_operator_measured_one() -> None:
    from chalicelib.targets.azure_devops import AZURE_DEVOPS_TSTU, AzureDevOpsTarget, azure_devops_rate_budget

    assert AzureDevOpsTarget.rate_budget is None, "no published TSTU cost per request"
    budget = azure_devops_rate_budget(1.0)
    (limit,) = budget.limits
    assert (limit.metric, limit.count, limit.window_seconds) == (AZURE_DEVOPS_TSTU, 200, 300)
    assert limit.source == "https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rate-limits"
    assert budget.slot_seconds(1) == pytest.approx(300 / (0.8 * 200))
    with pytest.raises(ValueError):
        azure_devops_rate_budget(0)


def test_azure_devops_emulator_blocks_over_200_tstus_as_documented(clean_world: World) -> None:
    from chalicelib.errors import RateLimited

    azure = clean_world.emulator("azure_devops")
    project = f"acme/{new_user_name('az')}"
    azure.add_project(project)
    target = clean_world.target(f"azure_devops:{project}")
    azure.limit_rates(50)  # four requests fill the window

    target.push(Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private"))  # GET, 2 PUTs
    run = target.trigger_verification("nonce-1")  # the fourth
    with pytest.raises(RateLimited) as refused:
        target.run_status(run.run_id)

    assert 290 < refused.value.retry_after_seconds <= 300, "until the first request leaves the five minutes"
    assert azure.rate_limited == 1
    config = clean_world.target_config(f"azure_devops:{project}")
    answer = urllib3.request(
        "GET", f"{azure.url}/{config['organization']}/{config['project']}/_apis/pipelines/"
               f"{config['pipeline_id']}/runs?api-version=7.1",
        headers={"Authorization": "Basic " + base64.b64encode(
            f":{clean_world._tokens['azure_devops']}".encode()).decode()}, retries=False)
    assert answer.status == 429 and "TF400733" in answer.json()["message"]
    headers = answer.headers
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("200", "0")
    assert headers["X-RateLimit-Resource"] and 0 < int(headers["Retry-After"]) <= 300
    assert int(headers["X-RateLimit-Reset"]) >= int(datetime.now(UTC).timestamp())


def test_azure_devops_delayed_answers_pause_the_client_before_it_is_blocked(clean_world: World) -> None:
    """Over 200 TSTUs Azure DevOps first delays requests and serves them with a Retry-After, "in any
    response"; a client that sends on regardless is blocked. Fails if the client ignores a served answer's
    Retry-After: the run_status reads below walk into the 429."""
    from chalicelib.errors import RateLimited

    azure = clean_world.emulator("azure_devops")
    project = f"acme/{new_user_name('az')}"
    azure.add_project(project)
    target = clean_world.target(f"azure_devops:{project}")
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the pause passes on the emulator's (simulated) clock
        slept.append(seconds)
        sim_clock.advance(seconds)

    target._http._sleep = sleep
    # Three requests fill the limit over a ten-second window; the seventh would be blocked.
    azure.limit_rates(10, limit=30, window_seconds=10, block_at=60)
    target.push(Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private"))  # GET, 2 PUTs
    run = target.trigger_verification("nonce-1")  # the fourth: over the limit, served with a Retry-After
    for _ in range(4):
        target.run_status(run.run_id)

    assert azure.delayed >= 1 and azure.rate_limited == 0
    assert slept and all(0 < s <= 10 for s in slept), slept

    # A pause longer than a Lambda may sleep is the state machine's: RateLimited, and nothing is sent.
    azure.limit_rates(10, limit=30, window_seconds=600, block_at=60)
    for _ in range(4):
        target.run_status(run.run_id)
    before = azure._requests
    with pytest.raises(RateLimited) as parked:
        target.run_status(run.run_id)
    assert azure._requests == before and 500 < parked.value.retry_after_seconds <= 600
    assert azure.rate_limited == 0

    answer = urllib3.request("GET", f"{azure.url}/_apis/none", retries=False, headers={
        "Authorization": "Basic " + base64.b64encode(f":{clean_world._tokens['azure_devops']}".encode()).decode()})
    headers = answer.headers
    assert headers["X-RateLimit-Remaining"] == "0" and float(headers["X-RateLimit-Delay"]) > 0
    assert 0 < int(headers["Retry-After"]) <= 600


@contextlib.contextmanager
def azure_fleet(world: World, size: int) -> Iterator[list[str]]:
    names = [new_user_name("azpace") for _ in range(size)]
    for name in names:
        # Refused status reads confirm a run only once the window slides: more than the world's one minute.
        world.add_user(name, [f"azure_devops:acme/{name}"], timings={"rotate_after": "1d", "verify_timeout": "10m"})
    saved = dict(world.users)
    world.users = {name: saved[name] for name in names}
    world.write_config()
    try:
        yield names
    finally:
        world.users = saved
        world.write_config()


def test_azure_devops_unpaced_fleet_is_blocked_and_parked(clean_world: World) -> None:
    """Six rotations at once on one identity spend more than 200 TSTUs at this cost: some are blocked."""
    azure = clean_world.emulator("azure_devops")
    with azure_fleet(clean_world, 6) as names:
        azure.limit_rates(TSTU_PER_REQUEST)
        started = run_schedule(get_deps(), clock.now() + timedelta(days=2))
        parked: list[str] = []
        deadline = time.monotonic() + 120
        while not parked and time.monotonic() < deadline:
            time.sleep(0.5)
            parked = [s.user for s in started if "RateLimited" in errors_in(clean_world, s.execution_arn)]
        blocked = azure.rate_limited
        # The five minutes slide by: lifted here, since the poller's refused reads, unlike a parked task's
        # Retry, do not move the simulated clock, and the window would take five real minutes.
        azure.limit_rates(None)
        descriptions = [clean_world.runtime.wait(s.execution_arn, timeout=300) for s in started]

    assert [s.user for s in started] == names
    assert all("start_at" not in execution_input(clean_world, s.execution_arn) for s in started), "no budget"
    assert blocked > 0
    # A blocked push or trigger is RateLimited: parked and retried by the state machine, not rolled back.
    assert parked, [errors_in(clean_world, s.execution_arn) for s in started]
    assert [d["status"] for d in descriptions] == ["SUCCEEDED"] * 6, [
        (d.get("error"), errors_in(clean_world, s.execution_arn)) for d, s in zip(descriptions, started, strict=True)]


def test_azure_devops_fleet_paced_by_a_measured_cost_stays_inside_the_window(
        clean_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails without pacing: the same fleet unpaced is blocked (above)."""
    from chalicelib.targets.azure_devops import AzureDevOpsTarget, azure_devops_rate_budget

    budget = azure_devops_rate_budget(TSTU_PER_REQUEST * AZURE_ROTATION_REQUESTS)
    monkeypatch.setattr(AzureDevOpsTarget, "rate_budget", budget)
    azure = clean_world.emulator("azure_devops")
    sent: list[tuple[float, str]] = []
    refuse = azure._refuse

    def recorded(request: Any) -> Any:
        sent.append((sim_clock.now(), request.path))
        return refuse(request)

    sim_minus_wall = sim_clock.now() - datetime.now(UTC).timestamp()
    with azure_fleet(clean_world, 6) as names:
        groups = {name: clean_world.target_config(f"azure_devops:acme/{name}")["variable_group_id"] for name in names}
        monkeypatch.setattr(azure, "_refuse", recorded)  # the fleet's rotations, not its hand-made keys
        azure.limit_rates(TSTU_PER_REQUEST)
        with sim_clock.busy():
            started = run_schedule(get_deps(), clock.now() + timedelta(days=2))
        outcomes = [clean_world.runtime.wait(s.execution_arn, timeout=400)["status"] for s in started]

    assert [s.user for s in started] == names and outcomes == ["SUCCEEDED"] * 6
    assert azure.rate_limited == 0
    slots = [execution_input(clean_world, s.execution_arn).get("start_at") for s in started]
    assert slots[0] is None and all(isinstance(s, str) for s in slots[1:]), slots
    times = [datetime.fromisoformat(str(s)).timestamp() for s in slots[1:]]
    assert min(b - a for a, b in itertools.pairwise(times)) >= budget.slot_seconds(1) - 1

    def of(name: str) -> list[float]:
        # Group reads and runs are under the project; group updates under the organization, by group id.
        return [at for at, path in sent
                if f"/{name}/" in f"{path}/" or path.endswith(f"/variablegroups/{groups[name]}")]

    for one, slot_at in zip(started[1:], times, strict=True):
        assert min(of(one.user)) >= slot_at + sim_minus_wall - 0.5, one.user
    # The cost the budget was given covers what each rotation really sent.
    assert all(0 < len(of(name)) <= AZURE_ROTATION_REQUESTS for name in names), {n: len(of(n)) for n in names}
