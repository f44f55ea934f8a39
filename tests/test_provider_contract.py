"""One behavioural suite for every CI provider: each registered provider runs it against its emulator.

A provider passes when its target, against its emulator over real HTTP, upserts both variables, triggers a
build that really uses them, maps the build's end, verifies its signed webhooks (and refuses unsigned,
tampered or replayed ones), waits out Retry-After and gives up on persistent 5xx as transient, fails cleanly
on a revoked token, says whether a failed push changed anything, refuses another provider's config and run
ids it cannot read, and rotates end to end. The parameters are the registries' names, so a new provider
module (with its emulator) runs all of it with no edit here; the per-provider test files keep only what is
specific to one provider's API.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.errors import ConfigError, TargetPushFailed, TransientError, VerificationFailed
from chalicelib.targets.base import CITarget, Credentials, RunState, TargetConfig, WebhookRejected
from chalicelib.targets.registry import PROVIDERS
from chalicelib.targets.registry import provider as provider_class
from local import iam_consistency
from local.emulators.base import emulators
from local.world import World, split
from tests.conftest import new_user_name
from tests.invariants import assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere

NAMES = PROVIDERS.names()


def test_every_provider_has_an_emulator_and_each_is_registered_under_its_own_name() -> None:
    assert NAMES, "no provider discovered in chalicelib/targets"
    assert sorted(emulators()) == NAMES
    for name in NAMES:
        assert provider_class(name).provider == name and emulators()[name].provider == name
        assert provider_class(name).summary.webhook, f"{name} has no README summary (deploy/readme_tables.py)"
    with pytest.raises(ConfigError, match="unknown CI provider 'nope'"):
        provider_class("nope")


@pytest.mark.parametrize("name", NAMES)
def test_a_target_refuses_another_providers_config(name: str) -> None:
    cls = provider_class(name)
    foreign = TargetConfig.model_construct(provider="other", id="x", api_url="https://example.com")
    with pytest.raises(ConfigError, match=f"{cls.__name__} needs a {cls.config_model.__name__}"):
        cls(foreign, "token")


@pytest.mark.parametrize("name", NAMES)
def test_a_webhook_is_refused_when_no_secret_is_configured(name: str) -> None:
    with pytest.raises(WebhookRejected) as refused:
        provider_class(name).parse_webhook({"Content-Type": "application/json"}, b"{}", "")
    assert refused.value.status == 401 and name in refused.value.reason


@pytest.fixture(params=NAMES)
def project(request: pytest.FixtureRequest, clean_world: World) -> str:
    """A fresh project on the provider's emulator, with a CI user whose hand-made key it holds."""
    provider = request.param
    name = new_user_name(provider[:4])
    project = f"{provider}:acme/{name}" if provider != "github" else f"acme/{name}"
    clean_world.add_user(name, [project])
    return project


def emulator(world: World, project: str) -> Any:
    return world.emulator(split(project)[0])


def wait_status(world: World, project: str, run_id: str, timeout: float = 30) -> RunState:
    target = world.target(project)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = target.run_status(run_id)
        if status.terminal:
            return status.state
        time.sleep(0.1)
    return RunState.PENDING


def build_target(world: World, project: str, sleeps: list[float]) -> CITarget:
    """The rotator's target for ``project`` with the shared retry policy's sleep recorded, not waited."""
    provider, _ = split(project)
    cls = provider_class(provider)
    return cls(cls.config_model.model_validate(world.target_config(project)), world._tokens[provider],
               sleep=sleeps.append)


def fresh_key(world: World, project: str) -> Credentials:
    user = next(u for u, m in world.users.items() if project in m.repositories)
    key = world.runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()  # propagated before a build uses it (tests/test_iam_consistency.py: the window)
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def test_push_upserts_both_variables_and_a_build_uses_them(clean_world: World, project: str) -> None:
    _, name = split(project)
    first = clean_world.held_key(project)
    second = fresh_key(clean_world, project)

    clean_world.target(project).push(second)  # update of existing variables
    clean_world.target(project).push(second)  # and again: idempotent

    ci = emulator(clean_world, project)
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") == second.access_key_id != first
    assert ci.held_value(name, "AWS_SECRET_ACCESS_KEY") == second.secret_access_key
    assert ci.run_build(name)


def test_build_outcomes_are_mapped(clean_world: World, project: str) -> None:
    _, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)

    assert wait_status(clean_world, project, target.trigger_verification("ok-1").run_id) is RunState.SUCCEEDED
    ci.fail_next_builds(name, 1)
    assert wait_status(clean_world, project, target.trigger_verification("bad-1").run_id) is RunState.FAILED
    ci.hang_next_builds(name, 1)
    hung = target.trigger_verification("hang-1").run_id
    assert wait_status(clean_world, project, hung, timeout=2) is RunState.PENDING


