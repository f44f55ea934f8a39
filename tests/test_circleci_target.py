"""CircleCITarget against the local CircleCI emulator over real HTTP, with builds that call moto in server mode.

Secrecy flags: CircleCI has none to send. Every project or context variable is write-only (the API shows
``xxxx`` + the last 4 characters, a context never returns a value) and masked in job output; the tests check
exactly that instead of flags.

Generic behaviour (registration, a revoked token, a refused second write, Retry-After, persistent 5xx) runs
once per provider in tests/test_provider_contract.py; this file keeps what is specific to CircleCI.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from chalicelib.errors import TargetPushFailed, VerificationFailed, VerificationTriggerFailed
from chalicelib.targets.base import Credentials, RunState, WebhookRejected, key_id_digest
from chalicelib.targets.circleci import (
    REPORT_ARTIFACT,
    CircleCITarget,
    CircleCITargetConfig,
    map_workflow_event,
    map_workflows,
    signature,
)
from local.emulators.circleci import CircleCIEmulator
from tests.emulator_fixtures import Receiver, moto_with_ci_user, receiving

TOKEN = "CCIPAT_emulatorTokenThatMustNeverLeak01"
HOOK_SECRET = "circleci-signing-secret"
PROJECT = "acme/app"
SLUG = "gh/acme/app"

pytestmark = pytest.mark.timeout(90)
@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("cc-target") as env:
        yield env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/webhooks/circleci", timeout=20) as r:
        yield r


@pytest.fixture
def circleci(aws: SimpleNamespace, receiver: Receiver) -> Iterator[CircleCIEmulator]:
    emulator = CircleCIEmulator(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=receiver.url,
                                webhook_secret=HOOK_SECRET, build_timeout=30)
    with emulator:
        emulator.add_project(PROJECT)
        yield emulator


def target(cc: CircleCIEmulator, sleeps: list[float] | None = None, grace: float = 0.0,
           **fields: Any) -> CircleCITarget:
    config = CircleCITargetConfig(provider="circleci", id="cc-app", token="secretsmanager:ci/circleci-token",
                                  api_url=cc.api_url, **{"project_slug": SLUG, "nonce_parameter": "nonce", **fields})
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return CircleCITarget(config, TOKEN, sleep=record, timeout=5, no_workflow_grace_seconds=grace)


def api(cc: CircleCIEmulator, method: str, path: str, body: Any = None) -> SimpleNamespace:
    data = None if body is None else json.dumps(body).encode()
    response = urllib3.request(method, cc.api_url + path, body=data, retries=False,
                               headers={"Circle-Token": TOKEN, "Content-Type": "application/json"})
    return SimpleNamespace(status=response.status, json=json.loads(response.data) if response.data else None)


# -- push ---------------------------------------------------------------------------------------------


def test_project_push_overwrites_both_variables_and_shows_only_their_last_4(
    circleci: CircleCIEmulator, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    cc_target = target(circleci)
    cc_target.push(aws.old)
    cc_target.push(aws.new)  # POST of an existing name overwrites it

    assert sum(": variable " in r.getMessage() for r in caplog.records) == 4
    assert circleci.held_value(PROJECT, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    assert circleci.held_value(PROJECT, "AWS_SECRET_ACCESS_KEY") == aws.new.secret_access_key
    shown = api(circleci, "GET", f"/project/{SLUG}/envvar/AWS_SECRET_ACCESS_KEY").json
    assert shown["value"] == "xxxx" + aws.new.secret_access_key[-4:]
    assert circleci.run_build(PROJECT)


def test_context_push_upserts_and_context_wins_over_project(
    circleci: CircleCIEmulator, aws: SimpleNamespace
) -> None:
    context_id = circleci.add_context("aws-deploy", used_by=[PROJECT])
    target(circleci).push(aws.old)  # a stale project variable too
    cc_target = target(circleci, scope="context", context_id=context_id)
    cc_target.push(aws.old)
    cc_target.push(aws.new)

    assert circleci.held_value(PROJECT, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    listed = api(circleci, "GET", f"/context/{context_id}/environment-variable").json
    assert [i["variable"] for i in listed["items"]] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert aws.new.secret_access_key not in json.dumps(listed)  # a context never returns a value
    assert circleci.run_build(PROJECT)


@pytest.mark.parametrize(
    "fields",
    [{"project_slug": "gh/acme/missing"}, {"scope": "context", "context_id": str(uuid.uuid4())}],
)
def test_unknown_project_or_context_is_a_push_failure_that_changed_nothing(
    circleci: CircleCIEmulator, aws: SimpleNamespace, fields: dict[str, Any]
) -> None:
    with pytest.raises(TargetPushFailed, match="404") as failure:
        target(circleci, **fields).push(aws.new)
    assert not failure.value.changed


def test_config_is_validated() -> None:
    base = {"provider": "circleci", "id": "t", "token": "ssm:/t", "project_slug": SLUG}
    with pytest.raises(ValueError, match="context_id is required"):
        CircleCITargetConfig(**base, scope="context")
    with pytest.raises(ValueError, match="only allowed with scope 'context'"):
        CircleCITargetConfig(**base, context_id=str(uuid.uuid4()))
    with pytest.raises(ValueError, match="project slug"):
        CircleCITargetConfig(**{**base, "project_slug": "acme/app"})
    with pytest.raises(ValueError, match="carries the nonce"):
        CircleCITargetConfig(**base, nonce_parameter="nonce", parameters={"nonce": "x"})
    with pytest.raises(ValueError, match="https"):
        CircleCITargetConfig(**base, api_url="http://circleci.example.com/api/v2")
    config = CircleCITargetConfig(**base)
    assert (config.api_url, config.branch, config.scope, config.nonce_parameter) == (
        "https://circleci.com/api/v2", "main", "project", None
    )


# -- rate limits -------------------------------------------------------------------------------------------


# -- verification pipelines -------------------------------------------------------------------------------


def test_trigger_returns_the_pipeline_id_and_its_workflows_decide(
    circleci: CircleCIEmulator, aws: SimpleNamespace
) -> None:
    cc_target = target(circleci)
    cc_target.push(aws.new)
    ref = cc_target.trigger_verification("rot-1")

    pipeline = circleci.wait_for_pipeline(ref.run_id, timeout=30)
    assert (pipeline["state"], pipeline["vcs"]["branch"]) == ("created", "main")
    (workflow,) = pipeline["workflows"]
    assert workflow["status"] == "success" and aws.new.secret_access_key not in workflow["log"]
    status = cc_target.run_status(ref.run_id)
    assert (status.state, status.detail) == (RunState.SUCCEEDED, "workflows verify=success")


def test_undeclared_parameters_are_refused_with_circlecis_reason(circleci: CircleCIEmulator) -> None:
    with pytest.raises(VerificationTriggerFailed, match="Unexpected argument"):
        target(circleci, parameters={"deploy": True}).trigger_verification("rot-x")
    circleci.add_project("acme/declared", parameters=("nonce", "deploy"))
    circleci.hang_next_builds("acme/declared", 1)
    ref = target(circleci, project_slug="gh/acme/declared", parameters={"deploy": True}).trigger_verification("n")
    assert len(ref.run_id) == 36


def test_pipeline_url_is_given_only_for_circleci_com() -> None:
    config = CircleCITargetConfig(provider="circleci", id="t", token="ssm:/t", project_slug=SLUG)
    assert CircleCITarget(config, TOKEN)._web_url(62) == f"https://app.circleci.com/pipelines/{SLUG}/62"
    local = CircleCITargetConfig(provider="circleci", id="t", token="ssm:/t", project_slug=SLUG,
                                 api_url="http://127.0.0.1:9/api/v2")
    assert CircleCITarget(local, TOKEN)._web_url(62) is None


def test_unknown_project_is_a_trigger_failure(circleci: CircleCIEmulator) -> None:
    with pytest.raises(VerificationTriggerFailed, match="404"):
        target(circleci, project_slug="gh/acme/missing").trigger_verification("rot-x")


def test_failed_and_hung_workflows_map_to_failed_and_pending(circleci: CircleCIEmulator) -> None:
    cc_target = target(circleci)
    circleci.fail_next_builds(PROJECT, 1)
    failed = cc_target.trigger_verification("rot-fail")
    circleci.wait_for_pipeline(failed.run_id, timeout=30)
    circleci.hang_next_builds(PROJECT, 1)
    hung = cc_target.trigger_verification("rot-hang")

    assert cc_target.run_status(failed.run_id).state is RunState.FAILED
    status = cc_target.run_status(hung.run_id)
    assert (status.state, status.terminal) == (RunState.PENDING, False)


def test_no_build_ran_is_a_failure(circleci: CircleCIEmulator) -> None:
    circleci.add_project("acme/filtered", workflow_branches=("release",))
    filtered = target(circleci, project_slug="gh/acme/filtered")
    ref = filtered.trigger_verification("rot-filtered")
    assert circleci.wait_for_pipeline(ref.run_id, timeout=10)["workflows"] == []
    status = filtered.run_status(ref.run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "pipeline created no workflow (filters?): no build ran")
    # Within the grace period workflows may still be on their way.
    assert target(circleci, grace=60, project_slug="gh/acme/filtered").run_status(ref.run_id).state is RunState.PENDING

    circleci.error_next_pipelines(PROJECT, 1)
    errored = target(circleci).trigger_verification("rot-errored")
    circleci.wait_for_pipeline(errored.run_id, timeout=10)
    assert target(circleci, grace=60).run_status(errored.run_id).detail == (
        "pipeline errored (config error): no build ran"
    )

    unknown_branch = target(circleci, branch="no-such-branch").trigger_verification("rot-branch")
    circleci.wait_for_pipeline(unknown_branch.run_id, timeout=10)
    assert target(circleci).run_status(unknown_branch.run_id).state is RunState.FAILED


def test_every_page_of_workflows_is_read(circleci: CircleCIEmulator, aws: SimpleNamespace) -> None:
    circleci.add_project("acme/many", workflows=("build", "test", "verify"), failing_workflows=("verify",))
    circleci.page_size = 1
    many = target(circleci, project_slug="gh/acme/many")
    many.push(aws.new)
    ref = many.trigger_verification("rot-pages")
    circleci.wait_for_pipeline(ref.run_id, timeout=60)
    first_page = api(circleci, "GET", f"/pipeline/{ref.run_id}/workflow").json
    assert len(first_page["items"]) == 1 and first_page["next_page_token"]

    status = many.run_status(ref.run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "workflows verify=failed")  # on page 3


def test_run_status_refuses_unknown_and_malformed_ids(circleci: CircleCIEmulator) -> None:
    with pytest.raises(VerificationFailed, match="404"):
        target(circleci).run_status(str(uuid.uuid4()))
    with pytest.raises(VerificationFailed, match="not a pipeline id"):
        target(circleci).run_status("../context/x")


@pytest.mark.parametrize(
    ("state", "statuses", "age", "expected"),
    [
        ("created", ["success"], 0, RunState.SUCCEEDED),
        ("created", ["success", "success"], 0, RunState.SUCCEEDED),
        ("created", ["success", "running"], 0, RunState.PENDING),
        ("created", ["success", "failed"], 0, RunState.FAILED),
        ("created", ["running", "failing"], 0, RunState.FAILED),  # a job failed: can no longer pass
        ("created", ["error"], 0, RunState.FAILED),
        ("created", ["canceled"], 0, RunState.FAILED),
        ("created", ["unauthorized"], 0, RunState.FAILED),
        ("created", ["not_run"], 0, RunState.FAILED),
        ("created", ["on_hold"], 0, RunState.PENDING),  # waiting for approval: times out
        ("created", ["running"], 0, RunState.PENDING),
        ("created", [], 60, RunState.FAILED),  # no build ran
        ("created", [], 1, RunState.PENDING),  # workflows may still appear
        ("errored", [], 0, RunState.FAILED),
        ("setup-pending", [], 60, RunState.PENDING),
        ("setup", [], 60, RunState.PENDING),
        ("pending", [], 60, RunState.PENDING),
    ],
)
def test_status_mapping(state: str, statuses: list[str], age: float, expected: RunState) -> None:
    flows = [(f"w{i}", s) for i, s in enumerate(statuses)]
    assert map_workflows(state, flows, age, grace_seconds=15).state is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [("success", RunState.SUCCEEDED), ("failed", RunState.FAILED), ("error", RunState.FAILED),
     ("canceled", RunState.FAILED), ("unauthorized", RunState.FAILED), ("running", None), (None, None)],
)
def test_webhook_status_mapping(status: str | None, expected: RunState | None) -> None:
    mapped = map_workflow_event(status)
    assert (mapped.state if mapped else None) is expected


# -- webhooks -------------------------------------------------------------------------------------------


def event_body(event_type: str = "workflow-completed", status: str = "success", **extra: Any) -> bytes:
    return json.dumps({"type": event_type, "id": "evt-1", "happened_at": "2026-01-01T00:00:00Z",
                       "workflow": {"id": "w-1", "name": "verify", "status": status, "url": "https://c/w"},
                       "pipeline": {"id": "p-1", "number": 7}, **extra}).encode()


def test_webhook_of_a_real_pipeline_and_its_redelivery(
    circleci: CircleCIEmulator, aws: SimpleNamespace, receiver: Receiver
) -> None:
    cc_target = target(circleci)
    cc_target.push(aws.new)
    ref = cc_target.trigger_verification("rot-hook")
    circleci.wait_for_pipeline(ref.run_id, timeout=30)
    headers, body = receiver.wait_for(1)[0]
    assert headers["Circleci-Event-Type"] == "workflow-completed"

    event = CircleCITarget.parse_webhook(headers, body, HOOK_SECRET)
    assert event.run_id == ref.run_id and event.delivery_id == json.loads(body)["id"]
    assert event.status is not None and event.status.state is RunState.SUCCEEDED

    circleci.redeliver(event.delivery_id)
    again_headers, again_body = receiver.wait_for(2)[1]
    assert CircleCITarget.parse_webhook(again_headers, again_body, HOOK_SECRET).delivery_id == event.delivery_id


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ({}, HOOK_SECRET),  # missing
        ({"circleci-signature": signature("another secret", event_body())}, HOOK_SECRET),
        ({"circleci-signature": "v0=" + signature(HOOK_SECRET, event_body())[3:]}, HOOK_SECRET),  # unknown version
        ({"circleci-signature": signature(HOOK_SECRET, event_body())}, ""),  # no secret configured
        ({"circleci-signature": signature(HOOK_SECRET, event_body("job-completed"))}, HOOK_SECRET),  # other body
    ],
)
def test_bad_signatures_are_refused(headers: dict[str, str], secret: str) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        CircleCITarget.parse_webhook(headers, event_body(), secret)
    assert rejected.value.status == 401


def test_signature_list_with_one_valid_v1_is_accepted() -> None:
    body = event_body()
    header = f"v1={'0' * 64}, {signature(HOOK_SECRET, body)}, v2=abc"
    event = CircleCITarget.parse_webhook({"Circleci-Signature": header}, body, HOOK_SECRET)
    assert (event.delivery_id, event.run_id) == ("evt-1", "p-1")


@pytest.mark.parametrize(
    ("body", "run_id", "state"),
    [
        (event_body(), "p-1", RunState.SUCCEEDED),
        (event_body(status="failed"), "p-1", RunState.FAILED),
        (event_body("job-completed"), None, None),  # another event: acknowledged, ignored
    ],
)
def test_webhook_events(body: bytes, run_id: str | None, state: RunState | None) -> None:
    event = CircleCITarget.parse_webhook({"circleci-signature": signature(HOOK_SECRET, body)}, body, HOOK_SECRET)
    assert event.run_id == run_id and (event.status.state if event.status else None) is state


def test_replayed_delivery_keeps_its_event_id_for_dedup() -> None:
    """No timestamp in the scheme: a replay verifies, and only the body ``id`` lets the receiver drop it."""
    body = event_body()
    headers = {"circleci-signature": signature(HOOK_SECRET, body)}
    first = CircleCITarget.parse_webhook(headers, body, HOOK_SECRET)
    assert CircleCITarget.parse_webhook(dict(headers), body, HOOK_SECRET).delivery_id == first.delivery_id


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", json.dumps({"type": "workflow-completed"}).encode(),
     json.dumps({"type": "workflow-completed", "id": "evt-2", "workflow": {"status": "success"}}).encode()],
)
def test_signed_but_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        CircleCITarget.parse_webhook({"circleci-signature": signature(HOOK_SECRET, body)}, body, HOOK_SECRET)
    assert rejected.value.status == 400


# -- secrecy ----------------------------------------------------------------------------------------------


def test_no_secret_in_logs_output_job_log_or_errors(
    circleci: CircleCIEmulator,
    aws: SimpleNamespace,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    circleci.inject("POST", r"/envvar$", statuses=[503], retry_after=0)
    cc_target = target(circleci)
    cc_target.push(aws.new)
    ref = cc_target.trigger_verification("rot-secrecy")
    pipeline = circleci.wait_for_pipeline(ref.run_id, timeout=30)
    headers, body = receiver.wait_for(1)[0]
    circleci.revoke_token()
    with pytest.raises(TargetPushFailed) as failure:
        cc_target.push(aws.new)

    out, err = capsys.readouterr()
    listed = api(circleci, "GET", f"/project/{SLUG}/envvar")
    texts = [caplog.text, out, err, json.dumps(pipeline), str(failure.value), body.decode(), json.dumps(headers),
             json.dumps(listed.json)]
    for text in texts:
        assert aws.new.secret_access_key not in text
        assert TOKEN not in text and HOOK_SECRET not in text
    assert pipeline["workflows"][0]["status"] == "success"


# -- delete (OIDC graduation) ---------------------------------------------------------------------------


def test_context_delete_leaves_the_project_variables(circleci: CircleCIEmulator, aws: SimpleNamespace) -> None:
    context_id = circleci.add_context("aws-deploy", used_by=[PROJECT])
    target(circleci).push(aws.old)
    cc_target = target(circleci, scope="context", context_id=context_id)
    cc_target.push(aws.new)

    cc_target.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    cc_target.delete_variables(["AWS_ACCESS_KEY_ID"])  # already absent: done

    assert api(circleci, "GET", f"/context/{context_id}/environment-variable").json["items"] == []
    assert circleci.held_value(PROJECT, "AWS_ACCESS_KEY_ID") == aws.old.access_key_id  # the project's own


@pytest.mark.parametrize(
    "fields",
    [{"project_slug": "gh/acme/missing"}, {"scope": "context", "context_id": str(uuid.uuid4())}],
)
def test_a_404_for_an_unknown_project_or_context_is_refused_not_taken_as_done(
    circleci: CircleCIEmulator, fields: dict[str, Any]
) -> None:
    with pytest.raises(TargetPushFailed, match="404") as failure:
        target(circleci, **fields).delete_variables(["AWS_ACCESS_KEY_ID"])
    assert not failure.value.changed


# -- what a passed build authenticated with (the job's artifact) -----------------------------------------


def test_a_passed_pipeline_reports_the_key_its_job_stored_as_an_artifact(
    circleci: CircleCIEmulator, aws: SimpleNamespace
) -> None:
    """The project holds the new key, a context its workflow uses still holds the old one and wins (as on
    CircleCI): the build passes, with the old key, and the job's artifact says which."""
    cc_target = target(circleci)
    cc_target.push(aws.new)
    target(circleci, scope="context", context_id=circleci.add_context("forgotten", used_by=[PROJECT])).push(aws.old)

    ref = cc_target.trigger_verification("rot-artifact")
    circleci.wait_for_pipeline(ref.run_id, timeout=30)
    status = cc_target.run_status(ref.run_id)

    assert status.state is RunState.SUCCEEDED
    assert (status.used_key_sha256, status.used_role) == (key_id_digest(aws.old.access_key_id), None)
    (workflow,) = api(circleci, "GET", f"/pipeline/{ref.run_id}/workflow").json["items"]
    (job,) = api(circleci, "GET", f"/workflow/{workflow['id']}/job").json["items"]
    (artifact,) = api(circleci, "GET", f"/project/{SLUG}/{job['job_number']}/artifacts").json["items"]
    assert artifact["path"] == REPORT_ARTIFACT
    stored = urllib3.request("GET", artifact["url"], headers={"Circle-Token": TOKEN}, retries=False)
    assert stored.status == 200 and aws.old.secret_access_key.encode() not in stored.data
    assert urllib3.request("GET", artifact["url"], retries=False).status == 401  # the token is required
    assert circleci.spec_refusals() == []


