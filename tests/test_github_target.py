"""GitHubTarget against the local GitHub emulator over real HTTP, with builds that call moto in server mode.

Generic behaviour (registration, a revoked token, a refused second write, Retry-After, persistent 5xx) runs
once per provider in tests/test_provider_contract.py; this file keeps what is specific to GitHub.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.errors import (
    RateLimited,
    TargetPushFailed,
    TransientError,
    VerificationFailed,
    VerificationTriggerFailed,
)
from chalicelib.targets.base import RunState, WebhookRejected
from chalicelib.targets.github import GitHubTarget, GitHubTargetConfig, map_run, signature
from chalicelib.targets.http import HttpClient, HttpError, server_wait
from local.emulators.github import GitHubEmulator
from tests.emulator_fixtures import Receiver, moto_with_ci_user, receiving

TOKEN = "ghp_emulatorTokenThatMustNeverLeak0001"
HOOK_SECRET = "hook-secret-for-tests"
REPO = "acme/app"
ENV = "prod/eu"  # a slash: the target must URL-encode environment names

pytestmark = pytest.mark.timeout(60)
@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("ci-target") as env:
        yield env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/webhooks/github", timeout=10) as r:
        yield r


@pytest.fixture
def github(aws: SimpleNamespace, receiver: Receiver) -> Iterator[GitHubEmulator]:
    emulator = GitHubEmulator(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=receiver.url,
                              webhook_secret=HOOK_SECRET, build_timeout=20)
    with emulator:
        emulator.add_organization("acme")
        emulator.add_repository(REPO, environments=(ENV,), workflows={"rotate-verify.yml": None,
                                                                        "env-verify.yml": ENV})
        emulator.add_repository("acme/other")
        emulator.add_repository("acme/unlisted")
        yield emulator


def target(gh: GitHubEmulator, sleeps: list[float] | None = None, **fields: Any) -> GitHubTarget:
    config = GitHubTargetConfig(provider="github", id="gh-app", token="secretsmanager:ci/github-token",
                                api_url=gh.url, repository=REPO, **fields)
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return GitHubTarget(config, TOKEN, sleep=record, timeout=5, find_run_attempts=4)


def push_outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if ": secret " in r.getMessage()]


# -- push ---------------------------------------------------------------------------------------------


def test_repository_push_creates_then_updates_both_secrets(
    github: GitHubEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    gh_target = target(github)
    gh_target.push(aws.old)
    gh_target.push(aws.new)

    assert push_outcomes(caplog) == ["created", "created", "updated", "updated"]
    assert github.secret_value(REPO, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    assert github.secret_value(REPO, "AWS_SECRET_ACCESS_KEY") == aws.new.secret_access_key
    assert github.run_build(REPO)


def test_environment_push_is_seen_only_by_jobs_in_that_environment(
    github: GitHubEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    gh_target = target(github, scope="environment", environment=ENV)
    gh_target.push(aws.old)
    gh_target.push(aws.new)

    assert push_outcomes(caplog) == ["created", "created", "updated", "updated"]
    assert github.secret_value(REPO, "AWS_SECRET_ACCESS_KEY", environment=ENV) == aws.new.secret_access_key
    assert github.secret_value(REPO, "AWS_SECRET_ACCESS_KEY") is None
    assert github.run_build(REPO, environment=ENV)
    assert not github.run_build(REPO)  # no credentials outside the environment


def test_organization_push_reaches_the_selected_repositories_and_the_verification_repository(
    github: GitHubEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    gh_target = target(github, scope="organization", selected_repositories=["acme/other"])
    gh_target.push(aws.old)
    gh_target.push(aws.new)

    assert push_outcomes(caplog) == ["created", "created", "updated", "updated"]
    for repo in (REPO, "acme/other"):
        assert github.secret_value(repo, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    assert github.secret_value("acme/unlisted", "AWS_ACCESS_KEY_ID") is None
    assert github.run_build("acme/other")


def test_custom_secret_names_are_used(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    target(github, secret_names={"access_key_id": "DEPLOY_KEY_ID", "secret_access_key": "DEPLOY_SECRET"}).push(
        aws.new
    )
    assert github.secret_value(REPO, "DEPLOY_KEY_ID") == aws.new.access_key_id
    assert github.secret_value(REPO, "DEPLOY_SECRET") == aws.new.secret_access_key


def test_scope_fields_are_validated() -> None:
    base = {"provider": "github", "id": "t", "token": "ssm:/t", "repository": REPO}
    with pytest.raises(ValueError, match="environment is required when scope is 'environment'"):
        GitHubTargetConfig(**base, scope="environment")
    with pytest.raises(ValueError, match="only allowed with scope 'environment'"):
        GitHubTargetConfig(**base, environment="prod")
    with pytest.raises(ValueError, match="owner/repo"):
        GitHubTargetConfig(**{**base, "repository": "no-slash"})
    with pytest.raises(ValueError, match="https"):
        GitHubTargetConfig(**base, api_url="http://github.example.com")
    assert GitHubTargetConfig(**base, scope="organization").org_name == "acme"


# -- rate limits, transient errors, refusals -----------------------------------------------------------


def test_github_403_rate_limit_is_retried(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    sleeps: list[float] = []
    github.inject("GET", r"/public-key$", statuses=[403], retry_after=2)
    target(github, sleeps).push(aws.new)
    assert sleeps == [2.0]


def test_retry_after_beyond_the_budget_is_left_to_step_functions(
    github: GitHubEmulator, aws: SimpleNamespace
) -> None:
    sleeps: list[float] = []
    github.inject("*", r"/public-key$", statuses=[429, 429], retry_after=15)
    # RateLimited (a TransientError): the state machine's long Retry on it waits, not the Lambda.
    with pytest.raises(RateLimited, match="rate limited") as limited:
        target(github, sleeps).push(aws.new)
    assert sleeps == [15.0] and limited.value.retry_after_seconds == 15.0


def test_unknown_environment_is_a_push_failure(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    with pytest.raises(TargetPushFailed, match="404"):
        target(github, scope="environment", environment="staging").push(aws.new)


# -- verification builds --------------------------------------------------------------------------------


def test_dispatch_returns_the_run_id_and_the_build_passes(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    gh_target = target(github)
    gh_target.push(aws.new)
    ref = gh_target.trigger_verification("rot-1-a")

    run = github.wait_for_run(ref.run_id, timeout=20)
    assert run["display_title"] == "verify-rot-1-a"
    assert ref.url == run["html_url"]
    status = gh_target.run_status(ref.run_id)
    assert (status.state, status.detail, status.terminal) == (RunState.SUCCEEDED, "completed/success", True)


def test_environment_workflow_build_uses_environment_secrets(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    gh_target = target(github, scope="environment", environment=ENV, workflow="env-verify.yml")
    gh_target.push(aws.new)
    ref = gh_target.trigger_verification("rot-env")
    github.wait_for_run(ref.run_id, timeout=20)
    assert gh_target.run_status(ref.run_id).state is RunState.SUCCEEDED


def test_legacy_server_falls_back_to_finding_the_run_by_nonce(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    github.legacy_dispatch = True
    github.hang_next_builds(REPO, 2)
    gh_target = target(github)
    other = gh_target.trigger_verification("rot-other")
    ref = gh_target.trigger_verification("rot-mine")

    assert ref.run_id != other.run_id
    titles = {str(r["id"]): r["display_title"] for r in github.runs(REPO)}
    assert titles[ref.run_id] == "verify-rot-mine"
    assert gh_target.run_status(ref.run_id).state is RunState.PENDING


def test_unknown_workflow_is_a_trigger_failure(github: GitHubEmulator) -> None:
    with pytest.raises(VerificationTriggerFailed, match="404"):
        target(github, workflow="missing.yml").trigger_verification("rot-x")


def test_failed_and_hung_builds_map_to_failed_and_pending(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    gh_target = target(github)
    gh_target.push(aws.new)
    github.fail_next_builds(REPO, 1)
    failed = gh_target.trigger_verification("rot-fail")
    github.wait_for_run(failed.run_id, timeout=20)
    github.hang_next_builds(REPO, 1)
    hung = gh_target.trigger_verification("rot-hang")

    status = gh_target.run_status(failed.run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "completed/failure")
    deadline = time.monotonic() + 10  # queued until the emulator's thread starts its job, as on GitHub
    while (status := gh_target.run_status(hung.run_id)).detail == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (status.state, status.detail, status.terminal) == (RunState.PENDING, "in_progress", False)


@pytest.mark.parametrize(
    ("status", "conclusion", "expected"),
    [
        ("completed", "success", RunState.SUCCEEDED),
        ("completed", "failure", RunState.FAILED),
        ("completed", "cancelled", RunState.FAILED),
        ("completed", "timed_out", RunState.FAILED),
        ("completed", "action_required", RunState.FAILED),
        ("completed", "startup_failure", RunState.FAILED),
        ("completed", "stale", RunState.FAILED),
        ("completed", "neutral", RunState.FAILED),
        ("completed", "skipped", RunState.FAILED),
        ("completed", None, RunState.FAILED),
        ("queued", None, RunState.PENDING),
        ("in_progress", None, RunState.PENDING),
        ("waiting", None, RunState.PENDING),
        ("requested", None, RunState.PENDING),
        ("pending", None, RunState.PENDING),
    ],
)
def test_status_mapping(status: str, conclusion: str | None, expected: RunState) -> None:
    assert map_run(status, conclusion).state is expected


# -- webhooks ---------------------------------------------------------------------------------------------


def test_docs_test_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature("It's a Secret to Everybody", b"Hello, World!") == expected
    headers = {"x-hub-signature-256": expected, "X-GitHub-Delivery": "d-1", "X-GitHub-Event": "ping"}
    event = GitHubTarget.parse_webhook(headers, b"Hello, World!", "It's a Secret to Everybody")
    assert (event.delivery_id, event.run_id, event.status) == ("d-1", None, None)


def test_webhook_of_a_real_run_verifies_and_replays_with_the_same_delivery_id(
    github: GitHubEmulator, aws: SimpleNamespace, receiver: Receiver
) -> None:
    gh_target = target(github)
    gh_target.push(aws.new)
    ref = gh_target.trigger_verification("rot-hook")
    github.wait_for_run(ref.run_id, timeout=20)
    # requested, in_progress, completed: the last one is the run's end.
    headers, body = receiver.wait_for(3)[2]

    event = GitHubTarget.parse_webhook(headers, body, HOOK_SECRET)
    assert event.run_id == ref.run_id
    assert event.status is not None and event.status.state is RunState.SUCCEEDED

    github.redeliver(event.delivery_id)
    replay_headers, replay_body = receiver.wait_for(4)[3]
    assert replay_body == body
    assert GitHubTarget.parse_webhook(replay_headers, replay_body, HOOK_SECRET).delivery_id == event.delivery_id


def signed(body: bytes, **extra: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": signature(HOOK_SECRET, body), "X-GitHub-Delivery": "d-42",
            "X-GitHub-Event": "workflow_run", **extra}


def run_payload(action: str, status: str, conclusion: str | None) -> bytes:
    return json.dumps({"action": action, "workflow_run": {"id": 22000000042, "run_attempt": 1,
                                                          "status": status, "conclusion": conclusion}}).encode()


def test_webhook_with_a_bad_signature_is_rejected() -> None:
    body = run_payload("completed", "completed", "success")
    headers = signed(body)
    with pytest.raises(WebhookRejected) as rejected:
        GitHubTarget.parse_webhook(headers, body.replace(b"success", b"failure"), HOOK_SECRET)
    assert rejected.value.status == 401
    with pytest.raises(WebhookRejected):
        GitHubTarget.parse_webhook(headers, body, "another secret")


def test_webhook_without_signature_or_delivery_is_rejected() -> None:
    body = run_payload("completed", "completed", "success")
    headers = signed(body)
    del headers["X-Hub-Signature-256"]
    with pytest.raises(WebhookRejected) as rejected:
        GitHubTarget.parse_webhook(headers, body, HOOK_SECRET)
    assert rejected.value.status == 401

    headers = signed(body)
    del headers["X-GitHub-Delivery"]
    with pytest.raises(WebhookRejected) as rejected:
        GitHubTarget.parse_webhook(headers, body, HOOK_SECRET)
    assert rejected.value.status == 400


def test_webhook_headers_are_case_insensitive_and_unfinished_runs_have_no_status() -> None:
    body = run_payload("in_progress", "in_progress", None)
    headers = {k.lower(): v for k, v in signed(body).items()}
    event = GitHubTarget.parse_webhook(headers, body, HOOK_SECRET)
    assert (event.delivery_id, event.run_id, event.status) == ("d-42", "22000000042", None)


def test_completed_webhook_maps_the_conclusion() -> None:
    body = run_payload("completed", "completed", "skipped")
    event = GitHubTarget.parse_webhook(signed(body), body, HOOK_SECRET)
    assert event.status is not None
    assert (event.status.state, event.status.detail) == (RunState.FAILED, "completed/skipped")


def test_signed_workflow_run_without_a_run_is_a_bad_request() -> None:
    body = b'{"action": "completed"}'
    with pytest.raises(WebhookRejected) as rejected:
        GitHubTarget.parse_webhook(signed(body), body, HOOK_SECRET)
    assert rejected.value.status == 400


# -- secrecy ----------------------------------------------------------------------------------------------


def test_no_secret_in_logs_output_or_build_log(
    github: GitHubEmulator,
    aws: SimpleNamespace,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    github.inject("PUT", r"/AWS_SECRET_ACCESS_KEY$", statuses=[503], retry_after=0)
    gh_target = target(github)
    gh_target.push(aws.new)
    ref = gh_target.trigger_verification("rot-secrecy")
    run = github.wait_for_run(ref.run_id, timeout=20)
    headers, body = receiver.wait_for(1)[0]
    GitHubTarget.parse_webhook(headers, body, HOOK_SECRET)
    github.revoke_token()
    with pytest.raises(TargetPushFailed) as failure:
        gh_target.push(aws.new)

    out, err = capsys.readouterr()
    for text in (caplog.text, out, err, run["log"], str(failure.value), repr(aws.new), body.decode()):
        assert aws.new.secret_access_key not in text
        assert TOKEN not in text
    assert run["conclusion"] == "success"
    assert "verify: caller arn:aws:iam::" in run["log"]


# -- the shared HTTP client ----------------------------------------------------------------------------------


class EchoServer:
    """Answers 422 with a message quoting the request's Authorization header and body, as some APIs do."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                message = f"refused {self.headers.get('Authorization')} for {body}"
                data = json.dumps({"message": message}).encode()
                self.send_response(422)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_http_errors_never_echo_the_token_or_the_body() -> None:
    echo = EchoServer()
    try:
        client = HttpClient(echo.url, {"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(HttpError) as error:
            client.request("PUT", "/secrets/X", json={"encrypted_value": "c2VjcmV0LXZhbHVl", "key_id": "12"})
    finally:
        echo.server.shutdown()
        echo.server.server_close()
    assert (error.value.status, error.value.method, error.value.path) == (422, "PUT", "/secrets/X")
    assert TOKEN not in str(error.value) and "c2VjcmV0LXZhbHVl" not in str(error.value)
    assert str(error.value).startswith("PUT /secrets/X: HTTP 422: refused")


def test_connection_failure_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    client = HttpClient(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}, timeout=1)
    with pytest.raises(TransientError) as error:
        client.request("GET", "/repos/acme/app", params={"q": "x"})
    assert str(error.value) == "GET /repos/acme/app: NewConnectionError"  # no URL, no query, no header


#: A realistic "now" (November 2026): reset headers are told apart from their size.
NOW = 1_796_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": email.utils.formatdate(NOW + 10, usegmt=True)}, 10.0),
        # GitHub: x-ratelimit-reset is a Unix time.
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": f"{NOW + 30:.0f}"}, 30.0),
        ({"x-ratelimit-remaining": "5", "x-ratelimit-reset": f"{NOW + 30:.0f}"}, None),
        # GitLab: RateLimit-Reset is a Unix time.
        ({"ratelimit-remaining": "0", "ratelimit-reset": f"{NOW + 5:.0f}"}, 5.0),
        # CircleCI: the same two names count the seconds until the window resets.
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3000"}, 3000.0),
        ({"ratelimit-remaining": "0", "ratelimit-reset": "42"}, 42.0),
        ({"ratelimit-resettime": email.utils.formatdate(NOW + 20, usegmt=True)}, 20.0),
        ({}, None),
    ],
)
def test_server_wait(headers: dict[str, str], expected: float | None) -> None:
    assert server_wait(headers, now=NOW) == expected


