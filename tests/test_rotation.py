"""The rotation state machine, executed for real on moto against the GitHub emulator."""

from __future__ import annotations

import time
from datetime import timedelta

import boto3
import pytest

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.errors import TransientError
from local import sim_clock, strict
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import (
    alerts_for,
    assert_lock_released,
    assert_no_pipeline_holds_a_dead_key,
    assert_one_active_key_everywhere,
)


def states_entered(world: World, execution_arn: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in world.runtime.history(execution_arn)
            if e["type"].endswith("StateEntered")]


def test_adoption_replaces_a_hand_made_key(clean_world: World, user: str) -> None:
    (hand_made,) = clean_world.key_statuses(user)

    result = clean_world.rotate(user)

    assert result["status"] == "SUCCEEDED"
    new_key = assert_one_active_key_everywhere(clean_world, user)
    assert new_key != hand_made
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)
    rotation = get_deps().ledger.rotations(user)[-1]
    assert rotation["adoption"] is True and rotation["old_key_id"] == hand_made
    assert rotation["outcome"] == "succeeded"
    live, alert = alerts_for(clean_world, user)  # "new key live" when the old key went Inactive, then the end
    assert live["severity"] == "INFO" and live["message"]["kind"] == "rotation-live"
    assert alert["severity"] == "INFO" and alert["message"]["new_key_id"] == new_key


def test_second_rotation_retires_the_rotators_own_key(clean_world: World, user: str) -> None:
    clean_world.rotate(user)
    first = assert_one_active_key_everywhere(clean_world, user)

    result = clean_world.rotate(user)

    assert result["status"] == "SUCCEEDED"
    second = assert_one_active_key_everywhere(clean_world, user)
    assert second != first
    states = states_entered(clean_world, result["executionArn"])
    assert states == ["IsPaced", "Plan", "CreateKey", "AwaitKeyLive", "PushToTargets", "PushTarget", "IsEmergency", "VerifyBuilds",
                      "VerifyBuild", "DrainPeriod", "DrainCheck", "DeactivateOldKey", "RecoveryWindow",
                      "DeleteOldKey", "Report", "EmergencyCleanup", "RotationSucceeded"]
    assert get_deps().ledger.rotations(user)[-1]["adoption"] is False
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


def test_user_without_any_key_gets_a_first_one(clean_world: World) -> None:
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}"], initial_key=False)

    assert clean_world.rotate(name)["status"] == "SUCCEEDED"

    assert_one_active_key_everywhere(clean_world, name)
    assert_no_pipeline_holds_a_dead_key(clean_world, name)


def test_failed_verification_rolls_back(clean_world: World, user: str) -> None:
    clean_world.rotate(user)
    verified = assert_one_active_key_everywhere(clean_world, user)
    clean_world.github.fail_next_builds(f"acme/{user}", 1)

    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    states = states_entered(clean_world, result["executionArn"])
    assert "Rollback" in states and "DeactivateOldKey" not in states
    assert clean_world.key_statuses(user) == {verified: "Active"}, "new key deleted, old one untouched"
    assert clean_world.held_key(f"acme/{user}") == verified
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)
    failure = alerts_for(clean_world, user)[-1]
    assert failure["severity"] == "HIGH"
    assert failure["message"]["error"] == "VerificationFailed"
    assert failure["message"]["rollback"]["new_key_deleted"] is True
    assert failure["message"]["state_left_behind"]["every_target_holds_an_active_key"] is True


def test_verification_timeout_rolls_back(clean_world: World) -> None:
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}"])
    clean_world.rotate(name)
    verified = assert_one_active_key_everywhere(clean_world, name)
    # Short only now: the first rotation adopts a hand-made key, and a real build slower than 3 s on a loaded
    # machine would time it out and keep both keys (an adoption has no escrowed secret to restore).
    clean_world.users[name].timings["verify_timeout"] = "3s"
    clean_world.write_config()
    clean_world.github.hang_next_builds(f"acme/{name}", 1)

    result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(name) == {verified: "Active"}
    assert_no_pipeline_holds_a_dead_key(clean_world, name)
    assert alerts_for(clean_world, name)[-1]["message"]["error"] == "States.Timeout"


def test_partial_push_failure_restores_the_pushed_target(clean_world: World) -> None:
    name = new_user_name()
    first, second = f"acme/{name}-a", f"acme/{name}-b"
    clean_world.add_user(name, [first, second])
    clean_world.rotate(name)
    verified = assert_one_active_key_everywhere(clean_world, name)
    # The second repository refuses the new secret for good (the token lost access to it).
    clean_world.github.inject("PUT", rf"/repos/{second}/actions/secrets/.*", statuses=[404] * 10)

    result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(name) == {verified: "Active"}
    assert clean_world.held_key(first) == verified, "the target that took the new key got the old one back"
    assert clean_world.held_key(second) == verified
    assert_no_pipeline_holds_a_dead_key(clean_world, name)
    failure = alerts_for(clean_world, name)[-1]
    assert failure["message"]["error"] == "TargetPushFailed"
    assert f"{name}-b" in failure["message"]["cause"]


