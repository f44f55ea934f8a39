"""BitbucketTarget: pure checks (config, state mapping, HMAC webhooks), then the real emulator over HTTP.

Generic behaviour (registration, a revoked token, a refused second write, Retry-After, persistent 5xx) runs
once per provider in tests/test_provider_contract.py; this file keeps what is specific to Bitbucket.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.targets.base import Credentials, RunState, RunStatus, WebhookRejected, key_id_digest
from chalicelib.targets.bitbucket import (
    BitbucketTarget,
    BitbucketTargetConfig,
    map_commit_status,
    map_pipeline,
    signature,
)
from local import iam_consistency
from local.emulators.bitbucket import DEFAULT_PIPELINE, BitbucketEmulator
from local.world import World, split
from tests.conftest import new_user_name

pytestmark = pytest.mark.timeout(120)
BASE = {"provider": "bitbucket", "id": "bb-app", "token": "secretsmanager:ci/bitbucket-token",
        "workspace": "acme", "repository": "app"}
ENV_UUID = "{6F9C1A2B-1111-2222-3333-444455556666}"
FAKE = Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private")
SECRET = "bitbucket-hook-secret"


# -- pure: config ---------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = BitbucketTargetConfig.model_validate(BASE)
    assert (config.api_url, config.scope, config.branch, config.pipeline, config.environment_uuid) == (
        "https://api.bitbucket.org/2.0", "repository", "main", None, None)


def test_deployment_scope_needs_an_environment_uuid_and_normalises_it() -> None:
    with pytest.raises(ValidationError, match="environment_uuid is required"):
        BitbucketTargetConfig.model_validate({**BASE, "scope": "deployment"})
    with pytest.raises(ValidationError, match="only allowed with scope 'deployment'"):
        BitbucketTargetConfig.model_validate({**BASE, "environment_uuid": ENV_UUID})
    bare = ENV_UUID.strip("{}")
    config = BitbucketTargetConfig.model_validate({**BASE, "scope": "deployment", "environment_uuid": bare})
    assert config.environment_uuid == ENV_UUID.lower()


@pytest.mark.parametrize(("field", "value"), [
    ("workspace", "acme/team"),
    ("repository", ""),
    ("scope", "organization"),
    ("environment_uuid", "production"),
    ("api_url", "http://api.bitbucket.org/2.0"),  # the token would cross the network in clear
    ("pipeline", ""),
    ("unknown_field", "x"),
])
def test_config_is_validated(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        BitbucketTargetConfig.model_validate({**BASE, field: value})


# -- pure: status mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "expected", "detail"), [
    ({"name": "COMPLETED", "result": {"name": "SUCCESSFUL"}}, RunState.SUCCEEDED, "COMPLETED/SUCCESSFUL"),
    ({"name": "COMPLETED", "result": {"name": "FAILED"}}, RunState.FAILED, "COMPLETED/FAILED"),
    ({"name": "COMPLETED", "result": {"name": "ERROR"}}, RunState.FAILED, "COMPLETED/ERROR"),
    ({"name": "COMPLETED", "result": {"name": "STOPPED"}}, RunState.FAILED, "COMPLETED/STOPPED"),
    ({"name": "COMPLETED", "result": {"name": "EXPIRED"}}, RunState.FAILED, "COMPLETED/EXPIRED"),
    ({"name": "COMPLETED"}, RunState.FAILED, "COMPLETED/UNKNOWN"),
    ({"name": "PENDING"}, RunState.PENDING, "PENDING"),
    ({"name": "IN_PROGRESS", "stage": {"name": "RUNNING"}}, RunState.PENDING, "IN_PROGRESS/RUNNING"),
    ({"name": "IN_PROGRESS", "stage": {"name": "PAUSED"}}, RunState.PENDING, "IN_PROGRESS/PAUSED"),  # manual step
    ({"name": "PAUSED"}, RunState.PENDING, "PAUSED"),
    (None, RunState.PENDING, "UNKNOWN"),
])
def test_pipeline_state_mapping(state: dict[str, Any] | None, expected: RunState, detail: str) -> None:
    assert map_pipeline(state) == RunStatus(expected, detail)


@pytest.mark.parametrize(("state", "expected"), [
    ("SUCCESSFUL", RunState.SUCCEEDED),
    ("FAILED", RunState.FAILED),
    ("STOPPED", RunState.FAILED),
    ("INPROGRESS", None),
    ("SOMETHING_NEW", None),
])
def test_commit_status_mapping(state: str, expected: RunState | None) -> None:
    status = map_commit_status(state)
    assert (status.state if status else None) is expected


# -- pure: webhooks ---------------------------------------------------------------------------------------

STATUS_EVENT = {
    "commit_status": {"type": "build", "key": "-1879968562", "state": "SUCCESSFUL", "name": "Pipeline #3 for main",
                      "refname": "main", "url": "https://bitbucket.org/Acme/App/addon/pipelines/home#!/results/3",
                      "commit": {"hash": "abc"}},
    "repository": {"full_name": "Acme/App"},
}


def delivery(event: dict[str, Any] | bytes = STATUS_EVENT, secret: str = SECRET, **extra: str,
             ) -> tuple[dict[str, str], bytes]:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"X-Event-Key": "repo:commit_status_updated", "X-Request-UUID": "d-1", "X-Hook-UUID": "{hook}",
               "X-Hub-Signature": signature(secret, body), **extra}
    return headers, body


def test_webhook_signed_with_the_secret_is_parsed() -> None:
    event = BitbucketTarget.parse_webhook(*delivery(), SECRET)
    # Case-folded: the callback was stored under the config's slugs.
    assert event.run_id == "acme/app#3"
    assert event.delivery_id == "d-1"
    assert event.status is not None and event.status.state is RunState.SUCCEEDED


def test_webhook_with_a_bad_or_missing_signature_is_refused() -> None:
    headers, body = delivery()
    for bad_headers, bad_body, secret in (
        (headers, body + b" ", SECRET),                      # tampered body
        (delivery(secret="other")[0], body, SECRET),         # another secret
        ({**headers, "X-Hub-Signature": ""}, body, SECRET),  # unsigned (hook without a secret)
        (headers, body, ""),                                 # no secret configured here
        ({**headers, "X-Hub-Signature": signature(SECRET, body).replace("sha256=", "sha1=")}, body, SECRET),
    ):
        with pytest.raises(WebhookRejected) as refused:
            BitbucketTarget.parse_webhook(bad_headers, bad_body, secret)
        assert refused.value.status == 401


def test_webhook_needs_a_request_uuid_and_a_commit_status() -> None:
    headers, body = delivery()
    with pytest.raises(WebhookRejected) as no_id:
        BitbucketTarget.parse_webhook({k: v for k, v in headers.items() if k != "X-Request-UUID"}, body, SECRET)
    assert no_id.value.status == 400
    for bad in (b"not json", json.dumps({"repository": {}}).encode()):
        with pytest.raises(WebhookRejected) as refused:
            BitbucketTarget.parse_webhook(*delivery(bad), SECRET)
        assert refused.value.status == 400


def test_other_events_and_other_tools_statuses_concern_no_run() -> None:
    push = BitbucketTarget.parse_webhook(*delivery(**{"X-Event-Key": "repo:push"}), SECRET)
    assert (push.delivery_id, push.run_id, push.status) == ("d-1", None, None)
    jenkins = {**STATUS_EVENT, "commit_status": {**STATUS_EVENT["commit_status"], "name": "Jenkins build",
                                                 "url": "https://ci.example.com/job/app/3/"}}
    assert BitbucketTarget.parse_webhook(*delivery(jenkins), SECRET).run_id is None


def test_in_progress_status_has_no_status_and_headers_are_case_insensitive() -> None:
    started = {**STATUS_EVENT, "commit_status": {**STATUS_EVENT["commit_status"], "state": "INPROGRESS",
                                                 "url": "https://bitbucket.org/acme/app/pipelines/results/3"}}
    headers, body = delivery(started)
    event = BitbucketTarget.parse_webhook({k.lower(): v for k, v in headers.items()}, body, SECRET)
    assert (event.run_id, event.status) == ("acme/app#3", None)


def test_next_links_are_followed_only_within_the_api() -> None:
    target = BitbucketTarget(BitbucketTargetConfig.model_validate(BASE), "token")
    assert target._next_page("https://api.bitbucket.org/2.0/repositories/acme/app/x?page=2&pagelen=100") == (
        "/repositories/acme/app/x", {"page": "2", "pagelen": "100"})
    assert target._next_page(None) == (None, {})
    for elsewhere in ("https://evil.example.com/2.0/x?page=2", "http://api.bitbucket.org/2.0/x",
                      "https://api.bitbucket.org/2.0x/x", "https://api.bitbucket.org/other"):
        with pytest.raises(TargetPushFailed, match="links outside"):
            target._next_page(elsewhere)


# -- the emulator over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def bitbucket(clean_world: World) -> BitbucketEmulator:
    emulator = clean_world.emulator("bitbucket")
    assert isinstance(emulator, BitbucketEmulator)
    return emulator


def add_project(world: World, *, initial_key: bool = True, workspace: str = "acme") -> tuple[str, str]:
    """A CI user with one Bitbucket repository: (project, workspace/slug)."""
    name = new_user_name("bbk")
    project = f"bitbucket:{workspace or name + '-ws'}/{name}"
    world.add_user(name, [project], initial_key=initial_key)
    return project, split(project)[1]


def new_key(world: World, project: str) -> Credentials:
    user = next(u for u, m in world.users.items() if project in m.repositories)
    key = world.runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()  # propagated before a build uses it (tests/test_iam_consistency.py: the window)
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def make_target(world: World, project: str, sleep: Callable[[float], None] = lambda _: None,
                **fields: Any) -> BitbucketTarget:
    config = BitbucketTargetConfig.model_validate({**world.target_config(project), **fields})
    return BitbucketTarget(config, world._tokens["bitbucket"], sleep=sleep, timeout=5)


def wait_terminal(target: BitbucketTarget, run_id: str, timeout: float = 30) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = target.run_status(run_id)
        if status.terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if ": variable " in r.getMessage()]


def test_push_creates_then_updates_both_variables_as_secured(
    clean_world: World, bitbucket: BitbucketEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    project, repo = add_project(clean_world, initial_key=False)
    target = make_target(clean_world, project)

    target.push(FAKE)
    uuids = {v["key"]: v["uuid"] for v in bitbucket.variables(repo)}
    target.push(Credentials("AKIAFAKEFAKEFAKE0002", "second-secret"))

    assert outcomes(caplog) == ["created", "created", "updated", "updated"]
    assert {v["key"]: v["uuid"] for v in bitbucket.variables(repo)} == uuids  # updated in place
    assert all(v["secured"] is True for v in bitbucket.variables(repo))
    assert bitbucket.held_value(repo, "AWS_ACCESS_KEY_ID") == "AKIAFAKEFAKEFAKE0002"
    assert bitbucket.held_value(repo, "AWS_SECRET_ACCESS_KEY") == "second-secret"
    listed = target._http.request("GET", target._variables_path()).json["values"]
    assert listed and all("value" not in v for v in listed)  # secured values never come back


def test_an_unsecured_key_id_left_by_an_earlier_tool_is_secured(
    clean_world: World, bitbucket: BitbucketEmulator
) -> None:
    project, repo = add_project(clean_world, initial_key=False)
    bitbucket.set_variable(repo, "AWS_ACCESS_KEY_ID", "AKIAOLDOLDOLDOLD0000", secured=False)
    make_target(clean_world, project).push(FAKE)
    (key_id,) = [v for v in bitbucket.variables(repo) if v["key"] == "AWS_ACCESS_KEY_ID"]
    assert key_id["secured"] is True


def test_variables_on_a_later_page_are_found(
    clean_world: World, bitbucket: BitbucketEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    project, repo = add_project(clean_world)
    for i in range(5):
        bitbucket.set_variable(repo, f"OTHER_{i}", "x")
    bitbucket.max_pagelen = 2  # 7 variables: 4 pages, ours on the first
    caplog.set_level(logging.INFO, logger="chalicelib")
    caplog.clear()

    make_target(clean_world, project).push(FAKE)

    assert outcomes(caplog) == ["updated", "updated"]
    assert len(bitbucket.variables(repo)) == 7
    assert bitbucket.held_value(repo, "AWS_SECRET_ACCESS_KEY") == FAKE.secret_access_key


def test_variables_only_on_the_last_page_are_updated_not_recreated(
    clean_world: World, bitbucket: BitbucketEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    project, repo = add_project(clean_world, initial_key=False)
    for i in range(5):
        bitbucket.set_variable(repo, f"OTHER_{i}", "x")
    make_target(clean_world, project).push(FAKE)  # ours are the 6th and 7th
    bitbucket.max_pagelen = 3
    caplog.set_level(logging.INFO, logger="chalicelib")
    caplog.clear()

    make_target(clean_world, project).push(Credentials("AKIAFAKEFAKEFAKE0002", "second-secret"))

    assert outcomes(caplog) == ["updated", "updated"]
    assert bitbucket.held_value(repo, "AWS_SECRET_ACCESS_KEY") == "second-secret"


def test_409_on_create_relists_and_updates(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, repo = add_project(clean_world)  # both variables exist
    target = make_target(clean_world, project)
    real_list = target._list_variables
    calls: list[str] = []

    def stale_then_real(what: str) -> dict[str, str]:
        calls.append(what)
        return {} if len(calls) == 1 else real_list(what)  # as if another writer created them meanwhile

    target._list_variables = stale_then_real  # type: ignore[method-assign]
    target.push(FAKE)

    assert calls[:2] == ["list variables", "re-list variables after 409"]
    assert sorted(v["key"] for v in bitbucket.variables(repo)) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert bitbucket.held_value(repo, "AWS_SECRET_ACCESS_KEY") == FAKE.secret_access_key


def test_workspace_variables_reach_the_build(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    # A workspace of its own: workspace variables reach every repository in it.
    project, repo = add_project(clean_world, initial_key=False, workspace="")
    key = new_key(clean_world, project)

    make_target(clean_world, project, scope="workspace").push(key)

    assert {v["key"] for v in bitbucket.variables(repo, "workspace")} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert bitbucket.variables(repo) == []
    assert bitbucket.held_value(repo, "AWS_ACCESS_KEY_ID") == key.access_key_id
    assert bitbucket.run_build(repo)


def test_deployment_variables_reach_only_the_deploying_pipeline(
    clean_world: World, bitbucket: BitbucketEmulator
) -> None:
    project, repo = add_project(clean_world, initial_key=False)
    bitbucket.define_pipeline(repo, "verify-deploy", "Production")
    env = bitbucket.environment_uuid(repo, "Production")
    target = make_target(clean_world, project, scope="deployment", environment_uuid=env, pipeline="verify-deploy")

    target.push(new_key(clean_world, project))

    assert {v["key"] for v in bitbucket.variables(repo, "deployment", env)} == {"AWS_ACCESS_KEY_ID",
                                                                               "AWS_SECRET_ACCESS_KEY"}
    assert bitbucket.run_build(repo, "verify-deploy")
    assert not bitbucket.run_build(repo, DEFAULT_PIPELINE)  # no deployment: no credentials
    assert wait_terminal(target, target.trigger_verification("deploy-1").run_id).state is RunState.SUCCEEDED


def test_trigger_runs_the_custom_pipeline_with_the_nonce(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, repo = add_project(clean_world)
    target = make_target(clean_world, project)

    run = target.trigger_verification("rot-7f3c")

    assert run.run_id == f"{repo}#1"
    # The step's log names the key the build used (its id's digest: the id itself is a secured variable).
    used = key_id_digest(str(bitbucket.held_value(repo, "AWS_ACCESS_KEY_ID")))
    assert wait_terminal(target, run.run_id) == RunStatus(RunState.SUCCEEDED, "COMPLETED/SUCCESSFUL",
                                                          used_key_sha256=used)
    (pipeline,) = bitbucket.pipelines(repo)
    assert pipeline["target"]["selector"] == {"type": "custom", "pattern": DEFAULT_PIPELINE}
    assert pipeline["variables"] == [
        {"type": "pipeline_variable", "key": "ROTATION_NONCE", "value": "rot-7f3c", "secured": False}]
    assert "verify: OK" in pipeline["log"]
    assert bitbucket.held_value(repo, "AWS_SECRET_ACCESS_KEY") not in pipeline["log"]


def test_failed_and_hung_pipelines(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, repo = add_project(clean_world)
    target = make_target(clean_world, project)
    bitbucket.fail_next_builds(repo)
    assert wait_terminal(target, target.trigger_verification("bad").run_id) == RunStatus(
        RunState.FAILED, "COMPLETED/FAILED")
    bitbucket.hang_next_builds(repo)
    assert wait_terminal(target, target.trigger_verification("hang").run_id, timeout=1) == RunStatus(
        RunState.PENDING, "IN_PROGRESS/RUNNING")


def test_unknown_custom_pipeline_fails_the_trigger(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, _ = add_project(clean_world)
    with pytest.raises(VerificationTriggerFailed, match="400"):
        make_target(clean_world, project, pipeline="no-such-pipeline").trigger_verification("x")


def test_run_status_refuses_another_repositorys_run(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, repo = add_project(clean_world)
    target = make_target(clean_world, project)
    for run_id in ("acme/other#1", f"{repo}#x", "{6f9c1a2b-1111-2222-3333-444455556666}", "12"):
        with pytest.raises(VerificationFailed):
            target.run_status(run_id)
    # No such build number: found neither in this process nor among the newest pipelines (never read by number).
    with pytest.raises(VerificationFailed, match="#999 is not among the newest pipelines"):
        target.run_status(f"{repo}#999")


def test_webhooks_of_a_real_pipeline_verify_and_replay_with_the_same_delivery_id(
    clean_world: World, bitbucket: BitbucketEmulator
) -> None:
    project, repo = add_project(clean_world)
    target = make_target(clean_world, project)
    run = target.trigger_verification("hook")
    wait_terminal(target, run.run_id)
    name = f'"name": "Pipeline #{run.run_id.rsplit("#", 1)[1]} for main"'.encode()
    mine = wait_delivered(bitbucket, lambda d: name in d["body"] and repo.encode() in d["body"], count=2)
    key = bitbucket.webhook_key()

    started, finished = (BitbucketTarget.parse_webhook(d["headers"], d["body"], key) for d in mine)
    assert [d["headers"]["X-Event-Key"] for d in mine] == ["repo:commit_status_created", "repo:commit_status_updated"]
    assert (started.run_id, started.status) == (run.run_id, None)
    assert finished.run_id == run.run_id and finished.status is not None
    assert finished.status.state is RunState.SUCCEEDED
    assert [d["status"] for d in mine] == [202, 200], "the rotator's webhook route accepted both"

    assert bitbucket.redeliver(mine[1]["id"]) == 200  # the route answers a replay as a duplicate


def wait_delivered(ci: BitbucketEmulator, match: Callable[[dict[str, Any]], bool], count: int,
                   timeout: float = 10) -> list[dict[str, Any]]:
    """The ``count`` deliveries ``match`` selects, once the receiver has answered them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in ci.deliveries() if match(d)]
        if (len(found) == count and all(d["status"] is not None for d in found)) or time.monotonic() > deadline:
            assert len(found) == count, found
            return found
        time.sleep(0.05)


