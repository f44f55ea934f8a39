"""The EventBridge rule pattern is derived from the detections and fits EventBridge's limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.patterns import MAX_PATTERN_CHARS, audit_event_pattern

from .conftest import ct, eventbridge
from .test_detections import CASES


def _matches(pattern: Any, event: Any) -> bool:
    """The subset of EventBridge matching the audit pattern uses: lists of values, prefix, suffix, $or."""
    if isinstance(pattern, list):
        for rule in pattern:
            if isinstance(rule, dict):
                if isinstance(event, str) and (
                    ("prefix" in rule and event.startswith(rule["prefix"]))
                    or ("suffix" in rule and event.endswith(rule["suffix"]))
                ):
                    return True
            elif event == rule:
                return True
        return False
    if not isinstance(event, dict):
        return False
    for key, sub in pattern.items():
        if key == "$or":
            if not any(_matches(alternative, event) for alternative in sub):
                return False
        elif key not in event or not _matches(sub, event[key]):
            return False
    return True


@pytest.mark.parametrize("narrow", [True, False])
def test_pattern_fits_and_covers_every_indexed_source(narrow: bool) -> None:
    pattern = audit_event_pattern(narrow)
    assert len(json.dumps(pattern, separators=(",", ":"))) <= MAX_PATTERN_CHARS
    listed = {s for clause in pattern["$or"] for s in clause.get("detail", {}).get("eventSource", [])}
    assert listed == {s for d in all_detections() for s in d.triggers if s.endswith(".amazonaws.com")}


def test_the_narrow_pattern_is_in_use() -> None:
    assert "eventName" in audit_event_pattern()["$or"][0]["detail"]


def _as_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    if "detail-type" in event:
        return event
    return eventbridge(event["Records"][0] if "Records" in event else event)


@pytest.mark.parametrize("case", [c for c in CASES if c.severity], ids=lambda c: c.id)
def test_every_positive_case_passes_the_rule(case: Any) -> None:
    """Events that would produce a finding are never filtered out before the Lambda sees them."""
    assert _matches(audit_event_pattern(), _as_eventbridge(case.event)), case.id


def test_noise_is_filtered_out() -> None:
    assert not _matches(audit_event_pattern(), eventbridge(ct("RunInstances", "ec2.amazonaws.com")))
    assert not _matches(audit_event_pattern(), eventbridge(ct("PutObject", "s3.amazonaws.com")))


def test_the_rule_app_py_registers_is_the_derived_pattern() -> None:
    from chalicelib.event_patterns import AUDIT_EVENT_PATTERN

    assert AUDIT_EVENT_PATTERN == audit_event_pattern(), (
        "chalicelib/event_patterns.json is stale: run python -m chalicelib.audit.patterns --write")
