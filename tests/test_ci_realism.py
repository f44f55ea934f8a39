"""Issue 11's five client findings, each against an emulator that behaves like the real service at that edge.

1. CircleCI GitHub App / GitLab projects (``circleci/`` slugs) start pipelines only through ``pipeline/run``.
2. GitLab group variables: an update falls back to a key-only lookup and re-scopes another scope's variable.
3. A trigger POST that got a gateway error after it took effect is not sent again (one build, not two).
4. Rate limits longer than a Lambda should sleep raise RateLimited; the state machine waits on it.
5. Bitbucket pipelines are read by uuid, and Atlassian API tokens authenticate with Basic email:token.

Every emulator here is a real HTTP server on 127.0.0.1; builds call moto in server mode.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from chalicelib.errors import RateLimited, TargetPushFailed, TransientError
from chalicelib.targets import bitbucket as bitbucket_module
from chalicelib.targets.base import Credentials, RunRef, RunState
from chalicelib.targets.bitbucket import BitbucketTarget, BitbucketTargetConfig
from chalicelib.targets.circleci import CircleCITarget, CircleCITargetConfig
from chalicelib.targets.github import GitHubTarget, GitHubTargetConfig
from chalicelib.targets.gitlab import GitLabTarget, GitLabTargetConfig
from chalicelib.targets.http import HttpClient, OutcomeUnknown
from chalicelib.targets.travis import TravisTarget, TravisTargetConfig
from local.emulators.bitbucket import DEFAULT_PIPELINE, BitbucketEmulator
from local.emulators.circleci import CircleCIEmulator
from local.emulators.github import GitHubEmulator
from local.emulators.gitlab import GitLabEmulator
from local.emulators.travis import TravisEmulator
from tests.emulator_fixtures import moto_with_ci_user

TOKEN = "ci-realism-emulatorTokenThatMustNeverLeak01"
REF = "secretsmanager:ci/token"
ASL = Path(__file__).resolve().parents[1] / "statemachine" / "rotation.asl.json"
APP_SLUG = "circleci/6f0a1c2e-0000-4000-8000-000000000001/6f0a1c2e-0000-4000-8000-000000000002"

pytestmark = pytest.mark.timeout(120)


def no_sleep(_: float) -> None:
    """Waits are recorded by the tests that care; the rest must not slow the suite."""


@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("ci-realism") as env:
        yield env


def start(cls: type[Any], aws: SimpleNamespace) -> Any:
    return cls(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=None, webhook_secret="hook-secret",
               build_timeout=30).start()


def stop(emulator: Any) -> None:
    """Let the builds the test started finish first: a build reports to its (still running) server."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.name.startswith(
                ("pipeline-", "run-", "travis-request-", "bitbucket-pipeline-")):
            thread.join(timeout=30)
    emulator.stop()


@pytest.fixture
def circleci(aws: SimpleNamespace) -> Iterator[CircleCIEmulator]:
    emulator = start(CircleCIEmulator, aws)
    emulator.add_project("acme/app")
    emulator.add_project(APP_SLUG)
    yield emulator
    stop(emulator)


@pytest.fixture
def gitlab(aws: SimpleNamespace) -> Iterator[GitLabEmulator]:
    emulator = start(GitLabEmulator, aws)
    emulator.add_group("acme")
    emulator.add_project("acme/app", job_environment="production")
    emulator.add_project("acme/stage", job_environment="staging")
    yield emulator
    stop(emulator)


@pytest.fixture
def github(aws: SimpleNamespace) -> Iterator[GitHubEmulator]:
    emulator = start(GitHubEmulator, aws)
    emulator.add_repository("acme/app")
    yield emulator
    stop(emulator)


@pytest.fixture
def travis(aws: SimpleNamespace) -> Iterator[TravisEmulator]:
    emulator = start(TravisEmulator, aws)
    emulator.add_repository("acme/app")
    yield emulator
    stop(emulator)


@pytest.fixture
def bitbucket(aws: SimpleNamespace) -> Iterator[BitbucketEmulator]:
    emulator = start(BitbucketEmulator, aws)
    emulator.add_repository("acme/app")
    getattr(bitbucket_module, "_uuids", {}).clear()  # each test starts as a fresh Lambda would
    yield emulator
    stop(emulator)