def test_webhooks_are_verified_and_replays_keep_their_delivery_id(clean_world: World, project: str) -> None:
    provider, _ = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    run = target.trigger_verification("hook-1")
    wait_status(clean_world, project, run.run_id)
    cls = provider_class(provider)
    key = ci.webhook_key()
    delivery, event = final_delivery(ci, cls, key, run.run_id)

    assert event.run_id == run.run_id and event.status is not None and event.status.state is RunState.SUCCEEDED

    unsigned = {k: v for k, v in delivery["headers"].items() if k.lower() == "content-type"}
    with pytest.raises(WebhookRejected) as refused:
        cls.parse_webhook(unsigned, delivery["body"], key)
    assert refused.value.status == 401

    if cls.webhook_signs_body:
        tampered = delivery["body"].replace(b"success", b"failure").replace(b"passed", b"failed") + b" "
        with pytest.raises(WebhookRejected) as refused:
            cls.parse_webhook(delivery["headers"], tampered, key)
        assert refused.value.status == 401
    else:
        # Nothing signs the body (base.py ``webhook_signs_body``): what can be checked is the credential.
        with pytest.raises(WebhookRejected) as refused:
            cls.parse_webhook(delivery["headers"], delivery["body"], key + "-not-it")
        assert refused.value.status == 401

    ci.redeliver(delivery["id"])
    (again,) = [d for d in ci.deliveries() if d["id"] == delivery["id"]]
    assert cls.parse_webhook(again["headers"], again["body"], key).delivery_id == event.delivery_id


def final_delivery(ci: Any, cls: type[CITarget], key: str, run_id: str,
                   timeout: float = 60) -> tuple[dict[str, Any], Any]:
    """The webhook that reports ``run_id``'s end, once the emulator has recorded it. Found by its run, not by
    being the newest: the emulator is the session's, and earlier tests' runs (late or repeated deliveries
    among them) may deliver meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for delivery in reversed(ci.deliveries()):
            try:
                event = cls.parse_webhook(delivery["headers"], delivery["body"], key)
            except WebhookRejected:
                continue
            if event.run_id == run_id and event.status is not None and event.status.terminal:
                return delivery, event
        assert time.monotonic() < deadline, f"no webhook reported the end of run {run_id}"
        time.sleep(0.05)


def test_rate_limits_are_honoured_and_persistent_5xx_is_transient(clean_world: World, project: str) -> None:
    ci = emulator(clean_world, project)
    credentials = fresh_key(clean_world, project)

    ci.inject("*", ".*", statuses=[429], retry_after=1)
    started = time.monotonic()
    clean_world.target(project).push(credentials)
    assert time.monotonic() - started >= 0.9, "Retry-After was honoured"

    ci.inject("*", ".*", statuses=[503] * 50)
    with pytest.raises(TransientError):
        clean_world.target(project).push(credentials)


def test_retry_after_is_waited_out_by_the_shared_retry_policy(clean_world: World, project: str) -> None:
    _, name = split(project)
    ci, sleeps = emulator(clean_world, project), []
    credentials = fresh_key(clean_world, project)
    ci.inject("*", ".*", statuses=[429], retry_after=3)
    build_target(clean_world, project, sleeps).push(credentials)
    assert sleeps == [3.0]
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") == credentials.access_key_id


def test_persistent_503_is_transient_within_the_retry_budget(clean_world: World, project: str) -> None:
    ci, sleeps = emulator(clean_world, project), []
    ci.inject("*", ".*", statuses=[503] * 20)
    with pytest.raises(TransientError, match="HTTP 503"):
        build_target(clean_world, project, sleeps).push(fresh_key(clean_world, project))
    assert 1 <= len(sleeps) <= 4 and sum(sleeps) <= 20


def test_revoked_token_fails_the_push_without_showing_the_token(clean_world: World, project: str) -> None:
    provider, _ = split(project)
    target = clean_world.target(project)
    credentials = fresh_key(clean_world, project)
    emulator(clean_world, project).revoke_token()
    with pytest.raises(TargetPushFailed) as failed:
        target.push(credentials)
    text = str(failed.value)
    assert failed.value.changed is False, "nothing was written: rollback has nothing to restore there"
    assert target.config.id in text and re.search(r"\b40[13]\b", text), "says which target and what refused"
    assert clean_world._tokens[provider] not in text and credentials.secret_access_key not in text


def test_a_refused_second_write_reports_that_the_target_changed(
    clean_world: World, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback-critical rule: once the key id is replaced, a failed push must say the target changed."""
    _, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    credentials = fresh_key(clean_world, project)
    write = target._write_variable  # the base's template step, wrapped here
    written: list[str] = []

    def revoke_before_the_second(variable: str, value: str, prepared: Any) -> None:
        if written:
            ci.revoke_token()  # the provider now refuses the second write, whatever its API
        write(variable, value, prepared)
        written.append(variable)

    monkeypatch.setattr(target, "_write_variable", revoke_before_the_second)
    with pytest.raises(TargetPushFailed) as failed:
        target.push(credentials)
    assert written == ["AWS_ACCESS_KEY_ID"]
    assert failed.value.changed is True
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") == credentials.access_key_id


