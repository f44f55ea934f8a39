"""The EventBridge rule pattern is derived from the detections, fits EventBridge's default quota as
Chalice sends it, admits no high-volume read, and has the state the read-only detections need."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.audit.detections.registry import all_detections
from deploy.event_pattern import (
    AUDIT_RULE_STATE,
    MAX_PATTERN_CHARS,
    audit_event_pattern,
    chalice_size,
    read_only_matchers,
)

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


def test_the_default_quota_is_2048() -> None:
    """EventBridge: 2,048 characters by default, 4,096 only after a quota increase (eb-quota.html)."""
    assert MAX_PATTERN_CHARS == 2048


def test_pattern_fits_as_chalice_sends_it_and_covers_every_indexed_source() -> None:
    pattern = audit_event_pattern()
    # Chalice: ``event_pattern=json.dumps(event_source.event_pattern)``, default separators, spaces count.
    assert chalice_size(pattern) == len(json.dumps(pattern)) <= MAX_PATTERN_CHARS
    listed = {s for clause in pattern["$or"] for s in clause.get("detail", {}).get("eventSource", [])}
    assert listed == {s for d in all_detections() for s in d.triggers if s.endswith(".amazonaws.com")}, (
        "at the default quota every source stays exact")


def test_a_smaller_quota_compresses_further_and_a_larger_one_keeps_more_exact_names() -> None:
    # The tightest reachable size is every name a verb prefix and sources by first letter (about 1,620 with
    # the graduated-role/provider events); below it the derivation refuses.
    tight, roomy = audit_event_pattern(1700), audit_event_pattern(8192)
    assert chalice_size(tight) <= 1700
    exact = [n for n in roomy["$or"][0]["detail"]["eventName"] if isinstance(n, str)]
    assert "CreateAccessKey" in exact, "with room, names stay exact"


def test_no_matcher_admits_the_high_volume_reads() -> None:
    """The rule admits read-only events (for root and denied reads): its name matchers must not let
    every Get/List/Describe call of the watched services in."""
    assert read_only_matchers(audit_event_pattern()) == []
    for name in ("GetRole", "ListUsers", "DescribeKey", "GetSecretValue", "DescribeInstances"):
        for source in ("iam.amazonaws.com", "kms.amazonaws.com", "ec2.amazonaws.com"):
            assert not _matches(audit_event_pattern(), eventbridge(ct(name, source))), (name, source)


def _as_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    if "detail-type" in event:
        return event
    return eventbridge(event["Records"][0] if "Records" in event else event)


@pytest.mark.parametrize("case", [c for c in CASES if c.severity], ids=lambda c: c.id)
def test_every_positive_case_passes_the_rule(case: Any) -> None:
    """Events that would produce a finding are never filtered out before the Lambda sees them."""
    assert _matches(audit_event_pattern(), _as_eventbridge(case.event)), case.id


def test_every_indexed_name_passes_the_rule() -> None:
    for detection in all_detections():
        for source, names in detection.triggers.items():
            if not source.endswith(".amazonaws.com"):
                continue
            for name in names or ():
                event = eventbridge(ct(name, source))
                assert _matches(audit_event_pattern(), event), (detection.id, source, name)


def test_versioned_lambda_names_pass_the_rule() -> None:
    assert _matches(audit_event_pattern(), eventbridge(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com")))


def test_noise_is_filtered_out() -> None:
    assert not _matches(audit_event_pattern(), eventbridge(ct("RunInstances", "ec2.amazonaws.com")))
    assert not _matches(audit_event_pattern(), eventbridge(ct("PutObject", "athena.amazonaws.com")))


def test_the_rule_app_py_registers_is_the_derived_pattern() -> None:
    from chalicelib.event_patterns import AUDIT_EVENT_PATTERN

    assert AUDIT_EVENT_PATTERN == audit_event_pattern(), (
        "chalicelib/event_patterns.json is stale: run python -m deploy.event_pattern --write")


def test_the_audit_rule_admits_read_only_events() -> None:
    """root.activity and unauthorized-call.access-denied index every source and name: read calls too."""
    from chalicelib.event_patterns import rule_state

    assert any("*" in d.triggers for d in all_detections())
    assert AUDIT_RULE_STATE == rule_state("audit") == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
    assert rule_state("exposure") == "ENABLED", "AWS Health events are not CloudTrail reads"


def test_session_minting_reads_are_admitted_by_exact_name_only() -> None:
    """GetSessionToken & co. are read-only events: admitted by name (the rule's state lets reads in), and
    no prefix that would let every Get in."""
    from deploy.event_pattern import WATCHED_READS

    pattern = audit_event_pattern()
    names = pattern["$or"][0]["detail"]["eventName"]
    assert WATCHED_READS <= {n for n in names if isinstance(n, str)}
    assert read_only_matchers(pattern) == []
    assert _matches(pattern, eventbridge(ct("GetSessionToken", "sts.amazonaws.com")))
    assert not _matches(pattern, eventbridge(ct("GetCallerIdentity", "sts.amazonaws.com")))


@pytest.mark.parametrize("limit", [1900, 1700])
def test_a_tight_quota_compresses_sources_and_still_admits_every_indexed_name(limit: int) -> None:
    pattern = audit_event_pattern(limit)
    assert chalice_size(pattern) <= limit
    assert any(isinstance(s, dict) for s in pattern["$or"][0]["detail"]["eventSource"])
    assert read_only_matchers(pattern) == []
    for detection in all_detections():
        for source, names in detection.triggers.items():
            if source.endswith(".amazonaws.com"):
                for name in names or ():
                    assert _matches(pattern, eventbridge(ct(name, source))), (limit, source, name)
