"""S3 bucket policy, ACL and public-access changes (CIS 4.8)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

S3 = "s3.amazonaws.com"
CIS_S3_EVENTS = names(
    "PutBucketAcl", "PutBucketPolicy", "PutBucketCors", "PutBucketLifecycle", "PutBucketReplication",
    "DeleteBucketPolicy", "DeleteBucketCors", "DeleteBucketLifecycle", "DeleteBucketReplication",
)
PUBLIC_ACCESS_EVENTS = names(
    "PutBucketPublicAccessBlock", "DeleteBucketPublicAccessBlock", "PutAccountPublicAccessBlock",
    "DeleteAccountPublicAccessBlock",
)


def _change(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name.startswith("Delete") and record.name.endswith("PublicAccessBlock"):
        return BUCKET_POLICY.finding(
            record,
            severity=Severity.HIGH,
            summary=f"{record.principal} removed an S3 public access block ({record.name})",
        )
    return True


BUCKET_POLICY = Detection(
    id="s3-policy.bucket-policy-change",
    category=Category.S3_POLICY,
    severity=Severity.MEDIUM,
    title="S3 bucket policy or ACL changed",
    events={S3: CIS_S3_EVENTS | PUBLIC_ACCESS_EVENTS},
    match=_change,
    description="The 9 CIS 4.8 events plus public access block changes (HIGH when removed).",
)

DETECTIONS = (BUCKET_POLICY,)
