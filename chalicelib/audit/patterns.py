"""The EventBridge pattern for the audit rule, derived from the detections so the two cannot drift.

One rule: the CloudTrail events some detection indexes, any root activity, any denied call, and AWS
Health RISK events. Read-only calls only arrive when the rule's state is
ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS; IAM and sign-in events exist only in us-east-1.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.audit.detections.base import ANY
from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.models import CLOUDTRAIL_DETAIL_TYPES, HEALTH_DETAIL_TYPE, HEALTH_SOURCE

#: EventBridge's limit on a rule's pattern.
MAX_PATTERN_CHARS = 4096
# Lambda's eventNames carry an API version suffix (UpdateFunctionCode20150331v2) that a name list cannot
# spell; its management writes are rare, so the whole source is taken.
_WHOLE_SOURCES = frozenset({"lambda.amazonaws.com"})


def event_sources() -> list[str]:
    return sorted({s for d in all_detections() for s in d.triggers if s not in (ANY, HEALTH_SOURCE)})


def _event_names() -> list[str]:
    return sorted({
        name
        for d in all_detections()
        for source, names in d.triggers.items()
        if names and source not in (ANY, HEALTH_SOURCE, *_WHOLE_SOURCES)
        for name in names
    })


def audit_event_pattern(narrow: bool = True) -> dict[str, Any]:
    """For ``@app.on_cw_event(audit_event_pattern())``. ``narrow`` also filters on eventName (falls back
    to eventSource only if the name list would exceed EventBridge's pattern size limit)."""
    sources = event_sources()
    named = [s for s in sources if s not in _WHOLE_SOURCES]
    whole = [s for s in sources if s in _WHOLE_SOURCES]
    if narrow:
        by_event: list[dict[str, Any]] = [{"detail": {"eventSource": named, "eventName": _event_names()}}]
        if whole:
            by_event.append({"detail": {"eventSource": whole}})
    else:
        by_event = [{"detail": {"eventSource": sources}}]
    pattern = {
        "detail-type": [*CLOUDTRAIL_DETAIL_TYPES, HEALTH_DETAIL_TYPE],
        "$or": [
            *by_event,
            {"detail": {"userIdentity": {"type": ["Root"]}}},
            {"detail": {"errorCode": [{"prefix": "AccessDenied"}, {"suffix": "UnauthorizedOperation"}]}},
            {"source": [HEALTH_SOURCE], "detail": {"service": ["RISK"]}},
        ],
    }
    if narrow and len(json.dumps(pattern, separators=(",", ":"))) > MAX_PATTERN_CHARS:
        return audit_event_pattern(narrow=False)
    return pattern


if __name__ == "__main__":
    import sys

    from chalicelib.event_patterns import STORED

    if "--write" in sys.argv[1:]:  # app.py reads the stored copy (chalicelib/event_patterns.py says why)
        STORED.write_text(json.dumps(audit_event_pattern(), indent=1) + "\n")
    else:
        print(json.dumps(audit_event_pattern(), separators=(",", ":")))