def test_config_refuses_unknown_fields_and_plain_http_urls(clean_world: World, project: str) -> None:
    provider, _ = split(project)
    model = provider_class(provider).config_model
    config = clean_world.target_config(project)
    model.model_validate(config)
    with pytest.raises(ValidationError, match="surprise"):
        model.model_validate({**config, "surprise": 1})
    with pytest.raises(ValidationError, match="https"):
        model.model_validate({**config, "api_url": "http://ci.example.com"})


def test_run_status_refuses_a_run_id_it_cannot_read(clean_world: World, project: str) -> None:
    target = clean_world.target(project)
    for run_id in ("../../etc/passwd", ""):
        with pytest.raises(VerificationFailed):
            target.run_status(run_id)


def test_rotates_end_to_end(clean_world: World, project: str) -> None:
    user = next(u for u, m in clean_world.users.items() if project in m.repositories)

    assert clean_world.rotate(user)["status"] == "SUCCEEDED"

    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


# -- deleting variables (OIDC graduation removes the key pair; its undo removes the role ARN) ---------------

ROLE_ARN = "arn:aws:iam::123456789012:role/ci-deployer-oidc"


def test_set_then_delete_leaves_the_target_as_it_was(clean_world: World, project: str) -> None:
    _, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    watched = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ROLE_ARN")
    before = {variable: ci.held_value(name, variable) for variable in watched}
    assert before["AWS_ROLE_ARN"] is None and before["AWS_ACCESS_KEY_ID"]

    target.set_variables({"AWS_ROLE_ARN": ROLE_ARN})
    assert ci.held_value(name, "AWS_ROLE_ARN") == ROLE_ARN
    target.delete_variables(["AWS_ROLE_ARN"])

    assert {variable: ci.held_value(name, variable) for variable in watched} == before
    assert ci.run_build(name), "the key pair the build uses is untouched"


def test_delete_removes_both_variables_and_deleting_again_is_no_error(clean_world: World, project: str) -> None:
    _, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    names = target.config.secret_names
    pair = [names.access_key_id, names.secret_access_key]

    target.delete_variables(pair)
    assert [ci.held_value(name, variable) for variable in pair] == [None, None]
    target.delete_variables(pair)  # already absent: done, not an error
    target.delete_variables(["NEVER_WRITTEN_BY_ANYONE"])
    assert [ci.held_value(name, variable) for variable in pair] == [None, None]


def test_a_refused_delete_changes_nothing_and_says_so(clean_world: World, project: str) -> None:
    provider, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    held = clean_world.held_key(project)
    ci.revoke_token()
    with pytest.raises(TargetPushFailed) as failed:
        target.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    text = str(failed.value)
    assert failed.value.changed is False
    assert target.config.id in text and re.search(r"\b40[13]\b", text)
    assert clean_world._tokens[provider] not in text
    ci.reset_faults()
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") == held


def test_a_refused_second_delete_reports_that_the_target_changed(
    clean_world: World, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, name = split(project)
    ci, target = emulator(clean_world, project), clean_world.target(project)
    delete = target._delete_variable
    deleted: list[str] = []

    def revoke_before_the_second(variable: str, prepared: Any) -> None:
        if deleted:
            ci.revoke_token()
        delete(variable, prepared)
        deleted.append(variable)

    monkeypatch.setattr(target, "_delete_variable", revoke_before_the_second)
    with pytest.raises(TargetPushFailed) as failed:
        target.delete_variables(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert deleted == ["AWS_ACCESS_KEY_ID"] and failed.value.changed is True
    ci.reset_faults()
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") is None and ci.held_value(name, "AWS_SECRET_ACCESS_KEY")


def test_a_delete_retries_transient_errors_under_the_shared_policy(clean_world: World, project: str) -> None:
    _, name = split(project)
    ci, sleeps = emulator(clean_world, project), []
    # Any method: some providers delete with DELETE, others list first or rewrite a group with PUT.
    ci.inject("*", ".*", statuses=[503, 429], retry_after=2)
    build_target(clean_world, project, sleeps).delete_variables(["AWS_ACCESS_KEY_ID"])
    assert len(sleeps) == 2 and sleeps[1] == 2.0
    assert ci.held_value(name, "AWS_ACCESS_KEY_ID") is None

    ci.inject("*", ".*", statuses=[503] * 20)
    with pytest.raises(TransientError, match="HTTP 503"):
        build_target(clean_world, project, []).delete_variables(["AWS_SECRET_ACCESS_KEY"])
