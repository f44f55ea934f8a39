"""One behavioural suite for every CI provider: each emulator in local/emulators runs it.

A provider passes when its target, against its emulator over real HTTP, upserts both variables, triggers a
build that really uses them, maps the build's end, verifies its signed webhooks (and refuses tampered or
replayed ones), survives 429/5xx, fails cleanly on a revoked token, and rotates end to end.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib.errors import TargetPushFailed, TransientError
from chalicelib.targets.base import Credentials, RunState, WebhookRejected
from chalicelib.targets.registry import provider as provider_class
from local.emulators.base import emulators
from local.world import World, split
from tests.conftest import new_user_name
from tests.invariants import assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere

PROVIDERS = sorted(emulators())


@pytest.fixture(params=PROVIDERS)
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


def fresh_key(world: World, project: str) -> Credentials:
    user = next(u for u, m in world.users.items() if project in m.repositories)
    key = world.runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
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
    deadline = time.monotonic() + 10
    while not ci.deliveries() and time.monotonic() < deadline:
        time.sleep(0.05)
    delivery = ci.deliveries()[-1]
    cls = provider_class(provider)
    key = ci.webhook_key()

    event = cls.parse_webhook(delivery["headers"], delivery["body"], key)
    assert event.run_id == run.run_id and event.status is not None and event.status.state is RunState.SUCCEEDED

    tampered = delivery["body"].replace(b"success", b"failure").replace(b"passed", b"failed") + b" "
    with pytest.raises(WebhookRejected) as refused:
        cls.parse_webhook(delivery["headers"], tampered, key)
    assert refused.value.status == 401

    ci.redeliver(delivery["id"])
    again = ci.deliveries()[-1]
    assert cls.parse_webhook(again["headers"], again["body"], key).delivery_id == event.delivery_id


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


def test_revoked_token_fails_the_push_without_showing_the_token(clean_world: World, project: str) -> None:
    provider, _ = split(project)
    target = clean_world.target(project)
    emulator(clean_world, project).revoke_token()
    with pytest.raises(TargetPushFailed) as failed:
        target.push(fresh_key(clean_world, project))
    assert clean_world._tokens[provider] not in str(failed.value)


def test_rotates_end_to_end(clean_world: World, project: str) -> None:
    user = next(u for u, m in clean_world.users.items() if project in m.repositories)

    assert clean_world.rotate(user)["status"] == "SUCCEEDED"

    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
