"""Day-2 operations (issue 13, finding 6): pause/unpause honoured by the schedule and the console (an
exposure rotation is not blocked), ``plan`` — a dry run that changes nothing — and ``history``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.scheduler import due_users
from cli.__main__ import main as cli
from cli.errors import Exit
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_one_active_key_everywhere


def later() -> Any:
    return clock.now() + timedelta(seconds=5)


def test_pause_is_honoured_by_the_schedule_the_console_and_the_cli(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    user = new_user_name()
    key = clean_world.add_user(user, [f"acme/{user}"], timings={"rotate_after": "1s"})
    assert user in due_users(get_deps(), later())

    assert cli(["pause", user, "--note", "release freeze"]) == 0
    assert f"ci-key-rotator unpause {user}" in capsys.readouterr().out
    assert user not in due_users(get_deps(), later()), "the schedule skips a paused user"

    # Started from the console (or by anything that bypasses the CLI): Plan refuses it, LOW.
    result = clean_world.rotate(user)
    assert result["status"] == "FAILED"
    (refusal,) = [a for a in alerts_for(clean_world, user) if a["message"]["error"] == "UserPaused"]
    assert refusal["severity"] == "LOW"
    assert f"first: ci-key-rotator unpause {user}" in refusal["message"]["cause"]
    assert "release freeze" in refusal["message"]["cause"]
    assert clean_world.key_statuses(user) == {key: "Active"} and get_deps().ledger.rotations(user) == []

    assert cli(["rotate", user]) == Exit.REFUSED
    assert f"run ci-key-rotator unpause {user} first" in capsys.readouterr().err

    assert cli(["unpause", user]) == 0
    assert user in due_users(get_deps(), later())
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"


def test_an_exposure_rotation_is_not_blocked_by_a_pause(clean_world: World, user: str) -> None:
    """A pause is for planned work (a release freeze, a migration); a leaked key is being abused now, and
    keeping it Active for the length of a freeze is the one outcome worse than a broken pipeline."""
    leaked = next(iter(clean_world.key_statuses(user)))
    assert cli(["pause", user]) == 0
    result = clean_world.rotate(user, reason="exposure", compromised_key_id=leaked)
    assert result["status"] == "SUCCEEDED"
    assert leaked not in clean_world.key_statuses(user)
    assert_one_active_key_everywhere(clean_world, user)


def test_paused_in_the_config_is_honoured(clean_world: World) -> None:
    user = new_user_name()
    clean_world.add_user(user, [f"acme/{user}"], timings={"rotate_after": "1s"}, paused=True)
    assert user not in due_users(get_deps(), later())
    result = clean_world.rotate(user)
    assert result["status"] == "FAILED"
    (refusal,) = [a for a in alerts_for(clean_world, user) if a["message"]["error"] == "UserPaused"]
    assert refusal["severity"] == "LOW" and "remove paused: true from the config" in refusal["message"]["cause"]


def snapshot(world: World, users: list[str]) -> dict[str, Any]:
    """Everything a rotation of ``users`` could change: their ledger items (parked verifications included),
    their keys, their executions. Only theirs: the session's other rotations and the poller may write to the
    same table and start executions of the same machine meanwhile."""
    table = world.runtime.client("dynamodb")
    items: list[Any] = []
    kwargs: dict[str, Any] = {"TableName": get_deps().settings.table_name, "ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    owners = {f"{kind}#{u}" for u in users for kind in ("USER", "INTENT")}
    theirs = [i for i in items if i["pk"]["S"] in owners or i.get("user", {}).get("S") in users]
    sfn = world.runtime.client("stepfunctions")
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=get_deps().settings.state_machine_arn)
    executions = [e for page in pages for e in page["executions"]]
    return {
        "ledger": sorted(theirs, key=lambda i: (i["pk"]["S"], i["sk"]["S"])),
        "keys": {u: world.key_statuses(u) for u in users},
        "executions": sorted(e["name"] for e in executions if any(e["name"].startswith(f"{u}-") for u in users)),
    }


def verdicts(out: str, users: list[str]) -> dict[str, str]:
    """Each user's block of ``plan`` output: its head line and the indented lines under it."""
    blocks: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if not line.startswith(" ") and line.split(":", 1)[0] in users:
            current = line.split(":", 1)[0]
            blocks[current] = ""
        elif not line.startswith(" "):
            current = None
        if current:
            blocks[current] += line + "\n"
    return blocks


