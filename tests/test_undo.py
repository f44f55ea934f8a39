"""``undo USER`` (issue 13): inside a rotation's recovery window, the old key back on every target.

The undo state machine (statemachine/undo.asl.json) re-activates the retired key by id, pushes its
escrowed secret back to every target, proves it with a build per target, and only then deactivates the
new key. A failed verification leaves the new key Active and every target back on it, with an alert;
a request that cannot be honoured is refused LOW before anything changes.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.deps import get_deps
from cli.__main__ import main as cli
from cli.errors import Exit
from local import moto_patches, sim_clock
from local.runtime import LocalRuntime
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_lock_released, assert_no_pipeline_holds_a_dead_key

#: A ten-hour recovery window at this scale is 72 real seconds: the rotation stays in it while the undo
#: pushes and verifies; every Retry interval (seconds) stays negligible.
SCALE = 0.002


@contextmanager
def slowed(runtime: LocalRuntime) -> Iterator[None]:
    before = runtime.time_scale
    runtime.time_scale = SCALE
    moto_patches.set_time_scale(SCALE)
    try:
        yield
    finally:
        runtime.time_scale = before
        moto_patches.set_time_scale(before)


@pytest.fixture
def slow_waits(runtime: LocalRuntime) -> Iterator[None]:
    with slowed(runtime):
        yield


def exercise_undo(world: World, runtime: LocalRuntime) -> None:
    """One undo that succeeds and one whose verification fails: every undo function runs (used by
    tests/deploy/test_function_identities.py, which checks each function's calls against its policy)."""
    with slowed(runtime):
        for fail in (False, True):
            user, repositories, _, _ = live_rotation(world, repos=1)
            if fail:
                world.github.fail_next_builds(repositories[0], 1)
            assert start_undo(runtime, {"user": user})["status"] == ("FAILED" if fail else "SUCCEEDED")


def live_rotation(world: World, repos: int = 2, window: str = "10h") -> tuple[str, list[str], str, str]:
    """A user whose rotation is live: (user, repositories, old key id, new key id)."""
    user = new_user_name("undo")
    repositories = [f"acme/{user}-{i}" for i in range(repos)]
    world.add_user(user, repositories, timings={"recovery_window": "0s"})
    # The first rotation adopts the hand-made key (no escrowed secret to go back to); the second is undoable.
    assert world.rotate(user)["status"] == "SUCCEEDED"
    (old,) = world.key_statuses(user)
    world.users[user].timings["recovery_window"] = window
    world.write_config()
    assert cli(["rotate", user, "--wait", "--timeout", "60"]) == 0
    (new,) = [k for k, s in world.key_statuses(user).items() if s == "Active"]
    assert world.key_statuses(user) == {old: "Inactive", new: "Active"}
    return user, repositories, old, new


def start_undo(runtime: LocalRuntime, payload: Any) -> dict[str, Any]:
    """As an operator would from the Step Functions console."""
    sfn = runtime.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=runtime.undo_state_machine_arn, name=f"console-{secrets.token_hex(4)}",
                              input=json.dumps(payload))["executionArn"]
    return runtime.wait(arn, 60)


def rotation_execution(user: str) -> str:
    rotation = [r for r in get_deps().ledger.rotations(user) if r.get("kind") != "undo"][-1]
    return str(rotation["execution_arn"])


def end_recovery_window(runtime: LocalRuntime, user: str) -> None:
    """Stop the user's rotation, still in its recovery window (hours, slept at SCALE), before the test ends:
    left running it would move the process's simulated clock by those hours, and delete the old key, in
    whatever test runs when its Wait ends."""
    arn = rotation_execution(user)
    running = sim_clock.running()
    sfn = runtime.client("stepfunctions")
    if sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
        return
    sfn.stop_execution(executionArn=arn, cause="the test is over")
    assert runtime.wait(arn, 30)["status"] == "ABORTED"
    deadline = time.monotonic() + 30
    while sim_clock.running() >= running and time.monotonic() < deadline:  # its thread ends after its Wait
        time.sleep(0.02)