def test_run_status_refuses_unknown_and_malformed_run_ids(github: GitHubEmulator) -> None:
    with pytest.raises(VerificationFailed, match="404"):
        target(github).run_status("12345")
    with pytest.raises(VerificationFailed, match="not a GitHub run id"):
        target(github).run_status("../../orgs/acme")


def test_a_reset_time_on_a_503_is_not_a_wait_when_the_limit_is_not_spent() -> None:
    headers = {"ratelimit-resettime": "60", "ratelimit-remaining": "1999"}
    assert server_wait(headers, now=1000.0, status=503) is None
    assert server_wait(headers, now=1000.0, status=429) == 60.0


# -- delete (OIDC graduation) ---------------------------------------------------------------------------


def repo_target(gh: GitHubEmulator, repository: str) -> GitHubTarget:
    config = GitHubTargetConfig(provider="github", id="gh-other", token="secretsmanager:ci/github-token",
                                api_url=gh.url, repository=repository)
    return GitHubTarget(config, TOKEN, sleep=lambda _: None, timeout=5)


def test_organization_delete_removes_the_org_secret_and_leaves_repository_secrets(
    github: GitHubEmulator, aws: SimpleNamespace
) -> None:
    org = target(github, scope="organization", selected_repositories=["acme/other"])
    org.push(aws.old)
    repo_target(github, "acme/unlisted").push(aws.new)  # a repository secret of the same name

    org.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    org.delete_variables(["AWS_ACCESS_KEY_ID"])  # already absent: done

    for repo in (REPO, "acme/other"):
        assert github.secret_value(repo, "AWS_ACCESS_KEY_ID") is None
    assert github.secret_value("acme/unlisted", "AWS_ACCESS_KEY_ID") == aws.new.access_key_id


def test_environment_delete_leaves_the_repository_secret(github: GitHubEmulator, aws: SimpleNamespace) -> None:
    target(github).push(aws.old)
    env = target(github, scope="environment", environment=ENV)
    env.push(aws.new)
    env.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert github.secret_value(REPO, "AWS_ACCESS_KEY_ID", environment=ENV) == aws.old.access_key_id  # repo's
    assert github.secret_value(REPO, "AWS_ACCESS_KEY_ID") == aws.old.access_key_id


def test_a_404_from_a_repository_the_token_cannot_see_is_refused_not_taken_as_done(github: GitHubEmulator) -> None:
    """GitHub answers 404 for a missing secret and for a repository it hides alike: only the first is done."""
    with pytest.raises(TargetPushFailed, match="404") as failure:
        repo_target(github, "acme/hidden").delete_variables(["AWS_ACCESS_KEY_ID"])
    assert not failure.value.changed
