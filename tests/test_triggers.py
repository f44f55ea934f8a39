"""The hourly schedule and the operator CLI start rotations through the same idempotent path."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.scheduler import Started, due_users, run_schedule
from cli.__main__ import main as cli
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import assert_one_active_key_everywhere


def test_schedule_rotates_only_users_whose_key_is_old_and_only_once_per_hour(clean_world: World) -> None:
    fresh, old = new_user_name(), new_user_name()
    clean_world.add_user(fresh, [f"acme/{fresh}"], timings={"rotate_after": "30d"})
    clean_world.add_user(old, [f"acme/{old}"], timings={"rotate_after": "1s"})
    later = clock.now() + timedelta(seconds=5)

    due = due_users(get_deps(), later)
    assert old in due and fresh not in due

    everyone = run_schedule(get_deps(), later)
    started = [s for s in everyone if s.user == old]
    again = [s for s in run_schedule(get_deps(), later) if s.user == old]  # an EventBridge redelivery

    assert len(started) == 1 and not started[0].duplicate
    assert not again or again[0].duplicate
    # The session's config holds earlier tests' users too, and those that are due were started with this one,
    # each in a start slot on the GitHub token they all share: this one's may be minutes away. The simulated
    # clock the slot is waited out on never runs slower than real time, so that long is enough.
    timeout = 60 + max((slot_of(clean_world, s) for s in everyone), default=0.0)
    assert clean_world.runtime.wait(started[0].execution_arn, timeout)["status"] == "SUCCEEDED"
    assert_one_active_key_everywhere(clean_world, old)
    assert len(get_deps().ledger.rotations(fresh)) == 0
    for other in everyone:  # nothing of this schedule run goes on into the next test
        clean_world.runtime.wait(other.execution_arn, timeout)


def slot_of(world: World, started: Started) -> float:
    """Seconds from now to the start slot the scheduler gave ``started`` (0 if none, or passed)."""
    description = world.runtime.client("stepfunctions").describe_execution(executionArn=started.execution_arn)
    start_at = json.loads(description["input"]).get("start_at")
    return max(0.0, (clock.parse_iso(start_at) - clock.now()).total_seconds()) if start_at else 0.0


def test_cli_rotate_and_status(clean_world: World, user: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["rotate", user, "--wait", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "started: arn:aws:states:" in out and out.strip().endswith("SUCCEEDED")

    assert cli(["status", user]) == 0
    line = capsys.readouterr().out.strip()
    (key,) = clean_world.key_statuses(user)
    assert line.startswith(f"{user}: {key} (0.0 d); last rotation succeeded")

    assert cli(["rotate", "nobody-configured"]) == 2
    assert "not in the rotation configuration" in capsys.readouterr().err
