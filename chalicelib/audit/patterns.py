"""The EventBridge pattern for the audit rule, derived from the detections so the two cannot drift.

One rule: CloudTrail events of every eventSource a detection indexes, any root activity, any denied
call, and AWS Health RISK events. Read-only calls only arrive when the rule's state is
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


def event_sources() -> list[str]:
    return sorted({s for d in all_detections() for s in d.triggers if s not in (ANY, HEALTH_SOURCE)})


def audit_event_pattern() -> dict[str, Any]:
    """For ``@app.on_cw_event(audit_event_pattern())``."""
    return {
        "detail-type": [*CLOUDTRAIL_DETAIL_TYPES, HEALTH_DETAIL_TYPE],
        "$or": [
            {"detail": {"eventSource": event_sources()}},
            {"detail": {"userIdentity": {"type": ["Root"]}}},
            {"detail": {"errorCode": [{"prefix": "AccessDenied"}, {"suffix": "UnauthorizedOperation"}]}},
            {"source": [HEALTH_SOURCE], "detail": {"service": ["RISK"]}},
        ],
    }


if __name__ == "__main__":
    print(json.dumps(audit_event_pattern(), indent=2))
