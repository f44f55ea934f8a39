"""The local GitHub emulator over real HTTP: the API contract, secret precedence, runs, webhooks, faults.

Builds are real subprocesses calling moto in server mode; with moto's IAM authentication switched on, a
wrong key must fail them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from chalicelib.targets.github import encrypt, signature
from local import iam_consistency
from local.emulators.github import GitHubEmulator
from tests.emulator_fixtures import VERIFY_POLICY, Receiver, moto_auth, receiving

TOKEN = "ghp_emulatorSuiteToken0002"
HOOK_SECRET = "emulator-hook-secret"
REPO = "acme/app"
ENV = "prod/eu"
STRICT_BASE64 = "not base64!"

pytestmark = pytest.mark.timeout(60)



@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    """moto in server mode with a user allowed to verify, its key, and a bucket to list."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    # moto's backends are process-wide: unique names keep other modules' moto state out of the way.
    user, bucket = f"ci-verify-{uuid.uuid4().hex[:8]}", f"artifacts-{uuid.uuid4().hex[:8]}"
    with moto_auth(False):  # the session's local runtime may have switched it on
        iam = session.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="verify", PolicyDocument=VERIFY_POLICY)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        iam_consistency.settle()  # the key has reached every IAM endpoint before a build uses it
        session.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield SimpleNamespace(endpoint=endpoint, user=user, bucket=bucket, key_id=key["AccessKeyId"],
                          secret=key["SecretAccessKey"])
    server.stop()


@pytest.fixture
def iam_auth() -> Iterator[None]:
    """moto checks signatures and policies, so a wrong key really fails."""
    with moto_auth(True):
        yield


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/hook") as r:
        yield r


@pytest.fixture
def gh(aws: SimpleNamespace, receiver: Receiver) -> Iterator[GitHubEmulator]:
    emulator = GitHubEmulator(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=receiver.url,
                              webhook_secret=HOOK_SECRET, build_timeout=20)
    with emulator:
        emulator.add_organization("acme")
        emulator.add_repository(REPO, environments=(ENV,))
        yield emulator


def api(gh: GitHubEmulator, method: str, path: str, body: Any = None, token: str | None = TOKEN,
        **headers: str) -> SimpleNamespace:
    """One raw HTTP call to the emulator."""
    all_headers = {"Accept": "application/vnd.github+json", **headers}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    response = urllib3.request(method, gh.url + path, body=data, headers=all_headers, retries=False)
    payload = json.loads(response.data) if response.data else None
    return SimpleNamespace(status=response.status, headers=response.headers, json=payload)


def put_secret(gh: GitHubEmulator, prefix: str, name: str, value: str, **extra: Any) -> int:
    """GET the scope's public key, seal ``value`` and PUT it; the status."""
    key = api(gh, "GET", f"{prefix}/public-key").json
    body = {"encrypted_value": encrypt(key["key"], value), "key_id": key["key_id"], **extra}
    return api(gh, "PUT", f"{prefix}/{name}", body).status


REPO_SECRETS = f"/repos/{REPO}/actions/secrets"
ENV_SECRETS = f"/repos/{REPO}/environments/prod%2Feu/secrets"
ORG_SECRETS = "/orgs/acme/actions/secrets"


def push_key(gh: GitHubEmulator, prefix: str, key_id: str, secret: str) -> None:
    put_secret(gh, prefix, "AWS_ACCESS_KEY_ID", key_id)
    put_secret(gh, prefix, "AWS_SECRET_ACCESS_KEY", secret)


def dispatch(gh: GitHubEmulator, nonce: str, repo: str = REPO, **extra: Any) -> SimpleNamespace:
    body = {"ref": "main", "inputs": {"nonce": nonce}, **extra}
    return api(gh, "POST", f"/repos/{repo}/actions/workflows/rotate-verify.yml/dispatches", body)


# -- API contract -------------------------------------------------------------------------------------


