"""The demo's timeline (local/demo_timeline.py) and the README's scenario table (issue 13, finding 8).

Histories here are built in the shape moto's Step Functions engine records (see tests/test_demo_html.py for
the same checks on a real execution).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local import demo
from local.demo_timeline import WIDTH, Timeline, human_duration

ROOT = Path(__file__).resolve().parent.parent
ASL = json.loads((ROOT / "statemachine" / "rotation.asl.json").read_text())
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class History:
    """A history being recorded: each call appends one event, chained by previousEventId."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, after: int | None = None, seconds: float | None = None, **details: Any) -> int:
        event_id = len(self.events) + 1
        previous = self.events[-1] if self.events else None
        at = seconds if seconds is not None else (len(self.events) * 0.1)
        event: dict[str, Any] = {"id": event_id, "type": kind, "timestamp": T0 + timedelta(seconds=at),
                                 "previousEventId": after if after is not None else (previous or {}).get("id", 0)}
        if details:
            event[details.pop("key")] = details
        self.events.append(event)
        return event_id

    def enter(self, kind: str, name: str, state_input: dict[str, Any], after: int | None = None,
              seconds: float | None = None) -> int:
        return self.add(f"{kind}StateEntered", after, seconds, key="stateEnteredEventDetails", name=name,
                        input=json.dumps(state_input))


def _rotation_history() -> list[dict[str, Any]]:
    h = History()
    base = {"user": "ci-x", "rotation_id": "r1", "targets": ["acme-a", "acme-b"], "drain_seconds": 600,
            "recovery_seconds": 86400}
    h.add("ExecutionStarted", key="executionStartedEventDetails", input=json.dumps(base))
    h.enter("Task", "Plan", base)
    for _ in range(2):  # two attempts fail, the Retry's third succeeds
        h.add("LambdaFunctionFailed", key="lambdaFunctionFailedEventDetails", error="TransientError",
              cause=json.dumps({"errorMessage": "IAM throttled the call", "stackTrace": ["File x"]}))
    h.add("TaskStateExited", key="stateExitedEventDetails", name="Plan")
    h.enter("Map", "PushToTargets", base)
    started = h.add("MapStateStarted", key="mapStateStartedEventDetails", length=2)
    for index, target in enumerate(("acme-a", "acme-b")):
        h.add("MapIterationStarted", after=started, key="mapIterationStartedEventDetails",
              name="PushToTargets", index=index)
        h.enter("Task", "PushTarget", {"target_id": target, "user": "ci-x"})
        h.add("TaskStateExited", key="stateExitedEventDetails", name="PushTarget")
    h.add("MapStateExited", key="stateExitedEventDetails", name="PushToTargets")
    h.enter("Wait", "DrainPeriod", base)
    h.add("WaitStateExited", key="stateExitedEventDetails", name="DrainPeriod")
    h.enter("Task", "DeactivateOldKey", base)
    h.add("TaskStateExited", key="stateExitedEventDetails", name="DeactivateOldKey")
    h.enter("Wait", "RecoveryWindow", base)
    h.add("WaitStateExited", key="stateExitedEventDetails", name="RecoveryWindow")
    h.add("ExecutionSucceeded", key="executionSucceededEventDetails", output="{}")
    return h.events


def _texts(time_scale: float = demo.TIME_SCALE) -> list[str]:
    timeline = Timeline(ASL, time_scale)
    timeline.feed(_rotation_history())
    return [line.text for line in timeline.lines]


def test_map_iterations_name_their_target() -> None:
    texts = _texts()
    assert "▶ PushTarget [acme-a]" in texts and "▶ PushTarget [acme-b]" in texts
    # A state after the Map belongs to no target (it must not inherit the last iteration's).
    assert any(t.startswith("▶ DeactivateOldKey") and "[" not in t for t in texts), texts


def test_simulated_waits_show_the_duration_they_stand_for() -> None:
    texts = _texts()
    assert "▶ RecoveryWindow  24h (simulated in 4.3 s)" in texts, texts
    assert "▶ DrainPeriod  10m (simulated in 0.03 s)" in texts, texts
    assert "▶ RecoveryWindow  24h (not slept: time scale 0)" in _texts(time_scale=0.0)
    assert [human_duration(s) for s in (86400, 600, 90, 0, 3 * 86400)] == ["24h", "10m", "1m30s", "0s", "3d"]


def test_failures_show_the_error_message_not_the_stack_trace() -> None:
    texts = _texts()
    assert [t for t in texts if t.startswith("    ✗")] == [
        f"    ✗ Plan attempt {n}: TransientError: IAM throttled the call" for n in (1, 2)]
    assert not any("stackTrace" in t or "File x" in t for t in texts)
    assert texts[-1] == "■ SUCCEEDED"


def test_fed_in_batches_it_says_the_same_as_all_at_once() -> None:
    """The live stream feeds whatever the last poll returned; the lines must not depend on the batching."""
    events = _rotation_history()
    streamed = Timeline(ASL, demo.TIME_SCALE)
    for start in range(0, len(events), 3):
        streamed.feed(events[start:start + 3])
    assert [line.text for line in streamed.lines] == _texts()


def _words(text: str) -> list[str]:
    return text.split()


def test_no_line_is_cut_mid_word(capsys: pytest.CaptureFixture[str]) -> None:
    long = ("gitlab target 'gitlab-acme-platform' (project acme/platform, environment scope '*'): update variable "
            "AWS_ACCESS_KEY_ID refused: PUT /projects/acme%2Fplatform/variables/AWS_ACCESS_KEY_ID: HTTP 403: "
            "injected HTTP 403 and a good deal more text so that it certainly needs more than two lines")
    demo.say(f"cause: {long}", indent="      ")
    printed = capsys.readouterr().out
    assert _words(printed) == _words(f"cause: {long}"), "every word printed whole, in order"
    assert all(len(line) <= WIDTH for line in printed.splitlines())
    h = History()
    h.add("ExecutionStarted", key="executionStartedEventDetails", input="{}")
    h.enter("Task", "PushTarget", {"target_id": "gitlab-acme-platform"})
    h.add("LambdaFunctionFailed", key="lambdaFunctionFailedEventDetails", error="TargetPushFailed",
          cause=json.dumps({"errorMessage": long}))
    timeline = Timeline(ASL, 0.0)
    rendered = [line.render() for line in timeline.feed(h.events)][-1]
    assert len(rendered.splitlines()) > 1 and all(len(line) <= WIDTH for line in rendered.splitlines())
    assert long in " ".join(rendered.split()), "the message is wrapped, not truncated"


def readme_scenarios(readme: str) -> list[str]:
    """The first column of the table in the README's "What `make demo` shows" section."""
    section = readme.split("## What `make demo` shows", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*`([^`]+)`\s*\|", section, flags=re.M)


def test_readme_scenario_table_matches_the_demo() -> None:
    listed = readme_scenarios((ROOT / "README.md").read_text())
    assert listed == demo.scenario_names(), (
        "README.md's scenario table (section \"What `make demo` shows\") must list exactly the scenarios "
        f"local/demo.py runs, in order: README {listed}, demo {demo.scenario_names()}")
