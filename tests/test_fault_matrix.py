"""Every step × every fault, on the real state machine. After each: invariant 1, no more Active keys
than expected, nothing deleted that the rotator did not create, an alert for every failure, the lock
released, and a retry of the rotation succeeds. The matrix is printed at the end of the test run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from chalicelib.deps import get_deps
from chalicelib.errors import TransientError
from local.runtime import LocalRuntime
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import (
    alerts_for,
    assert_lock_released,
    assert_no_pipeline_holds_a_dead_key,
    assert_one_active_key_everywhere,
)

#: (step, fault) -> outcome, printed by tests/conftest.py's terminal summary.
MATRIX: dict[tuple[str, str], str] = {}

STEPS = ["plan", "create_key", "await_key_live", "push_target", "verify_build", "drain_check",
         "deactivate_old_key", "delete_old_key", "report"]
#: Steps after which every target holds the verified new key: a failure there is resumed, not rolled back.
AFTER_VERIFICATION = {"drain_check", "deactivate_old_key", "delete_old_key", "report"}


class PermanentFault(Exception):
    """A bug or a refusal that no retry fixes."""


class LambdaTimeout(Exception):
    """The function ran out of time mid-step; Step Functions reports it as ``Sandbox.Timedout``."""

    error_type = "Sandbox.Timedout"


@dataclass(frozen=True)
class Fault:
    name: str
    exception: type[Exception]
    times: int
    after: bool
    recovers: bool


FAULTS = [
    Fault("throttled/5xx, recovers", TransientError, times=2, after=False, recovers=True),
    Fault("crash after side effects, re-run", TransientError, times=1, after=True, recovers=True),
    Fault("Lambda timeout, re-run", LambdaTimeout, times=1, after=False, recovers=True),
    Fault("permanent error", PermanentFault, times=100, after=False, recovers=False),
]


def rotated_user(world: World, targets: int = 2) -> str:
    """A user rotated once already (so the escrow holds its current secret), with ``targets`` repositories."""
    name = new_user_name("fm")
    world.add_user(name, [f"acme/{name}-{chr(97 + i)}" for i in range(targets)])
    assert world.rotate(name)["status"] == "SUCCEEDED"
    return name


def assert_nothing_deleted_that_the_rotator_did_not_create(before: set[str], world: World, user: str) -> None:
    gone = before - set(world.key_statuses(user))
    known = get_deps().ledger.keys(user)
    for key_id in gone:
        assert known.get(key_id, {}).get("origin") in ("created", "adopted"), f"{key_id} deleted"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
@pytest.mark.parametrize("step", STEPS)
def test_fault(clean_world: World, runtime: LocalRuntime, step: str, fault: Fault) -> None:
    # Two targets where a step runs once per target; one elsewhere keeps the matrix fast.
    user = rotated_user(clean_world, targets=2 if step in ("push_target", "verify_build") else 1)
    before = set(clean_world.key_statuses(user))
    alerts_before = len(alerts_for(clean_world, user))

    def inject(_: object) -> None:
        raise fault.exception(f"injected into {step}: {fault.name}")

    runtime.inject_fault(step, inject, times=fault.times, after=fault.after)
    started = clean_world.start_rotation(user)
    result = runtime.wait(started.execution_arn)
    runtime.clear_faults()

    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_nothing_deleted_that_the_rotator_did_not_create(before, clean_world, user)
    assert_lock_released(user)
    active = [k for k, s in clean_world.key_statuses(user).items() if s == "Active"]
    if fault.recovers:
        assert result["status"] == "SUCCEEDED", f"{step}: {fault.name}"
        assert_one_active_key_everywhere(clean_world, user)
        MATRIX[(step, fault.name)] = "recovered"
        return

    assert result["status"] == "FAILED"
    alert = alerts_for(clean_world, user)[alerts_before:][-1]
    assert alert["severity"] in ("HIGH", "CRITICAL") and alert["message"]["error"] == "PermanentFault"
    resumable = step in AFTER_VERIFICATION
    assert len(active) <= 2 if resumable else active == list(before), active
    # The alert says how to go on; doing what it says succeeds.
    retry = clean_world.start_rotation(user, rotation_id=started.rotation_id if resumable else None,
                                       resume=resumable)
    retried = runtime.wait(retry.execution_arn)
    assert retried["status"] == "SUCCEEDED", (alert["message"]["next_step"], alerts_for(clean_world, user)[-1]["message"]["cause"])
    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    how = "resumed" if resumable else ("nothing changed" if step == "plan" else "rolled back")
    MATRIX[(step, fault.name)] = f"alert, {how}; retry ok"


def test_key_deleted_out_of_band_mid_rotation(clean_world: World, runtime: LocalRuntime) -> None:
    user = rotated_user(clean_world)
    (old,) = clean_world.key_statuses(user)

    def someone_deletes_the_new_key(event: dict) -> None:
        clean_world.runtime.client("iam").delete_access_key(UserName=user, AccessKeyId=event["new_key_id"])

    runtime.inject_fault("verify_build", someone_deletes_the_new_key)
    result = clean_world.rotate(user)
    runtime.clear_faults()

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(user) == {old: "Active"}
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    MATRIX[("IAM key deleted out of band", "during verification")] = "alert, rolled back; retry ok"


def test_ci_token_revoked(clean_world: World) -> None:
    # One target: with two, the Map's other iteration may still be mid-push when Rollback runs (Step Functions
    # does not stop an in-flight Lambda), and a target that may hold the new key and cannot be restored keeps
    # the new key Active on purpose (invariant 1) — safe, but not "nothing changed".
    user = rotated_user(clean_world, targets=1)
    before = clean_world.key_statuses(user)
    clean_world.github.revoke_token()
    result = clean_world.rotate(user)
    clean_world.github.reset_faults()

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(user) == before
    assert alerts_for(clean_world, user)[-1]["message"]["error"] == "TargetPushFailed"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    MATRIX[("CI token revoked", "push")] = "alert, nothing changed; retry ok"


def test_escrow_unreadable(clean_world: World, runtime: LocalRuntime) -> None:
    user = rotated_user(clean_world)
    before = clean_world.key_statuses(user)
    escrow = get_deps().escrow.secret_id(user)

    def escrow_lost(_: object) -> None:
        runtime.client("secretsmanager").delete_secret(SecretId=escrow, ForceDeleteWithoutRecovery=True)

    runtime.inject_fault("create_key", escrow_lost, after=True)
    result = clean_world.rotate(user)

    assert result["status"] == "FAILED"
    assert clean_world.key_statuses(user) == before, "the new key, whose secret is lost, was deleted"
    assert alerts_for(clean_world, user)[-1]["message"]["error"] == "EscrowError"
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    MATRIX[("escrow unreadable", "after CreateKey")] = "alert, rolled back; retry ok"


def test_two_triggers_at_once(clean_world: World) -> None:
    user = rotated_user(clean_world)
    first = clean_world.start_rotation(user)
    second = clean_world.start_rotation(user)
    results = [clean_world.runtime.wait(s.execution_arn)["status"] for s in (first, second)]

    assert sorted(results) == ["FAILED", "SUCCEEDED"]
    assert_one_active_key_everywhere(clean_world, user)
    refused = [a for a in alerts_for(clean_world, user) if a["message"].get("error") == "RotationInProgress"]
    assert refused and refused[-1]["severity"] == "LOW"
    MATRIX[("two triggers at once", "-")] = "one rotates, the other is refused (LOW alert)"


def test_operator_stops_the_execution_during_verification(clean_world: World) -> None:
    user = rotated_user(clean_world)
    (old,) = clean_world.key_statuses(user)
    clean_world.github.hang_next_builds(f"acme/{user}-a", 1)
    started = clean_world.start_rotation(user)
    sfn = clean_world.runtime.client("stepfunctions")
    deadline = time.monotonic() + 60  # a loaded machine may take long to get there; it must, though
    while not any(c["user"] == user for c in get_deps().ledger.callbacks()):  # parked on its hung build
        assert time.monotonic() < deadline, "the rotation never waited on its verification build"
        time.sleep(0.05)

    sfn.stop_execution(executionArn=started.execution_arn, cause="operator")
    # AWS says ABORTED; moto says FAILED for an execution stopped while it waits on a task token. What
    # matters: it ends at once (well before its 60 s verification timeout) and no later state (Rollback,
    # Alert) runs.
    assert clean_world.runtime.wait(started.execution_arn, timeout=30)["status"] in ("ABORTED", "FAILED")
    entered = [e["stateEnteredEventDetails"]["name"] for e in clean_world.runtime.history(started.execution_arn)
               if e["type"].endswith("StateEntered")]
    assert "Rollback" not in entered and "Alert" not in entered
    assert_no_pipeline_holds_a_dead_key(clean_world, user)  # both keys still Active

    result = clean_world.rotate(user)

    assert result["status"] == "SUCCEEDED", "the next rotation took the stale lock and undid the abandoned one"
    assert old not in clean_world.key_statuses(user)
    assert_one_active_key_everywhere(clean_world, user)
    assert get_deps().ledger.rotation(user, started.rotation_id)["outcome"] == "abandoned"
    MATRIX[("stopped by an operator", "during verification")] = "next rotation undoes it and succeeds"