def test_every_call_needs_the_token(gh: GitHubEmulator) -> None:
    assert api(gh, "GET", f"/repos/{REPO}", token=None).status == 401
    assert api(gh, "GET", f"/repos/{REPO}", token="ghp_wrong").json == {"message": "Bad credentials"}
    ok = api(gh, "GET", f"/repos/{REPO}")
    assert ok.status == 200 and ok.json["full_name"] == REPO and isinstance(ok.json["id"], int)
    assert int(ok.headers["x-ratelimit-remaining"]) < int(ok.headers["x-ratelimit-limit"])
    assert int(ok.headers["x-ratelimit-reset"]) > 0
    gh.revoke_token()
    assert api(gh, "GET", f"/repos/{REPO}").status == 401


def test_unknown_api_version_and_unknown_paths(gh: GitHubEmulator) -> None:
    assert api(gh, "GET", f"/repos/{REPO}", **{"X-GitHub-Api-Version": "1999-01-01"}).status == 400
    assert api(gh, "GET", f"/repos/{REPO}", **{"X-GitHub-Api-Version": "2022-11-28"}).status == 200
    assert api(gh, "GET", "/repos/acme/missing").status == 404
    assert api(gh, "GET", "/orgs/nobody/actions/secrets/public-key").status == 404
    assert api(gh, "GET", f"/repos/{REPO}/environments/staging/secrets/public-key").status == 404


def test_each_scope_has_its_own_public_key(gh: GitHubEmulator) -> None:
    keys = [api(gh, "GET", f"{prefix}/public-key").json for prefix in (REPO_SECRETS, ENV_SECRETS, ORG_SECRETS)]
    assert len({k["key_id"] for k in keys}) == 3
    assert all(isinstance(k["key_id"], str) and len(k["key"]) == 44 for k in keys)


def test_put_secret_creates_then_updates_and_keeps_only_a_digest(gh: GitHubEmulator) -> None:
    assert put_secret(gh, REPO_SECRETS, "DEPLOY_TOKEN", "first-value") == 201
    assert put_secret(gh, REPO_SECRETS, "deploy_token", "second-value") == 204  # names are case-insensitive
    assert gh.secret_value(REPO, "DEPLOY_TOKEN") == "second-value"
    assert gh.received_secret_sha256s() == [hashlib.sha256(v).hexdigest() for v in (b"first-value", b"second-value")]


@pytest.mark.parametrize(
    ("name", "mutate", "status"),
    [
        ("GOOD", lambda body, key: {**body, "encrypted_value": STRICT_BASE64}, 422),
        ("GOOD", lambda body, key: {**body, "encrypted_value": "YWJj"}, 422),  # base64, not a sealed box
        ("GOOD", lambda body, key: {**body, "key_id": "1"}, 422),
        ("GOOD", lambda body, key: {"key_id": key["key_id"]}, 422),
        ("GITHUB_TOKEN", lambda body, key: body, 422),
        ("1ABC", lambda body, key: body, 422),
    ],
)
def test_put_secret_validation(gh: GitHubEmulator, name: str, mutate: Any, status: int) -> None:
    key = api(gh, "GET", f"{REPO_SECRETS}/public-key").json
    body = {"encrypted_value": encrypt(key["key"], "value"), "key_id": key["key_id"]}
    assert api(gh, "PUT", f"{REPO_SECRETS}/{name}", mutate(body, key)).status == status
    assert gh.received_secret_sha256s() == []


def test_a_box_sealed_for_another_scope_is_refused(gh: GitHubEmulator) -> None:
    org_key = api(gh, "GET", f"{ORG_SECRETS}/public-key").json
    repo_key = api(gh, "GET", f"{REPO_SECRETS}/public-key").json
    body = {"encrypted_value": encrypt(org_key["key"], "value"), "key_id": repo_key["key_id"]}
    assert api(gh, "PUT", f"{REPO_SECRETS}/X", body).status == 422