def test_failed_adoption_keeps_both_keys_when_the_old_secret_is_unknown(clean_world: World, user: str) -> None:
    (hand_made,) = clean_world.key_statuses(user)
    clean_world.github.fail_next_builds(f"acme/{user}", 1)

    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    statuses = clean_world.key_statuses(user)
    assert statuses[hand_made] == "Active" and len(statuses) == 2, "nothing deactivated, nothing deleted"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    failure = alerts_for(clean_world, user)[-1]
    assert failure["message"]["rollback"]["not_restored"], "the alert says the target could not be restored"


def test_duplicate_trigger_does_not_start_a_second_rotation(clean_world: World, user: str) -> None:
    first = clean_world.start_rotation(user, rotation_id="sched-20261122T10")
    again = clean_world.start_rotation(user, rotation_id="sched-20261122T10")

    assert not first.duplicate and again.duplicate
    assert again.execution_arn == first.execution_arn
    executions = clean_world.runtime.client("stepfunctions").list_executions(
        stateMachineArn=clean_world.runtime.state_machine_arn)["executions"]
    assert [e["name"] for e in executions].count(f"{user}-sched-20261122T10") == 1
    assert clean_world.runtime.wait(first.execution_arn)["status"] == "SUCCEEDED"
    assert len(get_deps().ledger.rotations(user)) == 1
    assert_one_active_key_everywhere(clean_world, user)


def test_concurrent_trigger_is_refused_by_the_lock(clean_world: World, user: str) -> None:
    clean_world.github.hang_next_builds(f"acme/{user}", 1)
    # The first rotation holds the lock while it waits on its hung build, until its verification times out
    # (real seconds): far longer than a loaded machine can take to run the second one's Plan.
    clean_world.users[user].timings["verify_timeout"] = "120s"
    clean_world.write_config()
    running = clean_world.start_rotation(user)
    deadline = time.monotonic() + 60
    while "VerifyBuild" not in states_entered(clean_world, running.execution_arn):  # it holds the lock now
        assert time.monotonic() < deadline, states_entered(clean_world, running.execution_arn)
        time.sleep(0.05)

    second = clean_world.rotate(user)

    assert second["status"] == "FAILED"
    assert states_entered(clean_world, second["executionArn"]) == ["IsPaced", "Plan", "Alert", "RotationFailed"]
    assert get_deps().ledger.lock_holder(user)["rotation_id"] == running.rotation_id, "lock not stolen"
    assert states_entered(clean_world, running.execution_arn)[-1] == "VerifyBuild", "refused while it held it"
    refused = alerts_for(clean_world, user)[-1]
    assert refused["message"]["error"] == "RotationInProgress" and refused["severity"] == "LOW"
    # Not two minutes for the hung build's timeout: the operator stops the first rotation, and its parked
    # verification is taken off the poller's list.
    clean_world.runtime.client("stepfunctions").stop_execution(executionArn=running.execution_arn, cause="test")
    clean_world.runtime.wait(running.execution_arn)
    ledger = get_deps().ledger
    for parked in [c for c in ledger.callbacks() if c["rotation_id"] == running.rotation_id]:
        ledger.delete_callback(parked["provider"], parked["run_id"])
    assert_no_pipeline_holds_a_dead_key(clean_world, user)


def test_two_active_keys_are_refused_and_nothing_is_deleted(clean_world: World, user: str) -> None:
    clean_world.runtime.client("iam").create_access_key(UserName=user)
    before = clean_world.key_statuses(user)

    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(user) == before
    failure = alerts_for(clean_world, user)[-1]
    assert failure["message"]["error"] == "UnsafeKeyState" and failure["severity"] == "HIGH"
    assert_lock_released(user)


def test_unknown_inactive_key_is_left_alone(clean_world: World, user: str) -> None:
    iam = clean_world.runtime.client("iam")
    stray = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName=user, AccessKeyId=stray, Status="Inactive")
    before = clean_world.key_statuses(user)

    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(user) == before
    assert "did not retire" in alerts_for(clean_world, user)[-1]["message"]["cause"]


def test_leftover_retired_key_is_deleted_by_id_first(clean_world: World, user: str, runtime) -> None:
    clean_world.rotate(user)
    retiring = assert_one_active_key_everywhere(clean_world, user)

    def delete_step_crashes(event: object) -> None:
        raise RuntimeError("DeleteOldKey never ran (the execution was stopped in its recovery window)")

    runtime.inject_fault("delete_old_key", delete_step_crashes)
    interrupted = clean_world.rotate(user)
    assert interrupted["status"] == "FAILED"
    statuses = clean_world.key_statuses(user)
    assert statuses[retiring] == "Inactive" and len(statuses) == 2

    result = clean_world.rotate(user)

    assert result["status"] == "SUCCEEDED"
    assert retiring not in clean_world.key_statuses(user)
    assert_one_active_key_everywhere(clean_world, user)