# -- delete (OIDC graduation) ---------------------------------------------------------------------------


def test_delete_finds_each_uuid_on_any_page_and_removes_only_those(
    clean_world: World, bitbucket: BitbucketEmulator
) -> None:
    project, repo = add_project(clean_world, initial_key=False)
    for i in range(5):
        bitbucket.set_variable(repo, f"OTHER_{i}", "x")
    make_target(clean_world, project).push(FAKE)  # ours are the 6th and 7th: on the last pages
    bitbucket.max_pagelen = 2
    ours = {v["key"]: v["uuid"] for v in bitbucket.variables(repo)}

    target = make_target(clean_world, project)
    target.delete_variables(["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
    target.delete_variables(["AWS_ACCESS_KEY_ID"])  # not listed any more: done

    left = {v["key"]: v["uuid"] for v in bitbucket.variables(repo)}
    assert left == {k: u for k, u in ours.items() if k.startswith("OTHER_")}


def test_workspace_and_deployment_deletes_use_their_own_store(clean_world: World, bitbucket: BitbucketEmulator) -> None:
    project, repo = add_project(clean_world, initial_key=False, workspace="")
    production = bitbucket.environment_uuid(repo, "Production")
    make_target(clean_world, project).push(FAKE)
    for fields in ({"scope": "workspace"}, {"scope": "deployment", "environment_uuid": production}):
        scoped = make_target(clean_world, project, **fields)
        scoped.push(FAKE)
        scoped.delete_variables(["AWS_ACCESS_KEY_ID"])
    assert [v["key"] for v in bitbucket.variables(repo, "workspace")] == ["AWS_SECRET_ACCESS_KEY"]
    assert [v["key"] for v in bitbucket.variables(repo, "deployment", production)] == ["AWS_SECRET_ACCESS_KEY"]
    assert {v["key"] for v in bitbucket.variables(repo)} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