def test_org_secret_visibility(gh: GitHubEmulator) -> None:
    other = gh.add_repository("acme/other")
    gh.add_repository("acme/public-site", private=False)
    assert put_secret(gh, ORG_SECRETS, "ALL", "a", visibility="all") == 201
    assert put_secret(gh, ORG_SECRETS, "PRIV", "p", visibility="private") == 201
    assert put_secret(gh, ORG_SECRETS, "SEL", "s", visibility="selected", selected_repository_ids=[other]) == 201
    assert put_secret(gh, ORG_SECRETS, "BAD", "b", visibility="everyone") == 422

    seen = {repo: {n: gh.secret_value(repo, n) for n in ("ALL", "PRIV", "SEL")}
            for repo in (REPO, "acme/other", "acme/public-site")}
    assert seen[REPO] == {"ALL": "a", "PRIV": "p", "SEL": None}
    assert seen["acme/other"] == {"ALL": "a", "PRIV": "p", "SEL": "s"}
    assert seen["acme/public-site"] == {"ALL": "a", "PRIV": None, "SEL": None}


def test_environment_over_repository_over_organization(gh: GitHubEmulator) -> None:
    put_secret(gh, ORG_SECRETS, "KEY", "org", visibility="all")
    assert gh.secret_value(REPO, "KEY") == "org"
    put_secret(gh, REPO_SECRETS, "KEY", "repo")
    assert gh.secret_value(REPO, "KEY") == "repo"
    put_secret(gh, ENV_SECRETS, "KEY", "env")
    assert (gh.secret_value(REPO, "KEY"), gh.secret_value(REPO, "KEY", environment=ENV)) == ("repo", "env")


def test_dispatch_answers(gh: GitHubEmulator) -> None:
    gh.hang_next_builds(REPO, 4)
    missing = api(gh, "POST", f"/repos/{REPO}/actions/workflows/nope.yml/dispatches", {"ref": "main"})
    assert missing.status == 404
    assert api(gh, "POST", f"/repos/{REPO}/actions/workflows/rotate-verify.yml/dispatches", {}).status == 422

    assert dispatch(gh, "n-plain").status == 204
    detailed = dispatch(gh, "n-details", return_run_details=True)
    assert detailed.status == 200
    assert set(detailed.json) == {"workflow_run_id", "run_url", "html_url"}
    assert detailed.json["run_url"].endswith(f"/repos/{REPO}/actions/runs/{detailed.json['workflow_run_id']}")
    new_version = api(gh, "POST", f"/repos/{REPO}/actions/workflows/rotate-verify.yml/dispatches",
                      {"ref": "main"}, **{"X-GitHub-Api-Version": "2026-03-10"})
    assert new_version.status == 200

    gh.legacy_dispatch = True
    assert dispatch(gh, "n-legacy", return_run_details=True).status == 422
    assert dispatch(gh, "n-legacy").status == 204
    assert [r["display_title"] for r in gh.runs(REPO)] == [
        "verify-n-plain", "verify-n-details", "rotate-verify.yml", "verify-n-legacy"
    ]


