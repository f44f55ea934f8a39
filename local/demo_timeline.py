"""The demo's timeline: Step Functions history events → one readable line per thing that happened.

Pure (no AWS calls), so the live console stream (local/demo.py) and the HTML page (local/demo_html.py) say
the same thing. Events may arrive in several batches, as they do when a running execution is polled.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Events that end one attempt of a state in failure (the state may still be retried).
FAILURES = ("TaskFailed", "TaskTimedOut", "LambdaFunctionFailed", "LambdaFunctionTimedOut",
            "LambdaFunctionStartFailed", "LambdaFunctionScheduleFailed", "TaskStartFailed", "TaskSubmitFailed")
ENDS = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted")
#: Console width the lines are wrapped to (at word boundaries: nothing is ever cut).
WIDTH = 110


@dataclass(frozen=True)
class Line:
    #: Seconds since the execution started (wall clock).
    at: float
    #: "enter", "fail", "verify" or "end".
    kind: str
    state: str | None
    #: The Map target this line belongs to, when the state ran in a Map iteration.
    target: str | None
    text: str

    def render(self, width: int = WIDTH) -> str:
        prefix = f"  +{self.at:6.2f}s  "
        return textwrap.fill(self.text, width=width, initial_indent=prefix,
                             subsequent_indent=" " * (len(prefix) + 4),
                             break_long_words=False, break_on_hyphens=False)


def all_states(asl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state of the machine by name, Map iterators' (and Parallel branches') states included."""
    found: dict[str, dict[str, Any]] = {}
    for name, state in asl.get("States", {}).items():
        found[name] = state
        for inner in _nested(state):
            found.update(all_states(inner))
    return found


def _nested(state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Iterator" in state:
        yield state["Iterator"]
    if "ItemProcessor" in state:
        yield state["ItemProcessor"]
    yield from state.get("Branches", ())


def human_duration(seconds: float) -> str:
    """86400 → "24h", 600 → "10m", 90 → "1m30s"."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    # "1d" reads worse than "24h" for the windows the rotator uses.
    if parts[0].endswith("d") and len(parts) == 1 and parts[0] == "1d":
        return "24h"
    return "".join(parts)


def _timestamp(value: Any) -> datetime:
    # boto3 gives datetimes; histories saved with json.dumps(default=str) give their str().
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "null")
    except ValueError:
        return None


def _path(document: Any, path: str) -> Any:
    """A simple reference path ("$.a.b") into ``document``; None when absent."""
    value = document
    for part in path.removeprefix("$").strip(".").split("."):
        if not part:
            continue
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def wait_seconds(state: dict[str, Any], state_input: Any) -> float | None:
    """The duration a Wait state stands for (Seconds or SecondsPath); None for timestamp waits."""
    if "Seconds" in state:
        return float(state["Seconds"])
    if "SecondsPath" in state:
        value = _path(state_input, state["SecondsPath"])
        return float(value) if isinstance(value, int | float) else None
    return None


def _failure_message(details: dict[str, Any]) -> str:
    error = details.get("error") or "error"
    cause = _json(details.get("cause"))
    message = cause.get("errorMessage") if isinstance(cause, dict) else details.get("cause")
    # Lambda causes carry a stack trace; the error message is what an operator needs here.
    return f"{error}: {message}" if message else str(error)


class Timeline:
    """Feed it history events in id order, in as many batches as needed; it returns the new lines."""

    def __init__(self, asl: dict[str, Any], time_scale: float) -> None:
        self._states = all_states(asl)
        self._time_scale = time_scale
        self._start: datetime | None = None
        #: Event id → (state, Map target) the event belongs to, inherited along previousEventId.
        self._owner: dict[int, tuple[str | None, str | None]] = {}
        #: Failed attempts of each (state, target) since it was last entered: a Retry re-runs it in place.
        self._failed: dict[tuple[str | None, str | None], int] = {}
        self.lines: list[Line] = []

    def feed(self, events: Iterable[dict[str, Any]]) -> list[Line]:
        new = [line for event in events if (line := self._line(event)) is not None]
        self.lines.extend(new)
        return new

    def _line(self, event: dict[str, Any]) -> Line | None:
        at_time = _timestamp(event["timestamp"])
        if self._start is None:
            self._start = at_time
        at = (at_time - self._start).total_seconds()
        kind = event["type"]
        state, target = self._owner.get(event.get("previousEventId") or 0, (None, None))
        if kind.endswith("StateEntered"):
            details = event["stateEnteredEventDetails"]
            state = details["name"]
            state_input = _json(details.get("input"))
            # Map iterations get their target in their input (the Map's Parameters); a state after the
            # Map must not inherit the last iteration's target.
            item_target = _path(state_input, "$.target_id")
            target = item_target if isinstance(item_target, str) else None
            self._failed[(state, target)] = 0
        self._owner[event["id"]] = (state, target)
        on = f" [{target}]" if target else ""
        if kind.endswith("StateEntered"):
            return Line(at, "enter", state, target, f"▶ {state}{on}{self._wait_note(state, state_input)}")
        if kind in FAILURES:
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            attempt = self._failed[(state, target)] = self._failed.get((state, target), 0) + 1
            return Line(at, "fail", state, target,
                        f"    ✗ {state}{on} attempt {attempt}: {_failure_message(details)}")
        if kind == "TaskSucceeded" and "waitForTaskToken" in str(event.get("taskSucceededEventDetails")):
            output = _json(event["taskSucceededEventDetails"].get("output")) or {}
            return Line(at, "verify", state, target,
                        f"    ✓ verification build {output.get('run_id')}{on}: {output.get('result')}")
        if kind in ENDS:
            return Line(at, "end", None, None, f"■ {kind.removeprefix('Execution').upper()}")
        return None

    def _wait_note(self, state: str | None, state_input: Any) -> str:
        definition = self._states.get(state or "", {})
        if definition.get("Type") != "Wait":
            return ""
        seconds = wait_seconds(definition, state_input)
        if seconds is None:
            return ""
        if not seconds:
            return "  0s (no wait)"
        real = seconds * self._time_scale
        if not real:
            return f"  {human_duration(seconds)} (not slept: time scale 0)"
        return f"  {human_duration(seconds)} (simulated in {real:.1f} s)" if real >= 0.1 else \
            f"  {human_duration(seconds)} (simulated in {real:.2f} s)"
