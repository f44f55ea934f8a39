"""Operator input never pages HIGH (issue 13, finding 4): console input that is not the documented shape,
a resume of a rotation that succeeded or never existed, a free-text reason — each is refused with a LOW
alert naming the field and the documented input shape, and nothing is started, changed or paged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chalicelib.deps import get_deps
from chalicelib.workflow import alert, plan
from cli.__main__ import main as cli
from cli.errors import Exit
from local.world import World


def console_start(world: World, payload: Any) -> dict[str, Any]:
    """What an operator does in the Step Functions console: StartExecution with hand-typed input."""
    sfn = world.runtime.client("stepfunctions")
    # The console names an execution with a fresh UUID (moto would name every unnamed one "None").
    arn = sfn.start_execution(stateMachineArn=get_deps().settings.state_machine_arn, name=str(uuid.uuid4()),
                              input=json.dumps(payload))["executionArn"]
    return world.runtime.wait(arn)


def alerts_of(world: World, execution_arn: str) -> list[dict[str, Any]]:
    return [a for a in world.runtime.alerts() if a["message"].get("execution_arn") == execution_arn]


def executions(world: World) -> int:
    sfn = world.runtime.client("stepfunctions")
    return len(sfn.list_executions(stateMachineArn=get_deps().settings.state_machine_arn,
                                   maxResults=1000)["executions"])


def assert_low_refusal(world: World, result: dict[str, Any], *expected: str) -> dict[str, Any]:
    assert result["status"] == "FAILED"
    (sent,) = alerts_of(world, result["executionArn"])
    assert sent["severity"] == "LOW", sent
    assert sent["subject"].startswith("Rotation not started"), sent["subject"]
    assert "?" not in sent["subject"] and "rotate ?" not in json.dumps(sent["message"])
    cause = sent["message"]["cause"]
    assert "validation error" not in cause.lower() and "pydantic" not in cause.lower()
    for text in expected:
        assert text in cause, cause
    return sent


@pytest.mark.parametrize(("payload", "expected"), [
    ({"User": "ci-someone"}, ["user: required", "User: not a field of the input (field names are lower case)"]),
    ({}, ["user: required"]),
    ({"user": "ci-nobody-configured"}, ["user:", "ci-nobody-configured", "not in the rotation configuration"]),
    ({"user": "ci-x", "reason": "key looked old"}, ["reason: must be one of scheduled, manual, exposure",
                                                     "note"]),
])
def test_bad_console_input_is_a_low_alert_naming_the_field_and_the_shape(
        clean_world: World, user: str, payload: Any, expected: list[str]) -> None:
    # ``user``: a configuration exists (without one, every start fails HIGH, as it should).
    result = console_start(clean_world, payload)
    sent = assert_low_refusal(clean_world, result, *expected, plan.INPUT_SHAPE)
    assert sent["message"]["kind"] == "rotation-refused"


def test_input_that_is_not_an_object_fails_in_the_console_and_pages_no_one(clean_world: World, user: str) -> None:
    """Step Functions cannot put the Catch's error into an array input (ResultPath ``$.error``): the execution
    fails at once, in the console the operator is looking at, before Alert; so nothing is paged at all."""
    result = console_start(clean_world, [user])
    assert result["status"] == "FAILED"
    assert alerts_of(clean_world, result["executionArn"]) == []
    assert get_deps().ledger.rotations(user) == []


def test_a_free_text_reason_is_refused_but_a_note_is_carried(clean_world: World, user: str) -> None:
    note = "quarterly rotation, ticket OPS-1234"
    result = console_start(clean_world, {"user": user, "reason": "manual", "note": note})
    assert result["status"] == "SUCCEEDED"
    (done,) = [a for a in alerts_of(clean_world, result["executionArn"])
               if a["message"]["kind"] == "rotation-succeeded"]
    assert done["message"]["note"] == note
    (record,) = get_deps().ledger.rotations(user)
    assert record["note"] == note


def test_resume_of_a_succeeded_rotation_is_refused_without_touching_its_record(
        clean_world: World, user: str) -> None:
    rid = "manual-done-1"
    assert clean_world.rotate(user, rotation_id=rid)["status"] == "SUCCEEDED"
    ledger = get_deps().ledger
    before = ledger.rotation(user, rid)
    assert before["outcome"] == "succeeded"

    # Re-running the --resume command from an old alert, bypassing the CLI's own check (the console path).
    result = clean_world.rotate(user, rotation_id=rid, resume=True)

    sent = assert_low_refusal(clean_world, result, f"rotation {rid} succeeded", "record is unchanged")
    assert sent["message"]["error"] == "ResumeRefused"
    assert ledger.rotation(user, rid) == before, "the succeeded rotation's record is exactly as it was"
    assert ledger.lock_holder(user) is None


def test_resume_of_a_rotation_that_does_not_exist_is_refused_by_plan(clean_world: World, user: str) -> None:
    result = clean_world.rotate(user, rotation_id="manual-typo", resume=True)
    sent = assert_low_refusal(clean_world, result, "does not exist", f"ci-key-rotator history {user}")
    assert sent["message"]["error"] == "ResumeRefused"
    assert get_deps().ledger.rotations(user) == []


def test_cli_refuses_a_mistyped_resume_id_before_anything_starts(
        clean_world: World, user: str, capsys: pytest.CaptureFixture[str]) -> None:
    started, alerts = executions(clean_world), len(clean_world.runtime.alerts())
    assert cli(["rotate", user, "--resume", "manual-nope"]) == Exit.REFUSED
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{user} has no rotation 'manual-nope'" in err and f"ci-key-rotator history {user}" in err
    assert executions(clean_world) == started, "nothing started"
    assert len(clean_world.runtime.alerts()) == alerts, "nothing paged"


def test_cli_refuses_to_resume_a_succeeded_rotation(clean_world: World, user: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rid = "manual-done-2"
    assert clean_world.rotate(user, rotation_id=rid)["status"] == "SUCCEEDED"
    before = get_deps().ledger.rotation(user, rid)
    started = executions(clean_world)
    assert cli(["rotate", user, "--resume", rid]) == Exit.REFUSED
    err = capsys.readouterr().err
    assert f"rotation {rid} succeeded; nothing to resume" in err and "nothing was started" in err
    assert executions(clean_world) == started
    assert get_deps().ledger.rotation(user, rid) == before


def test_cli_note_reaches_the_record(clean_world: World, user: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["rotate", user, "--wait", "--timeout", "60", "--note", "after the contractor left"]) == 0
    (record,) = get_deps().ledger.rotations(user)
    assert record["note"] == "after the contractor left"


def test_alert_and_plan_agree_on_the_refusal_names() -> None:
    assert alert.OPERATOR_REFUSALS == plan.OPERATOR_REFUSALS
