"""The graduation path as an operator sees it (issue 15): ``plan`` says per target whether it can graduate
and what blocks it, ``graduate USER [TARGET]`` starts it (refusing first what the state machine would
refuse), ``status`` shows graduated targets and the keys left, and Slack/SNS say when a user reached zero keys.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib.deps import get_deps
from cli.__main__ import main as cli
from cli.errors import Exit
from local.world import World, target_id
from tests.conftest import new_user_name
from tests.invariants import alerts_for


def test_plan_lists_each_target_as_graduable_or_blocked_with_the_reason(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    user = new_user_name("gradcli")
    github, travis = f"acme/{user}", f"travis:acme/{user}"
    clean_world.add_user(user, [github, travis])
    capsys.readouterr()

    # The hand-made key: nothing can graduate yet, and plan says why for each target.
    assert cli(["plan", user]) == 0
    out = capsys.readouterr().out
    assert f"graduation: {target_id(github)} blocked" in out and f"graduation: {target_id(travis)} blocked" in out
    assert "travis issues no OIDC ID token to its builds" in out
    assert "rotate the user once first" in out

    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    assert cli(["plan", user, "--json"]) == 0
    (verdict,) = json.loads(capsys.readouterr().out)
    rows = {row["target_id"]: row for row in verdict["graduation"]}
    assert rows[target_id(github)]["verdict"] == "can graduate"
    assert rows[target_id(github)]["subject"] == f"repo:{github}:ref:refs/heads/main"
    assert rows[target_id(travis)]["verdict"] == "blocked"
    assert rows[target_id(travis)]["blocked_by"][0].startswith("travis issues no OIDC ID token")
    assert cli(["plan", user]) == 0
    assert f"ci-key-rotator graduate {user} {target_id(github)}" in capsys.readouterr().out


def test_graduate_refuses_before_anything_starts(clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    user = new_user_name("gradcli")
    repo = f"acme/{user}"
    clean_world.add_user(user, [repo])
    sfn = clean_world.runtime.client("stepfunctions")
    machine = clean_world.runtime.graduate_state_machine_arn

    def started() -> int:
        return len(sfn.list_executions(stateMachineArn=machine)["executions"])

    before = started()
    assert cli(["graduate", "nobody-here"]) == Exit.CONFIG
    assert cli(["graduate", user]) == Exit.REFUSED
    assert "no target of" in capsys.readouterr().err
    assert cli(["graduate", user, "no-such-target"]) == Exit.REFUSED
    assert "has no target 'no-such-target'" in capsys.readouterr().err
    deps = get_deps()
    deps.ledger.acquire_lock(user, "manual-inflight", "arn:aws:states:::execution:x:y", timedelta(hours=1))
    try:
        assert cli(["graduate", user, target_id(repo)]) == Exit.REFUSED
        assert "is being rotated by manual-inflight" in capsys.readouterr().err
    finally:
        deps.ledger.release_lock(user, "manual-inflight")
    assert cli(["graduate", user, target_id(repo), "--note", "x" * 501]) == Exit.REFUSED
    assert started() == before, "nothing was started"
    assert not [a for a in alerts_for(clean_world, user) if a["message"]["kind"].startswith("graduation")]


def test_status_shows_graduated_targets_and_the_messages_say_zero_keys(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(clean_world.github, "set_verify_variant"):
        pytest.skip("the local OIDC issuers (local/oidc.py) are not there yet")
    user = new_user_name("gradcli")
    repo = f"acme/{user}"
    clean_world.add_user(user, [repo])
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    clean_world.github.set_verify_variant(repo, "oidc")
    slack_before = len(clean_world.runtime.slack.messages)
    capsys.readouterr()

    # Without a target: every graduable target, one execution after the other (here the only one).
    assert cli(["graduate", user, "--note", "moving to OIDC"]) == 0
    out = capsys.readouterr().out
    assert f"{user} reached zero access keys" in out
    assert cli(["status", user]) == 0
    out = capsys.readouterr().out
    assert f"{target_id(repo)} graduated (OIDC, arn:aws:iam::" in out
    assert "graduated to OIDC: 1 of 1 targets; 0 access key(s) left (zero keys)" in out
    assert "next due: never (every target graduated to OIDC" in out
    assert cli(["plan", user]) == 0
    assert f"graduation: {target_id(repo)} graduated" in capsys.readouterr().out

    (message,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduated"]
    assert message["severity"] == "INFO" and message["message"]["zero_keys"] is True
    assert message["message"]["graduated"] == (f"graduated {target_id(repo)}; {user} now holds 0 access keys: "
                                               f"{user} reached zero keys")
    assert message["message"]["note"] == "moving to OIDC"
    slack = json.dumps(clean_world.runtime.slack.messages[slack_before:])
    assert f"{user} reached zero keys" in slack
    # Nothing left to graduate: refused, nothing started.
    assert cli(["graduate", user]) == Exit.REFUSED
