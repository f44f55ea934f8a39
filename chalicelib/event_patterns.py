"""The patterns and states of the two EventBridge rules, cheap to import: app.py reads them at every
cold start, ``deploy`` and the local EventBridge read the states.

The audit pattern is derived from the detections (``deploy/event_pattern.py``). Deriving it imports
all of them and their models, which every Lambda would pay on import, so the result is kept in
``event_patterns.json``; ``tests/audit/test_patterns.py`` fails when the two differ, and
``python -m deploy.event_pattern --write`` regenerates the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STORED = Path(__file__).with_name("event_patterns.json")

#: AWS Health's codes for a leaked or quarantined access key.
RISK_CODES = (
    "AWS_RISK_CREDENTIALS_EXPOSED",
    "AWS_RISK_CREDENTIALS_COMPROMISED",
    "AWS_RISK_CREDENTIALS_EXPOSURE_SUSPECTED",
    "AWS_RISK_CREDENTIALS_COMPROMISE_SUSPECTED",
    "AWS_RISK_IAM_QUARANTINE",
)
#: The exposure Lambda's rule. Health's IAM events are global: they arrive in us-east-1.
EXPOSURE_EVENT_PATTERN: dict[str, Any] = {
    "source": ["aws.health"],
    "detail-type": ["AWS Health Event"],
    "detail": {"service": ["RISK"], "eventTypeCode": list(RISK_CODES)},
}
#: The audit Lambda's rule, as ``audit_event_pattern()`` derives it.
AUDIT_EVENT_PATTERN: dict[str, Any] = json.loads(STORED.read_text())

#: EventBridge withholds read-only management events (Get*, List*, Describe*) from a rule in state
#: ENABLED; the audit needs them (a root ``ListUsers``, a denied read), so its rule admits them
#: (``deploy/event_pattern.AUDIT_RULE_STATE``; a test keeps the two equal).
#: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail-management.html
#: Chalice's ``on_cw_event`` cannot set a state: ``deploy apply`` and the packaged template do.
RULE_STATES: dict[str, str] = {"audit": "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"}
DEFAULT_RULE_STATE = "ENABLED"


def rule_state(function: str) -> str:
    """The state the rule of ``@app.on_cw_event(..., name=function)`` must have."""
    return RULE_STATES.get(function, DEFAULT_RULE_STATE)