def circleci_target(cc: CircleCIEmulator, project: str = "acme/app", **fields: Any) -> CircleCITarget:
    config = CircleCITargetConfig.model_validate({**cc.target_config(project, REF), "id": "cc", **fields})
    return CircleCITarget(config, TOKEN, sleep=no_sleep, timeout=5, no_workflow_grace_seconds=0)


def gitlab_target(gl: GitLabEmulator, **fields: Any) -> GitLabTarget:
    config = GitLabTargetConfig(provider="gitlab", id="gl", token=REF, api_url=gl.api_url,
                                **{"project": "acme/app", **fields})
    return GitLabTarget(config, TOKEN, sleep=no_sleep, timeout=5)


def github_target(gh: GitHubEmulator, sleeps: list[float] | None = None) -> GitHubTarget:
    config = GitHubTargetConfig(provider="github", id="gh", token=REF, api_url=gh.url, repository="acme/app")
    return GitHubTarget(config, TOKEN, sleep=(sleeps.append if sleeps is not None else no_sleep), timeout=5,
                        find_run_attempts=3)


def travis_target(tr: TravisEmulator) -> TravisTarget:
    config = TravisTargetConfig.model_validate({**tr.target_config("acme/app", REF), "id": "tr"})
    return TravisTarget(config, TOKEN, sleep=no_sleep, timeout=5)


def bitbucket_target(bb: BitbucketEmulator, token: str = TOKEN, **fields: Any) -> BitbucketTarget:
    config = BitbucketTargetConfig.model_validate({**bb.target_config("acme/app", REF), "id": "bb", **fields})
    return BitbucketTarget(config, token, sleep=no_sleep, timeout=5)


def raw(method: str, url: str, body: Any = None, **headers: str) -> SimpleNamespace:
    data = None if body is None else json.dumps(body).encode()
    response = urllib3.request(method, url, body=data, retries=False,
                               headers={"Content-Type": "application/json", **headers})
    return SimpleNamespace(status=response.status, headers=response.headers,
                           json=json.loads(response.data) if response.data else None)


