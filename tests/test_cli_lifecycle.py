"""A rotation lifecycle an operator can read (issue 13, finding 3) and its outcomes in Slack (finding 6).

A rotation is *live* once the old key is Inactive: ``rotate --wait`` returns then (not after the recovery
window), having printed each state as it was entered; a "new key live" message goes to SNS and Slack at
that moment and the final one after the old key is deleted; ``status`` shows the key, what each target
holds, the recovery window, the next due date and the last failure with its cause.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.deps import get_deps
from cli.__main__ import main as cli
from local import moto_patches
from local.runtime import LocalRuntime
from local.world import World, target_id
from tests.conftest import new_user_name
from tests.invariants import alerts_for

#: A ten-hour recovery window at this scale is 72 real seconds: long enough to see the rotation live before
#: it ends, however loaded the machine; every Retry interval (seconds) stays negligible.
SCALE = 0.002


@pytest.fixture
def slow_waits(runtime: LocalRuntime) -> Iterator[None]:
    before = runtime.time_scale
    runtime.time_scale = SCALE
    moto_patches.set_time_scale(SCALE)
    yield
    runtime.time_scale = before
    moto_patches.set_time_scale(before)


def kinds(world: World, user: str) -> list[str]:
    return [a["message"]["kind"] for a in alerts_for(world, user)]


def slack_texts(runtime: LocalRuntime) -> list[str]:
    return [m["text"] for m in runtime.slack.messages]


def test_rotate_wait_returns_when_the_new_key_is_live_not_after_the_recovery_window(
        clean_world: World, slow_waits: None, capsys: pytest.CaptureFixture[str]) -> None:
    user = new_user_name()
    old = clean_world.add_user(user, [f"acme/{user}"], timings={"recovery_window": "10h"})

    assert cli(["rotate", user, "--wait", "--timeout", "60"]) == 0

    out = capsys.readouterr().out
    (arn,) = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("started: ")]
    sfn = clean_world.runtime.client("stepfunctions")
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING", "returned inside the recovery window"
    entered = [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]
    assert entered[:3] == ["IsPaced", "Plan", "CreateKey"] and "VerifyBuilds" in entered and "DeactivateOldKey" in entered
    (new,) = [k for k, s in clean_world.key_statuses(user).items() if s == "Active"]
    assert clean_world.key_statuses(user)[old] == "Inactive"
    live = [line for line in out.splitlines() if line.startswith("live: ")]
    assert live and f"{new} is Active and verified in every target" in live[0]
    assert f"old key {old} is Inactive and will be deleted at " in live[0]

    # The "new key live" message went out when the old key was deactivated; the final one not yet.
    assert "rotation-live" in kinds(clean_world, user) and "rotation-succeeded" not in kinds(clean_world, user)
    (live_alert,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "rotation-live"]
    assert live_alert["severity"] == "INFO" and live_alert["message"]["new_key_id"] == new
    assert any(f"New key live for {user}" in text for text in slack_texts(clean_world.runtime))

    assert cli(["status", user]) == 0
    status = capsys.readouterr().out
    assert f"{user}: {new} (0.0 d); last rotation live " in status, "not 'never rotated' while it is live"
    assert f"  targets: {target_id(f'acme/{user}')} holds {new}" in status
    assert "in its recovery window until " in status and f"old key {old} Inactive" in status
    assert "  next due: " in status and "rotate_after 30d" in status

    assert cli(["history", user]) == 0
    assert "in recovery window" in capsys.readouterr().out

    assert cli(["plan", user]) == 0
    plan = capsys.readouterr().out
    assert f"{user}: not due" in plan and f"blocked by: recovery window of {old} open until " in plan
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING", "all of the above inside the window"

    moto_patches.set_time_scale(0)  # the rest of the window passes at once
    assert clean_world.runtime.wait(arn, 60)["status"] == "SUCCEEDED"
    assert kinds(clean_world, user)[-1] == "rotation-succeeded", "the final message after the deletion"
    assert any(f"Rotated {user}" in text for text in slack_texts(clean_world.runtime))


def test_status_shows_the_last_failure_and_its_cause(clean_world: World, user: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    clean_world.github.fail_next_builds(f"acme/{user}", 1)
    assert cli(["rotate", user, "--wait", "--timeout", "60"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: VerificationFailed: " in out

    assert cli(["status", user]) == 0
    status = capsys.readouterr().out
    assert "  last failure: " in status and "VerificationFailed: " in status
    assert "(no cause recorded)" not in status
    (record,) = get_deps().ledger.rotations(user)
    assert record["cause"] and record["error"] == "VerificationFailed"


def test_outcomes_reach_slack_routed_by_severity(clean_world: World, user: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_ROTATION_SLACK_MIN_SEVERITY", "HIGH")
    before = len(clean_world.runtime.slack.messages)
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    clean_world.github.fail_next_builds(f"acme/{user}", 1)
    assert clean_world.rotate(user)["status"] == "FAILED"

    sent = clean_world.runtime.slack.messages[before:]
    mine = [m for m in sent if user in m["text"]]
    assert [m["text"].split("]")[0] for m in mine] == ["[HIGH"], "INFO successes stay out, the HIGH failure is in"
    (failure,) = mine
    assert failure["blocks"][0]["type"] == "header" and f"Rotation of {user} failed" in failure["text"]
