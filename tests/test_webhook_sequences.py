"""Every webhook a CI sends for one build, not only the last, for every registered emulator.

The services send several deliveries per build (docs/ci-providers/<provider>.md, "Webhook"): GitHub a
``workflow_run`` per action (``requested``, ``in_progress``, ``completed``), GitLab a Pipeline Hook per status
change, Bitbucket the ``INPROGRESS`` commit status before the final one; CircleCI (``workflow-completed``),
Travis (``on_start: never``) and Azure DevOps (``build.complete``) one at the end. The rotator acts only on a
delivery that reports a final state, and then only on what the status API confirms (chalicelib/webhooks.py):
an intermediate delivery, before or after the final one, is acknowledged and changes nothing.

The providers are the registry's names, as in tests/test_provider_contract.py. ``SEQUENCES`` says what each
service sends for a passing and a failing build; an emulator registered without an entry fails
``test_every_registered_emulator_declares_its_delivery_sequence`` until its sequence is written down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest

from chalicelib.deps import get_deps
from chalicelib.targets.base import RunState
from chalicelib.targets.registry import provider as provider_class
from local.emulators.base import emulators
from local.world import World, split
from tests.conftest import new_user_name
from tests.invariants import (
    alerts_for,
    assert_lock_released,
    assert_no_pipeline_holds_a_dead_key,
    assert_one_active_key_everywhere,
)

NAMES = sorted(emulators())


def _json(body: bytes) -> dict[str, Any]:
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def _travis(body: bytes) -> dict[str, Any]:
    (payload,) = parse_qs(body.decode())["payload"]
    return _json(payload.encode())


#: What names a delivery in its service's own terms: the action, status, state or event type it reports.
LABEL: dict[str, Callable[[bytes], str]] = {
    "github": lambda body: _json(body)["action"],
    "gitlab": lambda body: _json(body)["object_attributes"]["status"],
    "bitbucket": lambda body: _json(body)["commit_status"]["state"],
    "circleci": lambda body: _json(body)["type"],
    "travis": lambda body: _travis(body)["state"],
    "azure_devops": lambda body: _json(body)["eventType"],
}

#: provider -> (deliveries of a passing build, of a failing build), in the order the service sends them.
SEQUENCES: dict[str, tuple[list[str], list[str]]] = {
    # https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_run
    "github": (["requested", "in_progress", "completed"], ["requested", "in_progress", "completed"]),
    # https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events
    "gitlab": (["pending", "running", "success"], ["pending", "running", "failed"]),
    # https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/ (repo:commit_status_created/_updated)
    "bitbucket": (["INPROGRESS", "SUCCESSFUL"], ["INPROGRESS", "FAILED"]),
    # https://circleci.com/docs/webhooks/ (the hook subscribes to workflow-completed)
    "circleci": (["workflow-completed"], ["workflow-completed"]),
    # https://docs.travis-ci.com/user/notifications/#configuring-webhook-notifications (on_start: never)
    "travis": (["passed"], ["failed"]),
    # https://learn.microsoft.com/en-us/azure/devops/service-hooks/events ("Build completed")
    "azure_devops": (["build.complete"], ["build.complete"]),
}

#: Providers whose service sends something before the build's end: the ones the intermediate tests apply to.
WITH_INTERMEDIATE = [name for name in NAMES if len(SEQUENCES.get(name, ([], []))[0]) > 1]


def _project(provider: str, user: str) -> str:
    return f"acme/{user}" if provider == "github" else f"{provider}:acme/{user}"


def _mine(ci: Any, user: str, before: int = 0) -> list[dict[str, Any]]:
    """This user's deliveries (every payload names the project, which is the user's name), in the order
    they were recorded."""
    return [d for d in ci.deliveries()[before:] if user.encode() in d["body"]]


def _answers(deliveries: list[dict[str, Any]]) -> list[int | None]:
    return [status for d in deliveries for status in d["statuses"]]


def _wait_for_callback(user: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for callback in get_deps().ledger.callbacks():
            if callback["user"] == user:
                return callback
        time.sleep(0.05)
    raise TimeoutError("no verification parked")


def _rotation(user: str) -> dict[str, Any]:
    ledger = get_deps().ledger
    rotation = ledger.rotation(user, ledger.rotations(user)[-1]["rotation_id"])
    assert rotation is not None
    return rotation


def _check_sequence(provider: str, ci: Any, deliveries: list[dict[str, Any]], expected: list[str],
                    final: RunState) -> None:
    """The deliveries are the documented sequence, each signed as the service signs it and with its own
    delivery id; the product's parser reads every one but the last as "not finished" and the last as ``final``."""
    assert [LABEL[provider](d["body"]) for d in deliveries] == expected, provider
    cls = provider_class(provider)
    events = [cls.parse_webhook(d["headers"], d["body"], ci.webhook_key()) for d in deliveries]
    assert len({e.delivery_id for e in events}) == len(events), "one delivery id per delivery"
    assert len({e.run_id for e in events}) == 1, "every delivery names the same run"
    *intermediate, last = events
    assert all(e.status is None for e in intermediate), intermediate
    assert last.status is not None and last.status.state is final, last


