"""TravisTarget: pure checks (config, state mapping, RSA-signed webhooks), then the real emulator over HTTP.

Generic behaviour (registration, a revoked token, a refused second write, Retry-After, persistent 5xx) runs
once per provider in tests/test_provider_contract.py; this file keeps what is specific to Travis CI.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from chalicelib.errors import (
    RateLimited,
    TargetPushFailed,
    VerificationFailed,
    VerificationTriggerFailed,
)
from chalicelib.targets.base import Credentials, RunState, RunStatus, WebhookRejected
from chalicelib.targets.travis import TravisTarget, TravisTargetConfig, map_build, sign
from local.emulators.travis import TravisEmulator
from local.world import World, split
from tests.conftest import new_user_name

pytestmark = pytest.mark.timeout(120)
BASE = {"provider": "travis", "id": "travis-app", "token": "secretsmanager:ci/travis-token", "repository": "acme/app"}
FAKE = Credentials("AKIAFAKEFAKEFAKE0001", "fake/secret+value/that-must-stay-private")


# -- pure: config ---------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = TravisTargetConfig.model_validate(BASE)
    assert (config.api_url, config.branch, config.variable_branch, config.notify_url) == (
        "https://api.travis-ci.com", "main", None, None)


@pytest.mark.parametrize(("field", "value"), [
    ("repository", "no-slash"),
    ("repository", "acme/app/extra"),
    ("api_url", "http://api.travis-ci.com"),  # the token would cross the network in clear
    ("notify_url", "ftp://rotator.example.com/webhooks/travis"),
    ("branch", ""),
    ("unknown_field", "x"),
])
def test_config_is_validated(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        TravisTargetConfig.model_validate({**BASE, field: value})


def test_loopback_http_is_allowed_for_the_emulator() -> None:
    config = TravisTargetConfig.model_validate({**BASE, "api_url": "http://127.0.0.1:8080/"})
    assert config.api_url == "http://127.0.0.1:8080"


# -- pure: status mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "expected"), [
    ("passed", RunState.SUCCEEDED),
    ("failed", RunState.FAILED),
    ("errored", RunState.FAILED),
    ("canceled", RunState.FAILED),
    ("created", RunState.PENDING),
    ("received", RunState.PENDING),
    ("started", RunState.PENDING),
    ("something-new", RunState.PENDING),  # unknown never passes
    (None, RunState.PENDING),
])
def test_build_state_mapping(state: str | None, expected: RunState) -> None:
    assert map_build(state).state is expected


# -- pure: webhooks ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, str, rsa.RSAPrivateKey]:
    """Travis's key pair (private, public PEM) and another party's private key."""
    travis = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = travis.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return travis, pem, rsa.generate_private_key(public_exponent=65537, key_size=2048)


def delivery(key: rsa.RSAPrivateKey, build: dict[str, Any] | str, **extra_headers: str,
             ) -> tuple[dict[str, str], bytes]:
    payload = build if isinstance(build, str) else json.dumps(build)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Signature": sign(key, payload),
               "Travis-Repo-Slug": "acme/app", **extra_headers}
    return headers, urlencode({"payload": payload}).encode()


BUILD = {"id": 4242, "number": "7", "type": "api", "state": "passed", "status": 0, "status_message": "Passed"}


def test_webhook_signed_by_travis_is_parsed(keys: Any) -> None:
    travis, pem, _ = keys
    event = TravisTarget.parse_webhook(*delivery(travis, BUILD), pem)
    assert event.run_id == "4242"
    assert event.status == RunStatus(RunState.SUCCEEDED, "passed", None)
    fixed = TravisTarget.parse_webhook(*delivery(travis, {**BUILD, "status_message": "Fixed"}), pem)
    assert fixed.status == RunStatus(RunState.SUCCEEDED, "passed (Fixed)", None)
    assert event.delivery_id.startswith("travis:4242:passed:")


def test_webhook_signed_with_another_key_is_refused(keys: Any) -> None:
    _, pem, other = keys
    with pytest.raises(WebhookRejected) as refused:
        TravisTarget.parse_webhook(*delivery(other, BUILD), pem)
    assert refused.value.status == 401


def test_webhook_with_a_tampered_payload_is_refused(keys: Any) -> None:
    travis, pem, _ = keys
    headers, body = delivery(travis, {**BUILD, "state": "failed"})
    forged = body.replace(b"failed", b"passed")
    with pytest.raises(WebhookRejected) as refused:
        TravisTarget.parse_webhook(headers, forged, pem)
    assert refused.value.status == 401


@pytest.mark.parametrize(("change", "status"), [
    ({"Signature": ""}, 401),
    ({"Signature": "not base64!"}, 401),
])
def test_webhook_signature_header_is_required(keys: Any, change: dict[str, str], status: int) -> None:
    travis, pem, _ = keys
    headers, body = delivery(travis, BUILD)
    with pytest.raises(WebhookRejected) as refused:
        TravisTarget.parse_webhook({**headers, **change}, body, pem)
    assert refused.value.status == status


def test_webhook_needs_a_configured_rsa_public_key(keys: Any) -> None:
    travis, _, _ = keys
    for key in ("", "not a pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
        with pytest.raises(WebhookRejected) as refused:
            TravisTarget.parse_webhook(*delivery(travis, BUILD), key)
        assert refused.value.status == 401


def test_webhook_body_must_hold_one_signed_json_payload_with_a_build_id(keys: Any) -> None:
    travis, pem, _ = keys
    headers, _ = delivery(travis, BUILD)
    with pytest.raises(WebhookRejected) as no_payload:
        TravisTarget.parse_webhook(headers, b"other=1", pem)
    assert no_payload.value.status == 400
    for payload in ("not json", json.dumps({"state": "passed"}), json.dumps({"id": True})):
        with pytest.raises(WebhookRejected) as bad:
            TravisTarget.parse_webhook(*delivery(travis, payload), pem)
        assert bad.value.status == 400


def test_webhook_headers_are_case_insensitive_and_unfinished_builds_have_no_status(keys: Any) -> None:
    travis, pem, _ = keys
    headers, body = delivery(travis, {**BUILD, "state": "started", "status": None, "status_message": "Pending"})
    event = TravisTarget.parse_webhook({k.lower(): v for k, v in headers.items()}, body, pem)
    assert (event.run_id, event.status) == ("4242", None)


def test_webhook_without_state_falls_back_to_the_status_message(keys: Any) -> None:
    travis, pem, _ = keys
    build = {"id": 9, "status_message": "Still Failing"}
    event = TravisTarget.parse_webhook(*delivery(travis, build), pem)
    assert event.status is not None and event.status.state is RunState.FAILED


def test_webhook_delivery_id_is_stable_for_a_replay_and_differs_per_state(keys: Any) -> None:
    travis, pem, _ = keys
    first = TravisTarget.parse_webhook(*delivery(travis, BUILD), pem)
    replay = TravisTarget.parse_webhook(*delivery(travis, BUILD), pem)
    failed = TravisTarget.parse_webhook(*delivery(travis, {**BUILD, "state": "failed"}), pem)
    assert first.delivery_id == replay.delivery_id != failed.delivery_id


# -- the emulator over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def travis(clean_world: World) -> TravisEmulator:
    emulator = clean_world.emulator("travis")
    assert isinstance(emulator, TravisEmulator)
    return emulator


def add_project(world: World, *, initial_key: bool = True) -> tuple[str, str]:
    """A CI user with one Travis repository: (project, slug)."""
    name = new_user_name("trv")
    project = f"travis:acme/{name}"
    world.add_user(name, [project], initial_key=initial_key)
    return project, split(project)[1]


def make_target(world: World, project: str, sleep: Callable[[float], None] = time.sleep,
                resolve_attempts: int = 6, **fields: Any) -> TravisTarget:
    config = TravisTargetConfig.model_validate({**world.target_config(project), **fields})
    return TravisTarget(config, world._tokens["travis"], sleep=sleep, timeout=5,
                        resolve_attempts=resolve_attempts)


def wait_terminal(target: TravisTarget, run_id: str, timeout: float = 30) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = target.run_status(run_id)
        if status.terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if ": env var " in r.getMessage()]


def test_push_creates_then_updates_both_variables_as_private(
    clean_world: World, travis: TravisEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chalicelib")
    project, slug = add_project(clean_world, initial_key=False)
    target = make_target(clean_world, project)

    target.push(FAKE)
    ids = {v["name"]: v["id"] for v in travis.env_vars(slug)}
    target.push(Credentials("AKIAFAKEFAKEFAKE0002", "second-secret"))

    assert outcomes(caplog) == ["created", "created", "updated", "updated"]
    assert {v["name"]: v["id"] for v in travis.env_vars(slug)} == ids  # updated in place, not duplicated
    assert all(v["public"] is False for v in travis.env_vars(slug))
    assert travis.held_value(slug, "AWS_ACCESS_KEY_ID") == "AKIAFAKEFAKEFAKE0002"
    assert travis.held_value(slug, "AWS_SECRET_ACCESS_KEY") == "second-secret"


def test_a_public_key_id_left_by_an_earlier_tool_is_made_private(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world, initial_key=False)
    travis.set_env_var(slug, "AWS_ACCESS_KEY_ID", "AKIAOLDOLDOLDOLD0000", public=True)

    make_target(clean_world, project).push(FAKE)

    (key_id,) = [v for v in travis.env_vars(slug) if v["name"] == "AWS_ACCESS_KEY_ID"]
    assert key_id["public"] is False
    assert travis.held_value(slug, "AWS_ACCESS_KEY_ID") == FAKE.access_key_id


def test_the_api_never_returns_a_private_value(clean_world: World, travis: TravisEmulator) -> None:
    project, _ = add_project(clean_world)
    target = make_target(clean_world, project)
    listed = target._http.request("GET", f"{target._repo_path}/env_vars").json["env_vars"]
    assert listed and all("value" not in v for v in listed)


def test_409_on_create_relists_and_updates(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)  # both variables exist
    target = make_target(clean_world, project)
    real_list = target._list_env_vars
    calls: list[str] = []

    def stale_then_real(what: str) -> dict[str, dict[str, Any]]:
        calls.append(what)
        return {} if len(calls) == 1 else real_list(what)  # as if another writer created them meanwhile

    target._list_env_vars = stale_then_real  # type: ignore[method-assign]
    target.push(FAKE)

    assert calls[0] == "list env vars" and calls[1] == "re-list env vars after 409"
    assert sorted(v["name"] for v in travis.env_vars(slug)) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert travis.held_value(slug, "AWS_SECRET_ACCESS_KEY") == FAKE.secret_access_key


def test_a_409_for_a_variable_that_is_not_listed_fails_the_push(clean_world: World, travis: TravisEmulator) -> None:
    project, _ = add_project(clean_world, initial_key=False)
    travis.inject("POST", r"/env_vars$", statuses=[409])
    with pytest.raises(TargetPushFailed, match="409") as failed:
        make_target(clean_world, project).push(FAKE)
    assert failed.value.changed is False


def test_branch_scoped_variables_leave_other_branches_alone(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)
    make_target(clean_world, project, variable_branch="release").push(FAKE)

    scoped = {(v["name"], v["branch"]) for v in travis.env_vars(slug)}
    assert ("AWS_ACCESS_KEY_ID", "release") in scoped and ("AWS_ACCESS_KEY_ID", None) in scoped
    assert travis.held_value(slug, "AWS_ACCESS_KEY_ID") == clean_world.held_key(project) != FAKE.access_key_id


def test_trigger_resolves_the_build_and_it_passes(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)
    target = make_target(clean_world, project)

    run = target.trigger_verification("rot-7f3c")

    assert run.run_id.isdigit()
    assert wait_terminal(target, run.run_id) == RunStatus(RunState.SUCCEEDED, "passed")
    (request,) = travis.requests(slug)
    assert request["message"] == "key-rotation verify rot-7f3c"
    assert request["config"]["merge_mode"] == "deep_merge"
    assert request["config"]["notifications"]["webhooks"]["urls"] == [travis.webhook_url]
    log = travis.build_log(run.run_id)
    assert "verify: OK" in log and travis.held_value(slug, "AWS_SECRET_ACCESS_KEY") not in log


def test_failed_and_hung_builds(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)
    target = make_target(clean_world, project)
    travis.fail_next_builds(slug)
    assert wait_terminal(target, target.trigger_verification("bad").run_id).state is RunState.FAILED
    travis.hang_next_builds(slug)
    assert wait_terminal(target, target.trigger_verification("hang").run_id, timeout=1) == RunStatus(
        RunState.PENDING, "started")


def test_a_rejected_request_is_a_failed_verification(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)
    travis.reject_next_requests(slug)
    target = make_target(clean_world, project)

    run = target.trigger_verification("rejected")

    assert run.run_id.startswith("request:")
    assert target.run_status(run.run_id) == RunStatus(RunState.FAILED, "no build ran (request rejected)")


def test_a_build_that_appears_late_is_found_through_its_request(clean_world: World, travis: TravisEmulator) -> None:
    project, _ = add_project(clean_world)
    travis.build_delay = 1.0
    target = make_target(clean_world, project, resolve_attempts=1)

    run = target.trigger_verification("late")

    assert run.run_id.startswith("request:")
    assert target.run_status(run.run_id) == RunStatus(RunState.PENDING, "request created")
    assert wait_terminal(target, run.run_id).state is RunState.SUCCEEDED


def test_inactive_repository_and_request_limit_fail_the_trigger(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)
    slept: list[float] = []
    target = make_target(clean_world, project, sleep=slept.append)
    travis.set_active(slug, False)
    with pytest.raises(VerificationTriggerFailed, match="406"):
        target.trigger_verification("inactive")

    travis.set_active(slug, True)
    travis.request_limit = 0
    refused_before = travis.requests_limited
    with pytest.raises(RateLimited, match="429") as limited:  # a rolling hour: Step Functions retries later
        target.trigger_verification("limited")
    # One refused request, none re-sent into the window, no sleeping in the Lambda: the state machine waits.
    assert travis.requests_limited == refused_before + 1 and slept == []
    assert limited.value.retry_after_seconds == 360


def test_run_status_refuses_ids_it_cannot_read(clean_world: World, travis: TravisEmulator) -> None:
    project, _ = add_project(clean_world)
    target = make_target(clean_world, project)
    for run_id in ("acme/app#1", "request:abc", ""):
        with pytest.raises(VerificationFailed):
            target.run_status(run_id)
    with pytest.raises(VerificationFailed, match="404"):
        target.run_status("1")


def test_webhook_from_a_real_build_verifies_with_the_key_served_at_config(
    clean_world: World, travis: TravisEmulator
) -> None:
    project, _ = add_project(clean_world)
    target = make_target(clean_world, project)
    served = urllib3.request("GET", f"{travis.url}/config").json()["config"]["notifications"]["webhook"]
    assert served["public_key"] == travis.webhook_key()

    run = target.trigger_verification("hook")
    wait_terminal(target, run.run_id)
    sent = wait_delivered(travis, lambda d: f'"id": {run.run_id},' in _payload(d["body"]))

    assert sent["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent["status"] == 200, "the rotator's webhook route accepted the form-encoded delivery"
    event = TravisTarget.parse_webhook(sent["headers"], sent["body"], served["public_key"])
    assert (event.run_id, event.status and event.status.state) == (run.run_id, RunState.SUCCEEDED)
    assert travis.redeliver(sent["id"]) == 200
    replayed = TravisTarget.parse_webhook(travis.deliveries()[-1]["headers"], travis.deliveries()[-1]["body"],
                                          served["public_key"])
    assert replayed.delivery_id == event.delivery_id


def wait_delivered(ci: TravisEmulator, match: Callable[[dict[str, Any]], bool], timeout: float = 10,
                   ) -> dict[str, Any]:
    """The one delivery ``match`` selects, once the receiver has answered it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in ci.deliveries() if match(d)]
        if (len(found) == 1 and found[0]["status"] is not None) or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)


def _payload(body: bytes) -> str:
    from urllib.parse import parse_qs

    return parse_qs(body.decode())["payload"][0]


# -- delete (OIDC graduation) ---------------------------------------------------------------------------


def test_delete_removes_only_the_variables_of_our_branch_scope(clean_world: World, travis: TravisEmulator) -> None:
    project, slug = add_project(clean_world)  # both variables on every branch
    release = make_target(clean_world, project, variable_branch="release")
    release.push(FAKE)

    release.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    release.delete_variables(["AWS_ACCESS_KEY_ID"])  # nothing left on that branch: done

    assert {(v["name"], v["branch"]) for v in travis.env_vars(slug)} == {
        ("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)}
    make_target(clean_world, project).delete_variables(["AWS_ACCESS_KEY_ID"])
    assert [v["name"] for v in travis.env_vars(slug)] == ["AWS_SECRET_ACCESS_KEY"]