def test_a_failed_pipeline_reports_no_key(circleci: CircleCIEmulator, aws: SimpleNamespace) -> None:
    """Its verification job passed and stored its report, another workflow failed: the pipeline is no proof."""
    circleci.add_project("acme/mixed", workflows=("verify", "lint"), failing_workflows=("lint",))
    cc_target = target(circleci, project_slug="gh/acme/mixed")
    cc_target.push(aws.new)
    ref = cc_target.trigger_verification("rot-mixed")
    pipeline = circleci.wait_for_pipeline(ref.run_id, timeout=30)
    assert [w["status"] for w in pipeline["workflows"]] == ["success", "failed"]
    status = cc_target.run_status(ref.run_id)
    assert (status.state, status.used_key_sha256, status.used_role) == (RunState.FAILED, None, None)


@pytest.mark.parametrize("url", ["https://evil.example/output/job/x/artifacts/0/rotate-verify/identity.txt",
                                 "http://output.circle-artifacts.com/output/job/x/artifacts/0/r",
                                 "file:///etc/passwd", ""])
def test_the_token_is_not_sent_to_an_artifact_url_outside_circleci(url: str, circleci: CircleCIEmulator) -> None:
    assert target(circleci)._artifact(url) == ""


def test_a_rotation_whose_build_passed_with_another_key_keeps_the_old_key(clean_world: Any) -> None:
    """A context the project's workflow uses still holds the old key and overrides the project variables the
    rotator writes. The pipeline passes, but with the old key: the job's artifact says so, and the old key stays
    Active (invariant 1)."""
    from local import iam_consistency
    from tests.conftest import new_user_name
    from tests.invariants import assert_the_key_the_builds_use_stays_on

    user = new_user_name("ccshadow")
    project, name = f"circleci:acme/{user}", f"acme/{user}"
    clean_world.add_user(user, [project], initial_key=False)
    circleci = clean_world.emulator("circleci")
    key = clean_world.runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()
    old = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    clean_world.target(project).push(old)
    forgotten = CircleCITargetConfig.model_validate({**clean_world.target_config(project), "id": "forgotten",
                                                     "scope": "context",
                                                     "context_id": circleci.add_context("old", used_by=[name])})
    CircleCITarget(forgotten, clean_world._tokens["circleci"]).push(old)

    result = clean_world.rotate(user)

    assert_the_key_the_builds_use_stays_on(clean_world, user, result, old.access_key_id)
    assert circleci.held_value(name, "AWS_ACCESS_KEY_ID") == old.access_key_id