def test_every_registered_emulator_declares_its_delivery_sequence() -> None:
    assert sorted(SEQUENCES) == NAMES == sorted(LABEL)


@pytest.mark.parametrize("provider", NAMES)
def test_a_rotation_with_the_full_sequence_succeeds(clean_world: World, provider: str) -> None:
    user = new_user_name(f"sq{provider[:3]}")
    clean_world.add_user(user, [_project(provider, user)])
    ci = clean_world.emulator(provider)
    before = len(ci.deliveries())

    result = clean_world.rotate(user)
    assert ci.wait_for_webhooks(timeout=30)

    assert result["status"] == "SUCCEEDED", provider
    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)
    assert [a["subject"] for a in alerts_for(clean_world, user) if a["severity"] != "INFO"] == []
    (target,) = _rotation(user)["targets"].values()
    assert target["status"] == "verified", target
    mine = _mine(ci, user, before)
    _check_sequence(provider, ci, mine, SEQUENCES[provider][0], RunState.SUCCEEDED)
    answers = _answers(mine)
    assert all(s is not None and 200 <= s < 300 for s in answers), answers


@pytest.mark.parametrize("provider", NAMES)
def test_a_failed_builds_sequence_rolls_back(clean_world: World, provider: str) -> None:
    user = new_user_name(f"sf{provider[:3]}")
    project = _project(provider, user)
    clean_world.add_user(user, [project])
    ci = clean_world.emulator(provider)
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    verified = assert_one_active_key_everywhere(clean_world, user)
    before = len(ci.deliveries())
    ci.fail_next_builds(split(project)[1], 1)

    result = clean_world.rotate(user)
    assert ci.wait_for_webhooks(timeout=30)

    assert result["status"] == "FAILED", provider
    assert clean_world.key_statuses(user) == {verified: "Active"}, "new key deleted, old one untouched"
    assert clean_world.held_key(project) == verified
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)
    failure = alerts_for(clean_world, user)[-1]
    assert failure["message"]["error"] == "VerificationFailed"
    assert failure["message"]["rollback"]["new_key_deleted"] is True
    (target,) = _rotation(user)["targets"].values()
    # The failed verification was recorded, then the rollback put the old key back.
    assert target["verified"] is False and target["status"] == "restored", target
    mine = _mine(ci, user, before)
    _check_sequence(provider, ci, mine, SEQUENCES[provider][1], RunState.FAILED)
    assert all(s is not None and 200 <= s < 300 for s in _answers(mine))


@pytest.mark.parametrize("provider", WITH_INTERMEDIATE)
def test_intermediate_deliveries_alone_resolve_nothing(clean_world: World, provider: str) -> None:
    """A build that starts and never ends: its deliveries arrive, are acknowledged, and leave the
    verification parked until it times out and rolls back."""
    user = new_user_name(f"si{provider[:3]}")
    project = _project(provider, user)
    clean_world.add_user(user, [project], timings={"verify_timeout": "10s"})
    ci = clean_world.emulator(provider)
    before = len(ci.deliveries())
    ci.hang_next_builds(split(project)[1], 1)
    # Late enough that they arrive after the verification is parked and its state is noted below.
    ci.webhook_delay = 3.0

    started = clean_world.start_rotation(user)
    callback = _wait_for_callback(user)
    ledger = get_deps().ledger
    # The callback is parked before VerifyBuild notes the run on the rotation: snapshot after both.
    deadline = time.monotonic() + 30
    while not any(t.get("run_id") == callback["run_id"]
                  for t in ledger.rotation(user, callback["rotation_id"])["targets"].values()):
        assert time.monotonic() < deadline, "the verification's run was never noted on the rotation"
        time.sleep(0.05)
    parked = ledger.rotation(user, callback["rotation_id"])
    assert ci.wait_for_webhooks(timeout=30)
    mine = _mine(ci, user, before)

    intermediate = SEQUENCES[provider][0][:-1]
    assert [LABEL[provider](d["body"]) for d in mine] == intermediate
    answers = _answers(mine)
    assert all(s is not None and 200 <= s < 300 for s in answers), answers
    # Nothing resolved: the token is still parked, the ledger as it was, the execution still waiting.
    assert ledger.callback(provider, callback["run_id"]) == callback
    assert ledger.rotation(user, callback["rotation_id"]) == parked
    sfn = clean_world.runtime.client("stepfunctions")
    assert sfn.describe_execution(executionArn=started.execution_arn)["status"] == "RUNNING"

    result = clean_world.runtime.wait(started.execution_arn, 60)
    assert result["status"] == "FAILED"
    assert alerts_for(clean_world, user)[-1]["message"]["error"] == "States.Timeout"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)


