"""GitLabTarget against the local GitLab emulator over real HTTP, with builds that call moto in server mode.

Project variables are addressed by key and pipelines by id; group variables are first looked up by key and
environment scope in the group's (paginated) list, because GitLab's group update re-scopes another scope's
variable instead of answering 404 (tests/test_ci_realism.py).

Generic behaviour (registration, a revoked token, a refused second write, Retry-After, persistent 5xx) runs
once per provider in tests/test_provider_contract.py; this file keeps what is specific to GitLab.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.targets.base import Credentials, RunState, WebhookRejected, key_id_digest
from chalicelib.targets.gitlab import GitLabTarget, GitLabTargetConfig, map_pipeline, sign
from local.emulators.gitlab import GitLabEmulator
from tests.emulator_fixtures import Receiver, moto_with_ci_user, receiving

TOKEN = "glpat-emulatorTokenThatMustNeverLeak01"
HOOK_TOKEN = "gitlab-hook-secret-token"
SIGNING = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PROJECT = "acme/app"

pytestmark = pytest.mark.timeout(90)
@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("gl-target") as env:
        yield env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/webhooks/gitlab", timeout=20) as r:
        yield r


def start(aws: SimpleNamespace, receiver: Receiver, secret: str, *, signing: bool) -> GitLabEmulator:
    emulator = GitLabEmulator(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=receiver.url,
                              webhook_secret=secret, build_timeout=30, signing=signing).start()
    emulator.add_project(PROJECT)
    emulator.add_group("acme")
    emulator.add_project("acme/prod", job_environment="production")
    return emulator


@pytest.fixture
def gitlab(aws: SimpleNamespace, receiver: Receiver) -> Iterator[GitLabEmulator]:
    """Hooks with a plain secret token only (the long-standing mode)."""
    emulator = start(aws, receiver, HOOK_TOKEN, signing=False)
    yield emulator
    emulator.stop()


@pytest.fixture
def signed_gitlab(aws: SimpleNamespace, receiver: Receiver) -> Iterator[GitLabEmulator]:
    """Hooks with a whsec_ signing token: Standard-Webhooks signatures."""
    emulator = start(aws, receiver, SIGNING, signing=True)
    yield emulator
    emulator.stop()


def target(gl: GitLabEmulator, sleeps: list[float] | None = None, trigger_value: str | None = None,
           **fields: Any) -> GitLabTarget:
    config = GitLabTargetConfig(provider="gitlab", id="gl-app", token="secretsmanager:ci/gitlab-token",
                                api_url=gl.api_url, **{"project": PROJECT, **fields})
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return GitLabTarget(config, TOKEN, sleep=record, timeout=5, trigger_token=trigger_value)


def api(gl: GitLabEmulator, method: str, path: str, body: Any = None) -> SimpleNamespace:
    """One raw HTTP call to the emulator's /api/v4."""
    data = None if body is None else json.dumps(body).encode()
    response = urllib3.request(method, gl.api_url + path, body=data, retries=False,
                               headers={"PRIVATE-TOKEN": TOKEN, "Content-Type": "application/json"})
    return SimpleNamespace(status=response.status, json=json.loads(response.data) if response.data else None)


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if ": variable " in r.getMessage()]


# -- push ---------------------------------------------------------------------------------------------