def started_run(gh: GitHubEmulator, run_id: int, timeout: float = 10.0) -> dict[str, Any]:
    """The run once its job has started: a dispatched run is ``queued`` until then, as on GitHub, and the
    emulator starts it in a thread of its own."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api(gh, "GET", f"/repos/{REPO}/actions/runs/{run_id}").json
        if run["status"] != "queued" or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


def test_runs_can_be_read_and_listed(gh: GitHubEmulator) -> None:
    gh.hang_next_builds(REPO, 2)
    run_id = dispatch(gh, "n-1", return_run_details=True).json["workflow_run_id"]
    dispatch(gh, "n-2")
    run = started_run(gh, run_id)
    assert (run["id"], run["status"], run["event"], run["head_branch"]) == (
        run_id, "in_progress", "workflow_dispatch", "main"
    )
    listed = api(gh, "GET", f"/repos/{REPO}/actions/workflows/rotate-verify.yml/runs"
                            "?event=workflow_dispatch&branch=main").json
    assert listed["total_count"] == 2
    assert [r["display_title"] for r in listed["workflow_runs"]] == ["verify-n-2", "verify-n-1"]
    other_branch = api(gh, "GET", f"/repos/{REPO}/actions/workflows/rotate-verify.yml/runs?branch=dev").json
    assert other_branch["total_count"] == 0
    assert api(gh, "GET", f"/repos/{REPO}/actions/runs/1").status == 404


def test_injected_faults_come_first_then_normal_service(gh: GitHubEmulator) -> None:
    gh.inject("GET", r"^/repos/acme/app$", statuses=[429, 403, 503], retry_after=7)
    first, second, third, fourth = (api(gh, "GET", f"/repos/{REPO}") for _ in range(4))
    assert (first.status, first.headers["Retry-After"]) == (429, "7")
    assert (second.status, second.headers["x-ratelimit-remaining"]) == (403, "0")
    assert third.status == 503
    assert fourth.status == 200
    assert api(gh, "GET", f"{REPO_SECRETS}/public-key").status == 200  # other paths were never affected


# -- runs, builds and webhooks --------------------------------------------------------------------------


def test_run_completes_and_sends_a_signed_workflow_run_webhook(
    gh: GitHubEmulator, aws: SimpleNamespace, receiver: Receiver
) -> None:
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    run_id = dispatch(gh, "n-hook", return_run_details=True).json["workflow_run_id"]
    run = gh.wait_for_run(run_id, timeout=20)
    assert (run["status"], run["conclusion"]) == ("completed", "success")

    # One workflow_run delivery per action, in order, each signed over its own body.
    arrived = receiver.wait_for(3)
    assert [json.loads(b)["action"] for _, b in arrived] == ["requested", "in_progress", "completed"]
    assert all(h["X-Hub-Signature-256"] == signature(HOOK_SECRET, b) for h, b in arrived)
    assert [json.loads(b)["workflow_run"]["status"] for _, b in arrived] == ["queued", "in_progress", "completed"]
    headers, body = arrived[2]
    *_, delivery = gh.deliveries()
    assert len(gh.deliveries()) == 3 and len({d["id"] for d in gh.deliveries()}) == 3
    assert delivery["body"] == body and delivery["status"] == 204, "the receiver's answer is recorded"
    assert headers["X-GitHub-Event"] == "workflow_run"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Hub-Signature-256"] == signature(HOOK_SECRET, body)
    assert headers["X-GitHub-Delivery"] == delivery["id"]
    payload = json.loads(body)
    assert payload["action"] == "completed"
    assert payload["repository"]["full_name"] == REPO
    assert payload["workflow"]["path"] == ".github/workflows/rotate-verify.yml"
    assert {k: payload["workflow_run"][k] for k in ("id", "status", "conclusion", "display_title", "run_attempt")} == {
        "id": run_id, "status": "completed", "conclusion": "success", "display_title": "verify-n-hook",
        "run_attempt": 1,
    }

    assert gh.redeliver(delivery["id"]) == 204
    replay_headers, replay_body = receiver.wait_for(4)[3]
    assert replay_body == body
    assert replay_headers["X-GitHub-Delivery"] == delivery["id"]
    assert replay_headers["X-Hub-Signature-256"] == headers["X-Hub-Signature-256"]


def test_dropped_webhooks_and_hung_runs(gh: GitHubEmulator, aws: SimpleNamespace) -> None:
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    gh.drop_webhooks = True
    done = dispatch(gh, "n-dropped", return_run_details=True).json["workflow_run_id"]
    assert gh.wait_for_run(done, timeout=20)["conclusion"] == "success"
    assert gh.deliveries() == []

    gh.hang_next_builds(REPO, 1)
    hung = dispatch(gh, "n-hung", return_run_details=True).json["workflow_run_id"]
    with pytest.raises(TimeoutError):
        gh.wait_for_run(hung, timeout=0.3)
    assert started_run(gh, hung)["status"] == "in_progress"


def test_failing_builds_fail_whatever_the_key(gh: GitHubEmulator, aws: SimpleNamespace) -> None:
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    gh.fail_next_builds(REPO, 1)
    failed = dispatch(gh, "n-broken", return_run_details=True).json["workflow_run_id"]
    passed = dispatch(gh, "n-fixed", return_run_details=True).json["workflow_run_id"]
    assert gh.wait_for_run(failed, timeout=20)["conclusion"] == "failure"
    assert gh.wait_for_run(passed, timeout=20)["conclusion"] == "success"


@pytest.mark.usefixtures("iam_auth")
def test_with_iam_authentication_a_valid_key_passes_and_a_wrong_one_fails(
    gh: GitHubEmulator, aws: SimpleNamespace
) -> None:
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    run_id = dispatch(gh, "n-valid", return_run_details=True).json["workflow_run_id"]
    run = gh.wait_for_run(run_id, timeout=20)
    assert run["conclusion"] == "success", run["log"]
    assert f":user/{aws.user}" in run["log"]
    assert hashlib.sha256(aws.key_id.encode()).hexdigest()[:16] in run["log"]

    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret[:-4] + "AAAA")
    run_id = dispatch(gh, "n-wrong", return_run_details=True).json["workflow_run_id"]
    run = gh.wait_for_run(run_id, timeout=20)
    assert run["conclusion"] == "failure"
    assert "verify: FAILED SignatureDoesNotMatch" in run["log"]

    push_key(gh, REPO_SECRETS, "AKIAUNKNOWNUNKNOWN00", aws.secret)
    assert not gh.run_build(REPO)


@pytest.mark.usefixtures("iam_auth")
def test_build_lists_the_bucket_named_by_a_secret(gh: GitHubEmulator, aws: SimpleNamespace) -> None:
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    put_secret(gh, REPO_SECRETS, "VERIFY_S3_BUCKET", aws.bucket)
    assert gh.run_build(REPO)
    put_secret(gh, REPO_SECRETS, "VERIFY_S3_BUCKET", "no-such-bucket")
    assert not gh.run_build(REPO)


def test_build_environment_does_not_inherit_the_emulators_credentials(
    gh: GitHubEmulator, aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.secret)
    assert not gh.run_build(REPO)  # nothing pushed: the build has no key even though this process has one


def test_environment_workflow_sees_environment_secrets(gh: GitHubEmulator, aws: SimpleNamespace) -> None:
    gh.add_repository("acme/svc", workflows={"rotate-verify.yml": "production"})
    push_key(gh, "/repos/acme/svc/environments/production/secrets", aws.key_id, aws.secret)
    run_id = dispatch(gh, "n-env", repo="acme/svc", return_run_details=True).json["workflow_run_id"]
    assert gh.wait_for_run(run_id, timeout=20)["conclusion"] == "success"


def test_the_emulator_never_prints_or_logs_a_secret(
    gh: GitHubEmulator,
    aws: SimpleNamespace,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    # Set explicitly: a handler that ran earlier in the session held every non-product logger at WARNING
    # (chalicelib/log_safety.py), and the emulator is not the product.
    caplog.set_level(logging.DEBUG, logger="local.emulators._server")
    push_key(gh, REPO_SECRETS, aws.key_id, aws.secret)
    run_id = dispatch(gh, "n-quiet", return_run_details=True).json["workflow_run_id"]
    run = gh.wait_for_run(run_id, timeout=20)
    gh.run_build(REPO)
    out, err = capsys.readouterr()
    everything = [caplog.text, out, err, run["log"], json.dumps(gh.runs(REPO))]
    everything += [d["body"].decode() + json.dumps(d["headers"]) for d in gh.deliveries()]
    assert caplog.text  # the emulator did log its requests
    for text in everything:
        assert aws.secret not in text