def test_plan_says_what_would_rotate_why_and_what_blocks_it_and_changes_nothing(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    due, fresh, paused, two, locked = (new_user_name() for _ in range(5))
    for name in (due, paused, two, locked):
        clean_world.add_user(name, [f"acme/{name}"], timings={"rotate_after": "1s"})
    clean_world.add_user(fresh, [f"acme/{fresh}"], timings={"rotate_after": "30d"})
    assert cli(["pause", paused, "--note", "migration"]) == 0
    extra = clean_world.runtime.client("iam").create_access_key(UserName=two)["AccessKey"]["AccessKeyId"]
    get_deps().ledger.acquire_lock(locked, "manual-held", "arn:aws:states:us-east-1:123456789012:execution:x:y",
                                   timedelta(hours=1))
    clock_before = clock.now()
    while clock.now() - clock_before < timedelta(seconds=1.1):  # every rotate_after of 1 s has passed
        pass
    users = [due, fresh, paused, two, locked]
    capsys.readouterr()
    before = snapshot(clean_world, users)

    assert cli(["plan", *users]) == 0

    assert snapshot(clean_world, users) == before, "a dry run writes nothing"
    out = capsys.readouterr().out
    text = verdicts(out, users)
    assert text[due].startswith(f"{due}: would rotate\n")
    assert "older than rotate_after 1s" in text[due] and "would be adopted" in text[due]
    assert text[fresh].startswith(f"{fresh}: not due\n") and "younger than rotate_after 30d" in text[fresh]
    assert text[paused].startswith(f"{paused}: due but blocked\n")
    assert "blocked by: paused since" in text[paused] and "(migration)" in text[paused]
    assert text[two].startswith(f"{two}: due but blocked\n") and "two Active keys" in text[two]
    assert extra in text[two]
    assert text[locked].startswith(f"{locked}: due but blocked\n")
    assert "lock held by rotation manual-held" in text[locked]
    assert out.rstrip().endswith("(dry run: nothing was changed)")
    get_deps().ledger.release_lock(locked, "manual-held")


def test_history_lists_every_rotation_with_its_outcome_keys_and_error(
        clean_world: World, user: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert clean_world.rotate(user, rotation_id="manual-h1")["status"] == "SUCCEEDED"
    clean_world.github.fail_next_builds(f"acme/{user}", 1)
    assert clean_world.rotate(user, rotation_id="manual-h2")["status"] == "FAILED"
    capsys.readouterr()

    assert cli(["history", user]) == 0

    first, second = capsys.readouterr().out.strip().splitlines()
    (done,) = [r for r in get_deps().ledger.rotations(user) if r["rotation_id"] == "manual-h1"]
    assert first.startswith("manual-h1  manual  started ") and " succeeded " in first
    assert f"{done['old_key_id']} -> {done['new_key_id']}" in first
    assert second.startswith("manual-h2  manual  started ") and " failed " in second
    assert "VerificationFailed: target " in second


def test_an_unknown_user_is_refused_by_every_operation(clean_world: World, user: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["pause", "ci-nobody"], ["unpause", "ci-nobody"], ["plan", "ci-nobody"],
                    ["history", "ci-nobody"], ["status", "ci-nobody"]):
        assert cli(command) == Exit.CONFIG, command
        err = capsys.readouterr().err
        assert "not in the rotation configuration" in err and "Traceback" not in err
