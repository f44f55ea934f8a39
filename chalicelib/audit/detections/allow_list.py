"""The daily list of what the allow-list quieted (built by ``chalicelib.audit.allow_list_log``)."""

from __future__ import annotations

from chalicelib.audit.detections.base import Detection
from chalicelib.audit.finding import Category, Severity

ALLOW_LIST_DIGEST = Detection(
    id="allow-list.digest",
    category=Category.ALLOW_LIST,
    severity=Severity.LOW,
    title="Findings quieted by the allow-list",
    events={},
    description="Once a day, with the credential report: every allow-listed finding of the last day, counted, "
    "with the entry's reason, so that what the list hides stays visible.",
)

DETECTIONS = (ALLOW_LIST_DIGEST,)
