"""KMS customer managed keys disabled or scheduled for deletion (CIS 4.7), key policy changes."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

KMS = "kms.amazonaws.com"



def _key_policy(record: Record, ctx: AuditContext) -> MatchResult:
    grant = policy_grants.assess(record.params.get("policy"), record.account, resource_policy=True)
    if not grant:
        return True
    return KEY_POLICY.finding(
        record,
        severity=grant.severity,
        summary=f"{record.principal} called kms:{record.name} on {record.param('keyId') or '?'} — "
        + "; ".join(grant.reasons) + failed_suffix(record),
    )


KEY_DISABLED = Detection(
    id="kms.key-disabled-or-deleted",
    category=Category.KMS,
    severity=Severity.HIGH,
    title="KMS key disabled or scheduled for deletion",
    events={KMS: names("DisableKey", "ScheduleKeyDeletion")},
    techniques=("T1485", "T1486"),
    description="Data encrypted under the key (the escrow, for one) becomes unreadable.",
)

KEY_POLICY = Detection(
    id="kms.key-policy-changed",
    category=Category.KMS,
    severity=Severity.MEDIUM,
    title="KMS key policy changed",
    events={KMS: names("PutKeyPolicy")},
    match=_key_policy,
    techniques=("T1098",),
    description="Who may use or administer the key changed; HIGH when the policy opens the key to everyone "
    "or another account, or grants kms:* on *.",
)

DETECTIONS = (KEY_DISABLED, KEY_POLICY)