def test_push_creates_then_updates_both_variables_masked_and_protected(
    gitlab: GitLabEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    gl_target = target(gitlab)
    gl_target.push(aws.old)  # PUT 404 -> POST 201
    gl_target.push(aws.new)  # PUT 200

    assert outcomes(caplog) == ["created", "created", "updated", "updated"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        flags = gitlab.variable_flags(PROJECT, name)
        assert flags is not None
        assert (flags["masked"], flags["protected"], flags["raw"], flags["environment_scope"]) == (
            True, True, True, "*"
        )
    assert gitlab.held_value(PROJECT, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    assert gitlab.held_value(PROJECT, "AWS_SECRET_ACCESS_KEY") == aws.new.secret_access_key
    assert gitlab.run_build(PROJECT)


def test_flags_follow_the_config(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    target(gitlab, masked=False, protected=False).push(aws.new)
    flags = gitlab.variable_flags(PROJECT, "AWS_SECRET_ACCESS_KEY")
    assert flags is not None and (flags["masked"], flags["protected"]) == (False, False)


def test_post_that_loses_a_race_updates_instead(
    gitlab: GitLabEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    target(gitlab).push(aws.old)
    caplog.clear()
    # The variable "vanishes" for our PUT, then exists for our POST: another writer created it meanwhile.
    gitlab.inject("PUT", r"/variables/AWS_ACCESS_KEY_ID$", statuses=[404])
    target(gitlab).push(aws.new)
    assert outcomes(caplog) == ["updated", "updated"]
    assert gitlab.held_value(PROJECT, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id


def test_post_refused_for_another_reason_is_a_push_failure_without_the_value(gitlab: GitLabEmulator) -> None:
    short = Credentials("AKIA", "short")  # masked values need 8+ characters
    with pytest.raises(TargetPushFailed) as failure:
        target(gitlab).push(short)
    assert "value: is invalid" in str(failure.value) and "HTTP 400" in str(failure.value)
    assert not failure.value.changed
    assert gitlab.variable_flags(PROJECT, "AWS_ACCESS_KEY_ID") is None


def test_environment_scope_filter_picks_our_variable(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    target(gitlab, project="acme/prod").push(aws.old)  # scope *
    target(gitlab, project="acme/prod", environment_scope="production").push(aws.old)  # same keys, scoped
    # Without the filter GitLab cannot tell the two apart.
    ambiguous = api(gitlab, "PUT", "/projects/acme%2Fprod/variables/AWS_ACCESS_KEY_ID", {"value": "x" * 20})
    assert ambiguous.status == 409 and "filter[environment_scope]" in ambiguous.json["message"]

    target(gitlab, project="acme/prod", environment_scope="production").push(aws.new)
    assert gitlab.held_value("acme/prod", "AWS_ACCESS_KEY_ID") == aws.new.access_key_id  # job in production
    star = api(gitlab, "GET", "/projects/acme%2Fprod/variables/AWS_ACCESS_KEY_ID?filter[environment_scope]=*")
    assert star.json["value"] == aws.old.access_key_id  # the * variable was left alone


def test_protected_variables_reach_only_pipelines_on_protected_refs(
    gitlab: GitLabEmulator, aws: SimpleNamespace
) -> None:
    target(gitlab).push(aws.new)
    assert gitlab.variable_value(PROJECT, "AWS_ACCESS_KEY_ID", ref="main") == aws.new.access_key_id
    assert gitlab.variable_value(PROJECT, "AWS_ACCESS_KEY_ID", ref="develop") is None
    unprotected_ref = target(gitlab, ref="develop")
    ref = unprotected_ref.trigger_verification("rot-develop")
    gitlab.wait_for_pipeline(ref.run_id, timeout=30)
    assert unprotected_ref.run_status(ref.run_id).state is RunState.FAILED  # the job had no key

    target(gitlab, protected=False).push(aws.new)
    assert gitlab.variable_value(PROJECT, "AWS_ACCESS_KEY_ID", ref="develop") == aws.new.access_key_id


def test_group_scope_reaches_the_projects_under_the_group(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    target(gitlab, scope="group", group="acme").push(aws.new)
    assert gitlab.variable_flags("acme", "AWS_ACCESS_KEY_ID") is not None
    assert gitlab.variable_flags(PROJECT, "AWS_ACCESS_KEY_ID") is None
    assert gitlab.held_value(PROJECT, "AWS_SECRET_ACCESS_KEY") == aws.new.secret_access_key
    assert gitlab.run_build(PROJECT)


def test_unknown_project_is_a_push_failure_that_changed_nothing(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    with pytest.raises(TargetPushFailed, match="404") as failure:
        target(gitlab, project="acme/missing").push(aws.new)
    assert not failure.value.changed


def test_config_is_validated() -> None:
    base = {"provider": "gitlab", "id": "t", "token": "ssm:/t", "project": PROJECT}
    with pytest.raises(ValueError, match="group is required"):
        GitLabTargetConfig(**base, scope="group")
    with pytest.raises(ValueError, match="only allowed with scope 'group'"):
        GitLabTargetConfig(**base, group="acme")
    with pytest.raises(ValueError, match="numeric project id or a full path"):
        GitLabTargetConfig(**{**base, "project": "no-slash"})
    with pytest.raises(ValueError, match="https"):
        GitLabTargetConfig(**base, api_url="http://gitlab.example.com/api/v4")
    config = GitLabTargetConfig(**{**base, "project": "1234"})
    assert (config.api_url, config.protected, config.masked, config.ref, config.environment_scope) == (
        "https://gitlab.com/api/v4", True, True, "main", "*"
    )


# -- rate limits -------------------------------------------------------------------------------------------


def test_429_without_retry_after_waits_for_ratelimit_reset(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    sleeps: list[float] = []
    gitlab.inject("PUT", r"/variables/AWS_ACCESS_KEY_ID$", statuses=[429])
    target(gitlab, sleeps).push(aws.new)
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 1


# -- verification pipelines -------------------------------------------------------------------------------


def test_trigger_returns_the_pipeline_id_and_the_build_passes(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    gl_target = target(gitlab)
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-1")

    pipeline = gitlab.wait_for_pipeline(ref.run_id, timeout=30)
    assert (pipeline["source"], pipeline["ref"], ref.url) == ("api", "main", pipeline["web_url"])
    assert aws.new.secret_access_key not in pipeline["log"] and "verify: OK" in pipeline["log"]
    status = gl_target.run_status(ref.run_id)
    assert (status.state, status.detail, status.url) == (RunState.SUCCEEDED, "success", pipeline["web_url"])


def test_a_passed_pipeline_reports_the_key_its_job_authenticated_with(
        gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    """The job log's ``::notice title=rotate-verify::`` line (templates/verify/gitlab/) names the key's digest:
    the project's key, or the group's when the project holds none (what graduation and DrainCheck compare)."""
    gl_target = target(gitlab)
    assert GitLabTarget.reports_identity
    target(gitlab, scope="group", group="acme").push(aws.old)  # a group variable the target does not manage
    from_group = gl_target.trigger_verification("rot-group")
    gitlab.wait_for_pipeline(from_group.run_id, timeout=30)
    gl_target.push(aws.new)
    own = gl_target.trigger_verification("rot-own")
    gitlab.wait_for_pipeline(own.run_id, timeout=30)

    reported = gl_target.run_status(from_group.run_id)
    assert (reported.state, reported.used_key_sha256, reported.used_role) == (
        RunState.SUCCEEDED, key_id_digest(aws.old.access_key_id), None)
    assert gl_target.run_status(own.run_id).used_key_sha256 == key_id_digest(aws.new.access_key_id)


def test_a_failed_pipeline_reports_no_identity(gitlab: GitLabEmulator) -> None:
    gl_target = target(gitlab)
    gitlab.fail_next_builds(PROJECT, 1)
    failed = gl_target.trigger_verification("rot-failed-report")
    gitlab.wait_for_pipeline(failed.run_id, timeout=30)
    status = gl_target.run_status(failed.run_id)
    assert (status.state, status.used_key_sha256, status.used_role) == (RunState.FAILED, None, None)


def test_emulator_serves_pipeline_jobs_and_job_logs_as_gitlab_documents(
        gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    """https://docs.gitlab.com/api/jobs/#list-pipeline-jobs (``scope`` filters by status) and
    https://docs.gitlab.com/api/jobs/#get-a-log-file (plain text; 404 for a job the project does not have)."""
    gl_target = target(gitlab)
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-jobs")
    gitlab.wait_for_pipeline(ref.run_id, timeout=30)

    jobs = api(gitlab, "GET", f"/projects/acme%2Fapp/pipelines/{ref.run_id}/jobs")
    (job,) = jobs.json
    assert (jobs.status, job["name"], job["status"], job["pipeline"]["id"]) == (
        200, "rotation-verify", "success", int(ref.run_id))
    assert api(gitlab, "GET", f"/projects/acme%2Fapp/pipelines/{ref.run_id}/jobs?scope[]=failed").json == []
    trace = urllib3.request("GET", f"{gitlab.api_url}/projects/acme%2Fapp/jobs/{job['id']}/trace",
                            headers={"PRIVATE-TOKEN": TOKEN}, retries=False)
    assert trace.status == 200 and trace.headers["Content-Type"].startswith("text/plain")
    assert "::notice title=rotate-verify::access key sha256 " in trace.data.decode()
    assert aws.new.secret_access_key not in trace.data.decode()
    assert api(gitlab, "GET", f"/projects/acme%2Fapp/jobs/{job['id'] + 1}/trace").status == 404
    assert api(gitlab, "GET", f"/projects/acme%2Fprod/jobs/{job['id']}/trace").status == 404
    assert api(gitlab, "GET", "/projects/acme%2Fapp/pipelines/999/jobs").status == 404


def test_trigger_token_starts_the_pipeline(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    trigger = gitlab.add_trigger_token(PROJECT)
    gl_target = target(gitlab, trigger_value=trigger, trigger_token="secretsmanager:ci/gitlab-trigger")
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-trigger")
    assert gitlab.wait_for_pipeline(ref.run_id, timeout=30)["source"] == "trigger"
    assert gl_target.run_status(ref.run_id).state is RunState.SUCCEEDED

    wrong = target(gitlab, trigger_value="glptt-wrong", trigger_token="secretsmanager:ci/gitlab-trigger")
    with pytest.raises(VerificationTriggerFailed, match="404") as failure:
        wrong.trigger_verification("rot-wrong")
    assert "glptt-wrong" not in str(failure.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ref": "no-such-branch"}, "base: Reference not found"),
        ({"nonce_input": "run_id"}, "unknown input name provided"),
    ],
)
def test_refused_triggers_say_why(gitlab: GitLabEmulator, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(VerificationTriggerFailed, match=message):
        target(gitlab, **fields).trigger_verification("rot-refused")


def test_pipeline_without_inputs(gitlab: GitLabEmulator) -> None:
    gitlab.hang_next_builds(PROJECT, 1)
    ref = target(gitlab, nonce_input=None).trigger_verification("rot-no-inputs")
    assert target(gitlab).run_status(ref.run_id).state is RunState.PENDING


def test_failed_and_hung_pipelines_map_to_failed_and_pending(gitlab: GitLabEmulator) -> None:
    gl_target = target(gitlab)
    gitlab.fail_next_builds(PROJECT, 1)
    failed = gl_target.trigger_verification("rot-fail")
    gitlab.wait_for_pipeline(failed.run_id, timeout=30)
    gitlab.hang_next_builds(PROJECT, 1)
    hung = gl_target.trigger_verification("rot-hang")

    assert gl_target.run_status(failed.run_id).state is RunState.FAILED
    deadline = time.monotonic() + 10  # pending until the emulator's thread starts its job, as on GitLab
    while (status := gl_target.run_status(hung.run_id)).detail in ("created", "pending") \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (status.state, status.detail, status.terminal) == (RunState.PENDING, "running", False)


def test_run_status_refuses_unknown_and_malformed_ids(gitlab: GitLabEmulator) -> None:
    with pytest.raises(VerificationFailed, match="404"):
        target(gitlab).run_status("12345")
    with pytest.raises(VerificationFailed, match="not a GitLab pipeline id"):
        target(gitlab).run_status("../../groups/acme")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", RunState.SUCCEEDED),
        ("failed", RunState.FAILED),
        ("canceled", RunState.FAILED),
        ("skipped", RunState.FAILED),
        ("manual", RunState.PENDING),  # blocked on a manual job: never verified, times out
        ("created", RunState.PENDING),
        ("waiting_for_resource", RunState.PENDING),
        ("preparing", RunState.PENDING),
        ("pending", RunState.PENDING),
        ("running", RunState.PENDING),
        ("scheduled", RunState.PENDING),
        ("canceling", RunState.PENDING),
        (None, RunState.PENDING),
    ],
)
def test_status_mapping(status: str | None, expected: RunState) -> None:
    assert map_pipeline(status).state is expected


# -- webhooks: secret token -------------------------------------------------------------------------------


def hook_body(status: str = "success", pipeline_id: int = 61000042) -> bytes:
    return json.dumps({"object_kind": "pipeline",
                       "object_attributes": {"id": pipeline_id, "status": status, "url": "https://gl/p/61"},
                       "project": {"id": 1}}).encode()


def token_headers(**extra: str) -> dict[str, str]:
    return {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": HOOK_TOKEN, "Idempotency-Key": "idem-1",
            "X-Gitlab-Event-UUID": "event-1", **extra}


def test_token_webhook_of_a_real_pipeline_and_its_redelivery(
    gitlab: GitLabEmulator, aws: SimpleNamespace, receiver: Receiver
) -> None:
    gl_target = target(gitlab)
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-hook")
    gitlab.wait_for_pipeline(ref.run_id, timeout=30)
    # pending, running, success: the last one is the pipeline's end.
    headers, body = receiver.wait_for(3)[2]
    assert "webhook-signature" not in {k.lower() for k in headers}
    assert gitlab.webhook_key() == HOOK_TOKEN

    event = GitLabTarget.parse_webhook(headers, body, HOOK_TOKEN)
    assert event.run_id == ref.run_id and event.delivery_id == headers["Idempotency-Key"]
    assert event.status is not None and event.status.state is RunState.SUCCEEDED

    gitlab.redeliver(event.delivery_id)
    again_headers, again_body = receiver.wait_for(4)[3]
    assert GitLabTarget.parse_webhook(again_headers, again_body, HOOK_TOKEN).delivery_id == event.delivery_id


def test_token_webhook_refusals() -> None:
    body = hook_body()
    for headers in ({**token_headers(), "X-Gitlab-Token": "wrong"}, {"X-Gitlab-Event": "Pipeline Hook"}):
        with pytest.raises(WebhookRejected) as rejected:
            GitLabTarget.parse_webhook(headers, body, HOOK_TOKEN)
        assert rejected.value.status == 401
    with pytest.raises(WebhookRejected) as rejected:
        GitLabTarget.parse_webhook(token_headers(), body, "")
    assert rejected.value.status == 401
    no_id = {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": HOOK_TOKEN}
    with pytest.raises(WebhookRejected) as rejected:
        GitLabTarget.parse_webhook(no_id, body, HOOK_TOKEN)
    assert rejected.value.status == 400
    with pytest.raises(WebhookRejected) as rejected:
        GitLabTarget.parse_webhook(token_headers(), b'{"object_kind": "pipeline"}', HOOK_TOKEN)
    assert rejected.value.status == 400


def test_token_mode_cannot_see_a_tampered_body() -> None:
    """The documented limit of X-Gitlab-Token: the body is not signed. Use a whsec_ signing token."""
    tampered = hook_body("failed")
    event = GitLabTarget.parse_webhook(token_headers(), tampered, HOOK_TOKEN)
    assert event.status is not None and event.status.state is RunState.FAILED


@pytest.mark.parametrize(
    ("headers", "expected_delivery"),
    [
        (token_headers(), "idem-1"),
        ({k: v for k, v in token_headers().items() if k != "Idempotency-Key"}, "event-1"),
        ({"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": HOOK_TOKEN, "webhook-id": "wh-1"}, "wh-1"),
    ],
)
def test_token_webhook_delivery_id(headers: dict[str, str], expected_delivery: str) -> None:
    assert GitLabTarget.parse_webhook(headers, hook_body(), HOOK_TOKEN).delivery_id == expected_delivery


@pytest.mark.parametrize(
    ("event_header", "status", "run_id", "state"),
    [
        ("Pipeline Hook", "success", "61000042", RunState.SUCCEEDED),
        ("Pipeline Hook", "canceled", "61000042", RunState.FAILED),
        ("Pipeline Hook", "running", "61000042", None),
        ("Pipeline Hook", "manual", "61000042", None),
        ("Job Hook", "success", None, None),
    ],
)
def test_webhook_events(event_header: str, status: str, run_id: str | None, state: RunState | None) -> None:
    event = GitLabTarget.parse_webhook(token_headers(**{"X-Gitlab-Event": event_header}), hook_body(status),
                                       HOOK_TOKEN)
    assert event.run_id == run_id
    assert (event.status.state if event.status else None) is state


# -- webhooks: whsec_ signing token (Standard Webhooks) ---------------------------------------------------


def signed_headers(body: bytes, webhook_id: str = "msg-1", timestamp: int | None = None,
                   key: str = SIGNING) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Gitlab-Event": "Pipeline Hook", "Idempotency-Key": webhook_id, "webhook-id": webhook_id,
            "webhook-timestamp": ts, "webhook-signature": sign(key, webhook_id, ts, body)}


def test_signed_webhook_of_a_real_pipeline_and_its_resigned_redelivery(
    signed_gitlab: GitLabEmulator, aws: SimpleNamespace, receiver: Receiver
) -> None:
    gl_target = target(signed_gitlab)
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-signed")
    signed_gitlab.wait_for_pipeline(ref.run_id, timeout=30)
    # pending, running, success: the last one is the pipeline's end.
    headers, body = receiver.wait_for(3)[2]
    assert "X-Gitlab-Token" not in headers  # the signing token is never sent
    assert signed_gitlab.webhook_key() == SIGNING

    event = GitLabTarget.parse_webhook(headers, body, SIGNING)
    assert (event.run_id, event.delivery_id) == (ref.run_id, headers["webhook-id"])
    with pytest.raises(WebhookRejected) as rejected:
        GitLabTarget.parse_webhook(headers, body.replace(b'"success"', b'"failed"'), SIGNING)
    assert rejected.value.status == 401

    signed_gitlab.redeliver(event.delivery_id)
    again_headers, again_body = receiver.wait_for(4)[3]
    assert again_body == body and again_headers["webhook-id"] == headers["webhook-id"]
    assert GitLabTarget.parse_webhook(again_headers, again_body, SIGNING).delivery_id == event.delivery_id


def test_signed_mode_never_falls_back_to_the_token() -> None:
    body = hook_body()
    with pytest.raises(WebhookRejected, match="missing webhook-id") as rejected:
        GitLabTarget.parse_webhook({**token_headers(), "X-Gitlab-Token": SIGNING}, body, SIGNING)
    assert rejected.value.status == 401


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: {**h, "webhook-timestamp": str(int(time.time()) - 301)}, "too old"),  # a replay
        (lambda h: {**h, "webhook-timestamp": str(int(time.time()) + 3600)}, "too old or in the future"),
        (lambda h: {**h, "webhook-timestamp": "yesterday"}, "not a unix time"),
        (lambda h: {**h, "webhook-id": "msg-2"}, "does not match"),  # the id is signed too
        (lambda h: {**h, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, "does not match"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-signature"}, "missing"),
    ],
)
def test_signed_webhook_refusals(mutate: Any, reason: str) -> None:
    body = hook_body()
    with pytest.raises(WebhookRejected, match=reason) as rejected:
        GitLabTarget.parse_webhook(mutate(signed_headers(body)), body, SIGNING)
    assert rejected.value.status == 401


def test_stale_signature_is_refused_even_though_it_was_valid() -> None:
    body = hook_body()
    old = int(time.time()) - 10 * 60
    headers = signed_headers(body, timestamp=old)
    with pytest.raises(WebhookRejected, match="too old"):
        GitLabTarget.parse_webhook(headers, body, SIGNING)
    assert GitLabTarget.parse_webhook(signed_headers(body), body, SIGNING).status is not None


def test_any_valid_signature_in_the_list_is_accepted_during_key_rotation() -> None:
    body = hook_body()
    other = "whsec_" + base64.b64encode(b"another-32-byte-signing-key-0000").decode()
    headers = signed_headers(body, key=other)
    headers["webhook-signature"] += " " + signed_headers(body)["webhook-signature"]
    assert GitLabTarget.parse_webhook(headers, body, SIGNING).delivery_id == "msg-1"
    with pytest.raises(WebhookRejected):
        GitLabTarget.parse_webhook(signed_headers(body, key=other), body, SIGNING)


def test_malformed_signing_secret_is_refused_not_crashed() -> None:
    body = hook_body()
    with pytest.raises(WebhookRejected, match="not whsec_<base64>"):
        GitLabTarget.parse_webhook(signed_headers(body), body, "whsec_not base64!")


# -- secrecy ----------------------------------------------------------------------------------------------


def test_no_secret_in_logs_output_job_log_or_errors(
    signed_gitlab: GitLabEmulator,
    aws: SimpleNamespace,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    signed_gitlab.inject("PUT", r"/AWS_SECRET_ACCESS_KEY$", statuses=[503], retry_after=0)
    gl_target = target(signed_gitlab)
    gl_target.push(aws.new)
    ref = gl_target.trigger_verification("rot-secrecy")
    pipeline = signed_gitlab.wait_for_pipeline(ref.run_id, timeout=30)
    headers, body = receiver.wait_for(1)[0]
    signed_gitlab.revoke_token()
    with pytest.raises(TargetPushFailed) as failure:
        gl_target.push(aws.new)

    out, err = capsys.readouterr()
    texts = [caplog.text, out, err, pipeline["log"], str(failure.value), body.decode(), json.dumps(headers),
             json.dumps(signed_gitlab.pipelines(PROJECT))]
    for text in texts:
        assert aws.new.secret_access_key not in text
        assert TOKEN not in text and SIGNING not in text
    assert pipeline["status"] == "success"
    assert aws.new.access_key_id not in pipeline["log"]  # masked, as GitLab masks masked variables


# -- delete (OIDC graduation) ---------------------------------------------------------------------------


def test_delete_removes_only_the_variable_of_our_environment_scope(
    gitlab: GitLabEmulator, aws: SimpleNamespace
) -> None:
    target(gitlab, project="acme/prod").push(aws.old)  # scope *
    scoped = target(gitlab, project="acme/prod", environment_scope="production")
    scoped.push(aws.new)  # same keys, scope production

    scoped.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    scoped.delete_variables(["AWS_ACCESS_KEY_ID"])  # again: already absent in our scope, the * one stays

    assert gitlab.variable_flags("acme/prod", "AWS_ACCESS_KEY_ID", "production") is None
    assert gitlab.variable_flags("acme/prod", "AWS_ACCESS_KEY_ID", "*") is not None
    assert gitlab.held_value("acme/prod", "AWS_ACCESS_KEY_ID") == aws.old.access_key_id  # the job falls back to *


def test_group_delete_is_by_key_and_scope_and_leaves_other_scopes(gitlab: GitLabEmulator, aws: SimpleNamespace) -> None:
    target(gitlab, scope="group", group="acme").push(aws.old)  # scope *
    production = target(gitlab, scope="group", group="acme", environment_scope="production")

    production.delete_variables(["AWS_ACCESS_KEY_ID"])  # nothing in production yet: the * variable is not ours
    assert gitlab.variable_flags("acme", "AWS_ACCESS_KEY_ID", "*") is not None

    production.push(aws.new)
    production.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert gitlab.variable_flags("acme", "AWS_ACCESS_KEY_ID", "production") is None
    assert gitlab.variable_flags("acme", "AWS_SECRET_ACCESS_KEY", "*") is not None


def test_deleting_from_a_project_the_token_cannot_see_is_refused_not_taken_as_done(gitlab: GitLabEmulator) -> None:
    """GitLab answers 404 for a missing variable and for a missing project alike: only the first is done."""
    with pytest.raises(TargetPushFailed, match="404") as failure:
        target(gitlab, project="acme/missing").delete_variables(["AWS_ACCESS_KEY_ID"])
    assert not failure.value.changed


# -- end to end: DrainCheck compares the reported key ---------------------------------------------------


def test_a_rotation_whose_build_passed_with_another_key_keeps_the_old_key(clean_world: Any) -> None:
    """The verification job runs in environment ``production`` and the project also holds a forgotten
    ``production``-scoped copy of the old key, which GitLab prefers over the ``*`` variables the rotator writes
    (https://docs.gitlab.com/ci/environments/#limit-the-environment-scope-of-a-cicd-variable). The pipeline
    passes, but with the old key: its job log says so, and the old key stays Active (invariant 1)."""
    from local import iam_consistency
    from tests.conftest import new_user_name
    from tests.invariants import assert_the_key_the_builds_use_stays_on

    user = new_user_name("glshadow")
    project, name = f"gitlab:acme/{user}", f"acme/{user}"
    clean_world.add_user(user, [project], initial_key=False)
    gitlab = clean_world.emulator("gitlab")
    gitlab.add_project(name, job_environment="production")  # the same project, its job now deploys
    key = clean_world.runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()
    old = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    clean_world.target(project).push(old)
    forgotten = GitLabTargetConfig.model_validate({**clean_world.target_config(project), "id": "forgotten",
                                                   "environment_scope": "production"})
    GitLabTarget(forgotten, clean_world._tokens["gitlab"]).push(old)

    result = clean_world.rotate(user)

    assert_the_key_the_builds_use_stays_on(clean_world, user, result, old.access_key_id)
    assert gitlab.variable_value(name, "AWS_ACCESS_KEY_ID") == old.access_key_id
