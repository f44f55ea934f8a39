"""CloudTrail configuration changes (CIS 4.5): stopping or deleting the trail blinds every detection."""

from __future__ import annotations

from chalicelib.audit.detections.base import Detection, names
from chalicelib.audit.finding import Category, Severity

CLOUDTRAIL = "cloudtrail.amazonaws.com"

LOGGING_STOPPED = Detection(
    id="cloudtrail.logging-stopped",
    techniques=('T1562.008',),
    category=Category.CLOUDTRAIL,
    severity=Severity.CRITICAL,
    title="CloudTrail logging stopped or trail deleted",
    events={CLOUDTRAIL: names("StopLogging", "DeleteTrail")},
    description="StopLogging / DeleteTrail: classic defence evasion. Failed attempts are reported too.",
)

TRAIL_MODIFIED = Detection(
    id="cloudtrail.trail-modified",
    techniques=('T1562.008',),
    category=Category.CLOUDTRAIL,
    severity=Severity.MEDIUM,
    title="CloudTrail trail modified",
    events={CLOUDTRAIL: names("UpdateTrail", "PutEventSelectors", "PutInsightSelectors")},
    description="UpdateTrail / PutEventSelectors can silently drop management events or move the logs.",
)

TRAIL_CREATED = Detection(
    id="cloudtrail.trail-created-or-started",
    category=Category.CLOUDTRAIL,
    severity=Severity.LOW,
    title="CloudTrail trail created or logging started",
    events={CLOUDTRAIL: names("CreateTrail", "StartLogging")},
    description="Completes CIS 4.5; usually benign, worth a record.",
)

DETECTIONS = (LOGGING_STOPPED, TRAIL_MODIFIED, TRAIL_CREATED)