def test_undo_inside_the_recovery_window_puts_every_target_back_on_the_verified_old_key(
        clean_world: World, slow_waits: None, capsys: pytest.CaptureFixture[str]) -> None:
    user, repositories, old, new = live_rotation(clean_world)
    capsys.readouterr()

    assert cli(["undo", user, "--wait", "--timeout", "90"]) == 0

    out = capsys.readouterr().out
    entered = [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]
    assert entered[:2] == ["UndoPlan", "UndoReactivateOldKey"] and entered[-2:] == ["UndoDeactivateNewKey", "UndoSucceeded"]
    assert f"undone: {old} is Active and verified in every target" in out
    assert clean_world.key_statuses(user) == {old: "Active", new: "Inactive"}
    for repo in repositories:
        assert clean_world.held_key(repo) == old
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    # Every target passed a verification build with the old key before the new one was switched off.
    undo = [r for r in get_deps().ledger.history(user) if r.get("kind") == "undo"][-1]
    assert {t["verified"] for t in undo["targets"].values()} == {True} and len(undo["targets"]) == len(repositories)
    assert {t["pushed_key_id"] for t in undo["targets"].values()} == {old}
    # The rotation waiting out its window was stopped: it would delete the key the undo brought back.
    sfn = clean_world.runtime.client("stepfunctions")
    assert sfn.describe_execution(executionArn=rotation_execution(user))["status"] == "ABORTED"
    assert get_deps().ledger.rotation(user, undo["undoes"])["outcome"] == "undone"
    assert_lock_released(user)
    kinds = [(a["message"]["kind"], a["severity"]) for a in alerts_for(clean_world, user)]
    assert ("undo-succeeded", "INFO") in kinds and not [k for k in kinds if k[1] in ("HIGH", "CRITICAL")]

    # status and history read the undo's record like a rotation's.
    assert cli(["status", user]) == 0 and cli(["history", user]) == 0
    assert f"{user}: {old}" in capsys.readouterr().out

    # Done once: a second undo is refused and changes nothing.
    assert cli(["undo", user]) == Exit.REFUSED
    assert "was undone already" in capsys.readouterr().err
    assert clean_world.key_statuses(user) == {old: "Active", new: "Inactive"}


def test_a_failed_verification_leaves_the_new_key_active_and_every_target_back_on_it(
        clean_world: World, slow_waits: None, capsys: pytest.CaptureFixture[str]) -> None:
    user, repositories, old, new = live_rotation(clean_world)
    clean_world.github.fail_next_builds(f"acme/{user}-0", 1)

    assert cli(["undo", user, "--wait", "--timeout", "90"]) == Exit.FAILED

    assert "FAILED: VerificationFailed" in capsys.readouterr().out
    assert clean_world.key_statuses(user) == {old: "Inactive", new: "Active"}
    for repo in repositories:
        assert clean_world.held_key(repo) == new
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    (alert,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "undo-failed"]
    assert alert["severity"] == "HIGH" and alert["message"]["error"] == "VerificationFailed"
    assert alert["message"]["rollback"]["not_restored"] == []
    assert sorted(alert["message"]["rollback"]["restored"]) == sorted(alert["message"]["state_left_behind"]["targets"])
    assert alert["message"]["state_left_behind"]["every_target_holds_an_active_key"] is True
    assert_lock_released(user)
    assert cli(["status", user]) == 0
    assert "last failure: " in capsys.readouterr().out
    # The old key is Inactive inside its recovery window again, as the rotation left it.
    record = get_deps().ledger.key(user, old)
    assert record["status"] == "retired"


