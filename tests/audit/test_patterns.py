"""The EventBridge rule pattern is derived from the detections and fits EventBridge's limit."""

from __future__ import annotations

import json

from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.patterns import MAX_PATTERN_CHARS, audit_event_pattern, event_sources


def test_pattern_covers_every_indexed_source_and_fits() -> None:
    pattern = audit_event_pattern()
    assert len(json.dumps(pattern)) <= MAX_PATTERN_CHARS
    sources = set(pattern["$or"][0]["detail"]["eventSource"])
    indexed = {s for d in all_detections() for s in d.triggers if s.endswith(".amazonaws.com")}
    assert indexed == sources == set(event_sources())
    assert "AWS Console Sign In via CloudTrail" in pattern["detail-type"]
    assert "AWS Health Event" in pattern["detail-type"]