def test_webhook_lost_the_poller_confirms(clean_world: World, user: str) -> None:
    clean_world.github.drop_webhooks = True

    result = clean_world.rotate(user)

    assert result["status"] == "SUCCEEDED"
    rotation = get_deps().ledger.rotation(user, get_deps().ledger.rotations(user)[-1]["rotation_id"])
    (target,) = rotation["targets"].values()
    assert target["resolved_by"] == "poller"


@pytest.mark.parametrize("step", ["plan", "create_key", "await_key_live", "push_target", "verify_build",
                                  "drain_check", "deactivate_old_key", "delete_old_key", "report"])
def test_every_step_survives_a_crash_after_its_side_effects(clean_world: World, runtime, step: str) -> None:
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}"])
    clean_world.rotate(name)

    def crash(result: object) -> None:
        raise TransientError(f"{step} crashed after doing its work")

    runtime.inject_fault(step, crash, after=True)
    result = clean_world.rotate(name)

    assert result["status"] == "SUCCEEDED", step
    assert runtime.invocations[step] >= 2
    assert_one_active_key_everywhere(clean_world, name)
    assert_no_pipeline_holds_a_dead_key(clean_world, name)
    created = [k for k in get_deps().ledger.keys(name).values() if k.get("origin") == "created"]
    assert len(created) == 2, "a retried step created no extra key"


def test_unknown_consumer_of_the_old_key_stops_before_deactivation(clean_world: World, user: str, runtime) -> None:
    (hand_made,) = clean_world.key_statuses(user)
    # A forgotten cron job on some server kept a copy of the hand-made key and uses it after the push.
    stray = boto3.session.Session(aws_access_key_id=hand_made, region_name="us-east-1",
                                  aws_secret_access_key=_hand_made_secret(user, hand_made))

    def cron_job_used_it(event: dict) -> None:
        # AWS reports a use to the minute and late. The job's use must fall in a minute after the push and
        # at least the last-used lag before the check: the compressed world cannot let a real minute pass,
        # so it moves the push two minutes back and the simulated clock forward by the lag.
        ledger, rotation_id = get_deps().ledger, event["rotation_id"]
        for pushed in ledger.rotation(user, rotation_id)["targets"]:
            ledger.set_target(user, rotation_id, pushed, pushed_at=clock.iso(clock.now() - timedelta(minutes=2)))
        stray.client("sts", endpoint_url=runtime.endpoint).get_caller_identity()
        sim_clock.advance(strict.current().last_used_lag_seconds)

    runtime.inject_fault("drain_check", cron_job_used_it)

    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    statuses = clean_world.key_statuses(user)
    assert statuses[hand_made] == "Active", "the key someone still uses was not deactivated"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert alerts_for(clean_world, user)[-1]["message"]["error"] == "UnknownConsumer"


def _hand_made_secret(user: str, key_id: str) -> str:
    from moto.iam.models import iam_backends

    for account in iam_backends.values():
        for backend in account.values():
            for key in backend.users[user].access_keys if user in backend.users else []:
                if key.access_key_id == key_id:
                    return key.secret_access_key
    raise LookupError(key_id)


def test_a_green_build_that_never_used_the_new_key_does_not_retire_the_old_one(clean_world: World) -> None:
    """An environment secret of the same name shadows the repository secret the rotator pushes."""
    from chalicelib.targets.base import Credentials
    from chalicelib.targets.github import GitHubTarget, GitHubTargetConfig

    name = new_user_name()
    repo = f"acme/{name}"
    clean_world.github.add_repository(repo, workflows={"rotate-verify.yml": "production"})
    clean_world.users[name] = __import__("local.world", fromlist=["ManagedUser"]).ManagedUser(name, [repo])
    iam = clean_world.runtime.client("iam")
    iam.create_user(UserName=name, Path=clean_world.runtime.names.managed_path)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    clean_world.write_config()
    credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    clean_world.target(repo).push(credentials)
    environment = GitHubTargetConfig.model_validate({**clean_world.target_config(repo), "scope": "environment",
                                                     "environment": "production"})
    GitHubTarget(environment, clean_world._tokens["github"]).push(credentials)  # the forgotten copy

    result = clean_world.rotate(name)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(name)[key["AccessKeyId"]] == "Active", "the key builds really use stays on"
    failure = alerts_for(clean_world, name)[-1]
    assert failure["message"]["error"] == "VerificationFailed" and "shadow" in failure["message"]["cause"]