@pytest.mark.parametrize("provider", WITH_INTERMEDIATE)
def test_an_intermediate_delivery_after_the_final_one_changes_nothing(clean_world: World, provider: str) -> None:
    """Out of order, the build's end arrives before its start (and GitHub's ``requested`` / GitLab's
    ``pending`` after the rotation ended): each late one is answered 2xx and neither un-resolves nor
    re-resolves the verification."""
    user = new_user_name(f"so{provider[:3]}")
    clean_world.add_user(user, [_project(provider, user)])
    ci = clean_world.emulator(provider)
    before = len(ci.deliveries())
    ci.reorder_webhooks, ci.reorder_window = True, 15.0

    result = clean_world.rotate(user)
    assert result["status"] == "SUCCEEDED", provider
    rotation, keys = _rotation(user), clean_world.key_statuses(user)
    alerts = alerts_for(clean_world, user)
    assert ci.wait_for_webhooks(timeout=60)
    mine = _mine(ci, user, before)

    # Recorded in the documented order, sent with the final one before an intermediate one.
    _check_sequence(provider, ci, mine, SEQUENCES[provider][0], RunState.SUCCEEDED)
    *intermediate, final = mine
    assert any(d["sent"][0] > final["sent"][0] for d in intermediate), [d["sent"] for d in mine]
    answers = _answers(mine)
    assert all(s is not None and 200 <= s < 300 for s in answers), answers
    # Whatever arrived after the rotation ended changed nothing.
    assert _rotation(user) == rotation and clean_world.key_statuses(user) == keys
    assert alerts_for(clean_world, user) == alerts
    (target,) = rotation["targets"].values()
    assert target["status"] == "verified" and get_deps().ledger.callback(provider, target["run_id"]) is None
    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


# -- other events a service can send about the same run: read as "not final", whatever they report ---------


def _other_events() -> list[Any]:
    """(provider, headers, body, secret): a delivery of an event the rotator's hook may also receive, each
    reporting a finished *job* or a run's state through another subscription, signed as its service signs it."""
    from chalicelib.targets import azure_devops, circleci, github

    job = json.dumps({"action": "completed", "workflow_job": {
        "id": 31, "run_id": 22000000042, "status": "completed", "conclusion": "success"}}).encode()
    gitlab_job = json.dumps({"object_kind": "build", "build_id": 610, "build_status": "success",
                             "pipeline_id": 61000001}).encode()
    circle_job = json.dumps({"type": "job-completed", "id": "5c1a2f8e-0000-4000-8000-000000000001",
                             "job": {"id": "j-1", "name": "verify", "number": 7, "status": "success"},
                             "workflow": {"id": "w-1", "name": "verify", "status": "success"},
                             "pipeline": {"id": "p-1", "number": 3}}).encode()
    basic = azure_devops.basic_credentials("hook", "pw")
    events = []
    for event_type, resource in (
        ("ms.vss-pipelines.run-state-changed-event",
         {"run": {"id": 2001, "state": "completed", "result": "succeeded"}, "runId": 2001}),
        ("ms.vss-pipelines.stage-state-changed-event",
         {"stage": {"name": "verify", "state": "completed", "result": "succeeded"}, "runId": 2001}),
    ):
        body = json.dumps({"id": f"evt-{event_type}", "eventType": event_type, "publisherId": "pipelines",
                           "resource": resource}).encode()
        events.append(pytest.param("azure_devops", {"Authorization": basic}, body, "hook:pw", id=event_type))
    return [
        pytest.param("github", {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-job",
                                "X-Hub-Signature-256": github.signature("s", job)}, job, "s", id="workflow_job"),
        pytest.param("gitlab", {"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": "tok", "Idempotency-Key": "i-job"},
                     gitlab_job, "tok", id="Job Hook"),
        pytest.param("circleci", {"Circleci-Event-Type": "job-completed",
                                  "Circleci-Signature": circleci.signature("s", circle_job)}, circle_job, "s",
                     id="job-completed"),
        *events,
    ]


@pytest.mark.parametrize(("provider", "headers", "body", "secret"), _other_events())
def test_a_jobs_end_or_another_subscriptions_event_is_not_a_runs_verdict(
    provider: str, headers: Mapping[str, str], body: bytes, secret: str
) -> None:
    """GitHub ``workflow_job`` (https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_job),
    GitLab Job Hooks (https://docs.gitlab.com/user/project/integrations/webhook_events/#job-events), CircleCI
    ``job-completed`` (https://circleci.com/docs/webhooks-reference/) and Azure Pipelines' run and stage state
    events (https://learn.microsoft.com/en-us/azure/devops/service-hooks/events): the route acknowledges
    them (202) without looking up any run."""
    event = provider_class(provider).parse_webhook(headers, body, secret)
    assert event.delivery_id and event.run_id is None and event.status is None, event
