"""The patterns of the two EventBridge rules, cheap to import: app.py reads them at every cold start.

The audit pattern is derived from the detections (``chalicelib/audit/patterns.py``). Deriving it imports
all of them and their models, which every Lambda would pay on import, so the result is kept in
``event_patterns.json``; ``tests/audit/test_patterns.py`` fails when the two differ, and
``python -m chalicelib.audit.patterns --write`` regenerates the file.
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