def _live(world: World, user: str, timeout: float = 60) -> bool:
    """Wait until the user's rotation retired its old key (it then waits out its recovery window)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.get("deactivated_at") for r in get_deps().ledger.rotations(user)):
            return True
        time.sleep(0.2)
    return False


def test_refusals_change_nothing_and_page_no_one(clean_world: World, slow_waits: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    runtime = clean_world.runtime
    # No rotation at all.
    user = new_user_name("undo")
    key = clean_world.add_user(user, [f"acme/{user}"])
    assert cli(["undo", user]) == Exit.REFUSED
    assert "no rotation in its recovery window" in capsys.readouterr().err
    assert start_undo(runtime, {"user": user})["status"] == "FAILED"
    (refusal,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "undo-refused"]
    assert refusal["severity"] == "LOW" and refusal["message"]["error"] == "NothingToUndo"
    assert clean_world.key_statuses(user) == {key: "Active"} and get_deps().ledger.rotations(user) == []

    # The first rotation adopted a hand-made key: the escrow has no secret of it to restore.
    adopted = new_user_name("undo")
    # Long enough (slept at SCALE: about 3 min) that no loaded machine gets through this part before the
    # rotation would delete the old key at the window's end.
    hand_made = clean_world.add_user(adopted, [f"acme/{adopted}"], timings={"recovery_window": "24h"})
    assert clean_world.start_rotation(adopted) and _live(clean_world, adopted)
    before = clean_world.key_statuses(adopted)
    assert before[hand_made] == "Inactive"
    assert cli(["undo", adopted]) == Exit.REFUSED
    assert "was made by hand and adopted" in capsys.readouterr().err
    assert start_undo(runtime, {"user": adopted})["status"] == "FAILED"
    assert [a["severity"] for a in alerts_for(clean_world, adopted) if a["message"]["kind"] == "undo-refused"] == ["LOW"]
    assert clean_world.key_statuses(adopted) == before
    end_recovery_window(runtime, adopted)

    # The old key was deleted when the window ended (a window of 0 s: the rotation ran to its end).
    gone = new_user_name("undo")
    old = clean_world.add_user(gone, [f"acme/{gone}"])
    assert clean_world.rotate(gone)["status"] == "SUCCEEDED"
    before = clean_world.key_statuses(gone)
    assert old not in before
    assert cli(["undo", gone]) == Exit.REFUSED
    assert f"key {old} of '{gone}' was deleted" in capsys.readouterr().err
    assert start_undo(runtime, {"user": gone})["status"] == "FAILED"
    (refusal,) = [a for a in alerts_for(clean_world, gone) if a["message"]["kind"] == "undo-refused"]
    assert refusal["severity"] == "LOW" and refusal["message"]["error"] == "OldKeyDeleted"
    assert clean_world.key_statuses(gone) == before

    # A rotation in progress holds the user's lock.
    deps = get_deps()
    deps.ledger.acquire_lock(gone, "manual-inflight", "arn:aws:states:::execution:x:y", timedelta(hours=1))
    try:
        assert cli(["undo", gone]) == Exit.REFUSED
        assert "is being rotated by manual-inflight" in capsys.readouterr().err
        assert start_undo(runtime, {"user": gone})["status"] == "FAILED"
        errors = [a["message"]["error"] for a in alerts_for(clean_world, gone) if a["severity"] == "LOW"]
        assert errors[-1] == "RotationInProgress"
        assert deps.ledger.lock_holder(gone)["rotation_id"] == "manual-inflight", "the running rotation keeps it"
    finally:
        deps.ledger.release_lock(gone, "manual-inflight")
    assert clean_world.key_statuses(gone) == before

    # Console input that is not the documented shape.
    since = len(runtime.alerts())  # the session's alerts: only this refusal's
    assert start_undo(runtime, {"User": gone})["status"] == "FAILED"
    (bad,) = [a for a in runtime.alerts()[since:] if a["message"].get("kind") == "undo-refused"
              and a["message"]["error"] == "InvalidExecutionInput"]
    assert bad["severity"] == "LOW" and "field 'user'" in bad["message"]["cause"]
    assert not [a for a in alerts_for(clean_world, gone) if a["severity"] in ("HIGH", "CRITICAL")]


def test_the_new_key_is_never_deactivated_before_every_target_verified_the_old_one(
        clean_world: World, slow_waits: None) -> None:
    """Invariant 1 enforced by the task itself, not only by the state machine's order: run out of order
    (a console redrive, a bug in the definition), UndoDeactivateNewKey refuses and changes nothing."""
    from chalicelib.errors import InterlockViolation
    from chalicelib.workflow import undo_deactivate_new_key
    from chalicelib.workflow.undo_state import UndoState

    user, repositories, old, new = live_rotation(clean_world, repos=1)
    rotation = [r for r in get_deps().ledger.rotations(user) if r.get("kind") != "undo"][-1]
    state = UndoState(user=user, undo_id="undo-out-of-order", rotation_id=rotation["rotation_id"],
                      old_key_id=old, new_key_id=new, targets=[])
    with pytest.raises(InterlockViolation, match="have not verified"):
        undo_deactivate_new_key.run(state.out(), get_deps())
    assert clean_world.key_statuses(user) == {old: "Inactive", new: "Active"}
    assert clean_world.held_key(repositories[0]) == new
    end_recovery_window(clean_world.runtime, user)


def test_an_undo_is_the_rotators_own_change_and_raises_no_audit_finding(clean_world: World, slow_waits: None) -> None:
    """Each key change of an undo is made by a rotator function after it recorded its intent: the audit
    (CloudTrail → EventBridge → audit Lambda) tells it from the same change by anyone else."""
    runtime = clean_world.runtime
    user, _, old, new = live_rotation(clean_world, repos=1)
    runtime.enable_audit()
    try:
        runtime.bus.drain()
        since = len(runtime.alerts())
        assert start_undo(runtime, {"user": user})["status"] == "SUCCEEDED"
        runtime.bus.drain()
    finally:
        runtime.disable_audit()
    changed = {(e["detail"]["requestParameters"].get("accessKeyId"), e["detail"]["requestParameters"].get("status"))
               for name, e in runtime.bus.delivered if name == "audit" and e["detail"].get("eventName") == "UpdateAccessKey"
               and (e["detail"].get("requestParameters") or {}).get("userName") == user}
    assert {(old, "Active"), (new, "Inactive")} <= changed, "both changes reached the audit Lambda"
    findings = [a for a in runtime.alerts()[since:]
                if str(a["message"].get("detection", "")).startswith(("key-lifecycle.", "self-protection."))
                and user in a["message"].get("summary", "")]
    assert findings == []
