"""AWS Config recorder and delivery channel changes (CIS 4.9)."""

from __future__ import annotations

from chalicelib.audit.detections.base import Detection, names
from chalicelib.audit.finding import Category, Severity

CONFIG = "config.amazonaws.com"

RECORDING_STOPPED = Detection(
    id="config.recording-stopped",
    techniques=('T1562.008',),
    category=Category.CONFIG,
    severity=Severity.HIGH,
    title="AWS Config recording stopped or delivery channel deleted",
    events={CONFIG: names("StopConfigurationRecorder", "DeleteDeliveryChannel", "DeleteConfigurationRecorder")},
    description="Config stops recording resource changes: compliance history goes dark.",
)

RECORDER_CHANGED = Detection(
    id="config.recorder-changed",
    techniques=('T1562.008',),
    category=Category.CONFIG,
    severity=Severity.LOW,
    title="AWS Config recorder or delivery channel changed",
    events={CONFIG: names("PutDeliveryChannel", "PutConfigurationRecorder")},
    description="Completes CIS 4.9; can narrow what is recorded.",
)

DETECTIONS = (RECORDING_STOPPED, RECORDER_CHANGED)