def until_terminal(status: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        current = status()
        if current.terminal or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


# -- 1. CircleCI integration kinds ------------------------------------------------------------------


def test_circleci_app_project_is_triggered_through_pipeline_run_and_verifies_the_key(
    circleci: CircleCIEmulator, aws: SimpleNamespace
) -> None:
    target = circleci_target(circleci, APP_SLUG)
    target.push(aws.new)
    run = target.trigger_verification("nonce-app-1")
    assert until_terminal(lambda: target.run_status(run.run_id)).state is RunState.SUCCEEDED
    [pipeline] = circleci.pipelines(APP_SLUG)
    assert pipeline["id"] == run.run_id and pipeline["trigger_parameters"] == {"nonce": "nonce-app-1"}


def test_circleci_emulator_refuses_the_classic_trigger_for_app_projects(circleci: CircleCIEmulator) -> None:
    auth = {"Circle-Token": TOKEN}
    classic = raw("POST", f"{circleci.api_url}/project/{APP_SLUG}/pipeline", {"branch": "main"}, **auth)
    assert classic.status == 400 and "pipeline/run" in classic.json["message"]
    definition = circleci.definition_id(APP_SLUG)
    body = {"definition_id": definition, "config": {"branch": "main"}, "checkout": {"branch": "main"}}
    escaped = APP_SLUG.replace("/", "%2F")
    assert raw("POST", f"{circleci.api_url}/project/{escaped}/pipeline/run", body, **auth).status == 404
    wrong = {**body, "definition_id": "6f0a1c2e-0000-4000-8000-0000000000ff"}
    assert raw("POST", f"{circleci.api_url}/project/{APP_SLUG}/pipeline/run", wrong, **auth).status == 404
    assert raw("POST", f"{circleci.api_url}/project/{APP_SLUG}/pipeline/run", body, **auth).status == 201
    # OAuth projects keep the classic endpoint.
    assert raw("POST", f"{circleci.api_url}/project/gh/acme/app/pipeline", {"branch": "main"}, **auth).status == 201


def test_circleci_app_project_config_needs_its_pipeline_definition() -> None:
    base = {"provider": "circleci", "id": "cc", "token": REF, "project_slug": APP_SLUG}
    with pytest.raises(ValueError, match="pipeline_definition_id is required"):
        CircleCITargetConfig.model_validate(base)
    with pytest.raises(ValueError, match="only used by circleci/"):
        CircleCITargetConfig.model_validate({**base, "project_slug": "gh/acme/app",
                                             "pipeline_definition_id": "6f0a1c2e-0000-4000-8000-000000000003"})


# -- 2. GitLab group variables and environment scopes -----------------------------------------------


def test_gitlab_group_push_leaves_another_scopes_variable_alone(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    # The group already holds both variables, for staging only (another team's key).
    gitlab_target(gitlab, scope="group", group="acme", environment_scope="staging").push(aws.old)
    gitlab_target(gitlab, scope="group", group="acme", environment_scope="production").push(aws.new)
    for name, old, new in (("AWS_ACCESS_KEY_ID", aws.old.access_key_id, aws.new.access_key_id),
                           ("AWS_SECRET_ACCESS_KEY", aws.old.secret_access_key, aws.new.secret_access_key)):
        assert gitlab.variable_flags("acme", name, "staging") is not None, "staging's variable was re-scoped"
        assert gitlab.variable_flags("acme", name, "production") is not None
        assert gitlab.variable_value("acme/stage", name) == old, "staging's value was overwritten"
        assert gitlab.variable_value("acme/app", name) == new
    # A second push updates production's variables in place.
    gitlab_target(gitlab, scope="group", group="acme", environment_scope="production").push(aws.old)
    assert gitlab.variable_value("acme/app", "AWS_ACCESS_KEY_ID") == aws.old.access_key_id
    assert gitlab.variable_value("acme/stage", "AWS_ACCESS_KEY_ID") == aws.old.access_key_id


def test_gitlab_emulator_group_update_falls_back_to_the_key_like_gitlab(gitlab: GitLabEmulator) -> None:
    auth = {"PRIVATE-TOKEN": TOKEN}
    url = f"{gitlab.api_url}/groups/acme/variables"
    created = raw("POST", url, {"key": "ONLY_STAGING", "value": "value-staging-1", "environment_scope": "staging"},
                  **auth)
    assert created.status == 201
    # A filter that matches nothing does not 404: GitLab updates the key's variable and re-scopes it.
    updated = raw("PUT", f"{url}/ONLY_STAGING?filter%5Benvironment_scope%5D=production",
                  {"value": "value-prod-1", "environment_scope": "production"}, **auth)
    assert updated.status == 200 and updated.json["environment_scope"] == "production"
    assert gitlab.variable_flags("acme", "ONLY_STAGING", "staging") is None
    # Project variables keep the documented 404.
    raw("POST", f"{gitlab.api_url}/projects/acme%2Fapp/variables",
        {"key": "P_ONLY_STAGING", "value": "value-staging-2", "environment_scope": "staging"}, **auth)
    missing = raw("PUT", f"{gitlab.api_url}/projects/acme%2Fapp/variables/P_ONLY_STAGING"
                         "?filter%5Benvironment_scope%5D=production", {"value": "x"}, **auth)
    assert missing.status == 404
    listed = raw("GET", f"{url}?per_page=1&page=1", **auth)
    assert listed.status == 200 and len(listed.json) == 1


# -- 3. No blind retry of a trigger POST ------------------------------------------------------------


def test_http_client_does_not_resend_a_post_after_a_gateway_error(github: GitHubEmulator) -> None:
    github.inject("POST", r"/dispatches$", statuses=[503])
    client = HttpClient(github.url, {"Authorization": f"Bearer {TOKEN}"}, sleep=no_sleep, timeout=5)
    with pytest.raises(OutcomeUnknown):
        client.request("POST", "/repos/acme/app/actions/workflows/rotate-verify.yml/dispatches",
                       json={"ref": "main", "inputs": {"nonce": "n"}})
    assert github.runs("acme/app") == []
    # Idempotent methods, and POSTs their caller declares idempotent, are still retried.
    github.inject("GET", r"/repos/acme/app$", statuses=[503])
    assert client.request("GET", "/repos/acme/app", expect=(200,)).status == 200
    github.inject("POST", r"/dispatches$", statuses=[503])
    assert client.request("POST", "/repos/acme/app/actions/workflows/rotate-verify.yml/dispatches",
                          json={"ref": "main", "inputs": {"nonce": "n"}}, idempotent=True).status == 204


TRIGGERS: dict[str, tuple[str, str, Callable[[Any], int]]] = {
    # provider: (fixture, trigger path regex, number of builds the emulator holds)
    "github": ("github", r"/dispatches$", lambda e: len(e.runs("acme/app"))),
    "gitlab": ("gitlab", r"/pipeline$", lambda e: len(e.pipelines("acme/app"))),
    "circleci": ("circleci", r"/pipeline$", lambda e: len(e.pipelines("acme/app"))),
    "travis": ("travis", r"/requests$", lambda e: len(e.requests("acme/app"))),
    "bitbucket": ("bitbucket", r"/pipelines/?$", lambda e: len(e.pipelines("acme/app"))),
}


def make_target(provider: str, emulator: Any) -> Any:
    return {"github": github_target, "gitlab": gitlab_target, "circleci": circleci_target,
            "travis": travis_target, "bitbucket": bitbucket_target}[provider](emulator)


@pytest.mark.parametrize("provider", sorted(TRIGGERS))
def test_gateway_error_after_the_build_was_created_yields_one_build(
    provider: str, request: pytest.FixtureRequest
) -> None:
    fixture, path, builds = TRIGGERS[provider]
    emulator = request.getfixturevalue(fixture)
    emulator.inject_after_effect("POST", path, statuses=[502])
    run = make_target(provider, emulator).trigger_verification(f"nonce-{provider}-once")
    assert isinstance(run, RunRef) and run.run_id
    assert builds(emulator) == 1, "the trigger was sent again after the first one took effect"


@pytest.mark.parametrize("provider", sorted(TRIGGERS))
def test_gateway_error_before_anything_was_created_is_sent_once_more(
    provider: str, request: pytest.FixtureRequest
) -> None:
    fixture, path, builds = TRIGGERS[provider]
    emulator = request.getfixturevalue(fixture)
    emulator.inject("POST", path, statuses=[504])
    assert make_target(provider, emulator).trigger_verification(f"nonce-{provider}-retry").run_id
    assert builds(emulator) == 1


def test_repeated_gateway_errors_leave_the_retry_to_the_state_machine(github: GitHubEmulator) -> None:
    github.inject("POST", r"/dispatches$", statuses=[502, 502])
    with pytest.raises(TransientError, match="nothing was created") as failed:
        github_target(github).trigger_verification("nonce-twice")
    assert type(failed.value) is TransientError  # the name the state machine's Retry matches
    assert github.runs("acme/app") == []


# -- 4. Rate limits are waited out by the state machine ---------------------------------------------


def test_github_primary_limit_raises_rate_limited_with_the_reset_time(
    github: GitHubEmulator, aws: SimpleNamespace
) -> None:
    github.limit_rates(primary=2, window_seconds=1800)
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as limited:
        github_target(github, sleeps).push(aws.new)
    assert 1700 <= limited.value.retry_after_seconds <= 1800
    assert sleeps == [], "a Lambda must not sleep through an hour-long window"


def test_github_secondary_limit_without_retry_after_waits_at_least_a_minute(
    github: GitHubEmulator, aws: SimpleNamespace
) -> None:
    github.limit_rates(secondary_per_minute=1)
    with pytest.raises(RateLimited) as limited:
        github_target(github).push(aws.new)  # two PUTs: the second one is over the limit
    assert limited.value.retry_after_seconds == 60


def test_github_emulator_sends_githubs_rate_limit_headers(github: GitHubEmulator) -> None:
    github.limit_rates(primary=1, window_seconds=600, secondary_per_minute=0, secondary_retry_after=30)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = raw("GET", f"{github.url}/repos/acme/app", **auth)
    assert ok.status == 200 and ok.headers["x-ratelimit-remaining"] == "0" and ok.headers["x-ratelimit-limit"] == "1"
    spent = raw("GET", f"{github.url}/repos/acme/app", **auth)
    assert spent.status == 403 and spent.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(spent.headers["x-ratelimit-reset"]) - time.time() <= 600
    github.limit_rates(secondary_per_minute=0, secondary_retry_after=30)
    secondary = raw("PUT", f"{github.url}/repos/acme/app/actions/secrets/X", {}, **auth)
    assert secondary.status == 403 and "secondary rate limit" in secondary.json["message"]
    assert secondary.headers["retry-after"] == "30" and secondary.headers["x-ratelimit-remaining"] != "0"


def test_bitbucket_429_without_retry_after_is_the_rolling_hour(
    bitbucket: BitbucketEmulator, aws: SimpleNamespace
) -> None:
    bitbucket.inject("GET", r"/pipelines_config/variables", statuses=[429] * 5)
    with pytest.raises(RateLimited) as limited:
        bitbucket_target(bitbucket).push(aws.new)
    assert limited.value.retry_after_seconds >= 300


def test_short_rate_limit_waits_stay_in_the_client(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    sleeps: list[float] = []
    github.inject("GET", r"/public-key$", statuses=[429], retry_after=2)
    github_target(github, sleeps).push(aws.new)
    assert sleeps == [2.0]


@pytest.mark.parametrize("state", ["PushTarget", "VerifyBuild"])
def test_state_machine_waits_on_rate_limited_for_about_an_hour(state: str) -> None:
    def find(states: dict[str, Any]) -> dict[str, Any] | None:
        for name, body in states.items():
            if name == state:
                return body
            for nested in ("Iterator", "ItemProcessor"):
                if nested in body and (found := find(body[nested]["States"])) is not None:
                    return found
        return None

    task = find(json.loads(ASL.read_text())["States"])
    assert task is not None
    retriers = task["Retry"]
    [limited] = [r for r in retriers if "RateLimited" in r["ErrorEquals"]]
    # Before the TransientError retrier, which would otherwise match first and give up within minutes.
    assert retriers.index(limited) < next(i for i, r in enumerate(retriers) if "TransientError" in r["ErrorEquals"])
    waits = [min(limited["IntervalSeconds"] * limited["BackoffRate"] ** i, limited.get("MaxDelaySeconds", 1e9))
             for i in range(limited["MaxAttempts"])]
    assert 3600 <= sum(waits) <= 2 * 3600, waits


# -- 5. Bitbucket: pipelines by uuid, Atlassian API tokens ------------------------------------------


def test_bitbucket_status_is_read_by_pipeline_uuid(bitbucket: BitbucketEmulator, aws: SimpleNamespace) -> None:
    target = bitbucket_target(bitbucket)
    target.push(aws.new)
    run = target.trigger_verification("nonce-bb-uuid")
    assert until_terminal(lambda: target.run_status(run.run_id)).state is RunState.SUCCEEDED
    # Another process (the poller, the webhook route) knows only the run id: it finds the uuid by number.
    bitbucket_module._uuids.clear()
    assert bitbucket_target(bitbucket).run_status(run.run_id).state is RunState.SUCCEEDED


def test_bitbucket_emulator_refuses_a_build_number_where_the_api_names_the_uuid(
    bitbucket: BitbucketEmulator,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{bitbucket.url}/repositories/acme/app/pipelines"
    created = raw("POST", f"{base}/", {"target": {"type": "pipeline_ref_target", "ref_type": "branch",
                                                   "ref_name": "main",
                                                   "selector": {"type": "custom", "pattern": DEFAULT_PIPELINE}}},
                  **auth)
    assert created.status == 201
    assert raw("GET", f"{base}/{created.json['build_number']}", **auth).status == 404
    uuid = created.json["uuid"].replace("{", "%7B").replace("}", "%7D")
    assert raw("GET", f"{base}/{uuid}", **auth).status == 200


def test_bitbucket_api_token_uses_basic_email_and_token(bitbucket: BitbucketEmulator, aws: SimpleNamespace) -> None:
    target = bitbucket_target(bitbucket, auth="api_token", email=bitbucket.account_email)
    target.push(aws.new)
    run = target.trigger_verification("nonce-bb-basic")
    assert until_terminal(lambda: target.run_status(run.run_id)).state is RunState.SUCCEEDED
    with pytest.raises(TargetPushFailed, match="401") as refused:
        bitbucket_target(bitbucket, auth="api_token", email="someone.else@example.com").push(aws.new)
    assert TOKEN not in str(refused.value)
    # The token as a Bearer still works (access tokens), and a Basic header needs the account's email.
    bitbucket_target(bitbucket).push(Credentials(aws.new.access_key_id, aws.new.secret_access_key))


def test_bitbucket_api_token_config_needs_the_email() -> None:
    base = {"provider": "bitbucket", "id": "bb", "token": REF, "workspace": "acme", "repository": "app"}
    with pytest.raises(ValueError, match="email is required"):
        BitbucketTargetConfig.model_validate({**base, "auth": "api_token"})
    with pytest.raises(ValueError, match="email"):
        BitbucketTargetConfig.model_validate({**base, "auth": "api_token", "email": "not-an-email"})
