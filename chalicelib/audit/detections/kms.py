"""KMS customer managed keys disabled or scheduled for deletion (CIS 4.7), key policy changes."""

from __future__ import annotations

from chalicelib.audit.detections.base import Detection, names
from chalicelib.audit.finding import Category, Severity

KMS = "kms.amazonaws.com"

KEY_DISABLED = Detection(
    id="kms.key-disabled-or-deleted",
    category=Category.KMS,
    severity=Severity.HIGH,
    title="KMS key disabled or scheduled for deletion",
    events={KMS: names("DisableKey", "ScheduleKeyDeletion")},
    description="Data encrypted under the key (the escrow, for one) becomes unreadable.",
)

KEY_POLICY = Detection(
    id="kms.key-policy-changed",
    category=Category.KMS,
    severity=Severity.MEDIUM,
    title="KMS key policy changed",
    events={KMS: names("PutKeyPolicy")},
    description="Who may use or administer the key changed.",
)

DETECTIONS = (KEY_DISABLED, KEY_POLICY)
