"""S3 bucket policy, ACL and public-access changes (CIS 4.8)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names, walk_strings
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


_PUBLIC_GRANTEES = ("/groups/global/AllUsers", "/groups/global/AuthenticatedUsers")


def _change(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name.startswith("Delete") and record.name.endswith("PublicAccessBlock"):
        return BUCKET_POLICY.finding(
            record,
            severity=Severity.HIGH,
            summary=f"{record.principal} removed an S3 public access block ({record.name})",
        )
    if record.name == "PutBucketPolicy":
        grant = policy_grants.assess(record.params.get("bucketPolicy"), record.account, resource_policy=True)
    elif record.name == "PutBucketAcl" and any(
        g in text for text in walk_strings(record.params) for g in _PUBLIC_GRANTEES
    ):
        grant = policy_grants.Assessment(Severity.HIGH, ("the ACL grants AllUsers or AuthenticatedUsers",))
    else:
        return True
    if not grant:
        return True
    return BUCKET_POLICY.finding(
        record,
        severity=grant.severity,
        summary=f"{record.principal} called s3:{record.name} on {record.param('bucketName') or '?'} — "
        + "; ".join(grant.reasons) + failed_suffix(record),
    )


BUCKET_POLICY = Detection(
    id="s3-policy.bucket-policy-change",
    category=Category.S3_POLICY,
    severity=Severity.MEDIUM,
    title="S3 bucket policy or ACL changed",
    events={S3: CIS_S3_EVENTS | PUBLIC_ACCESS_EVENTS},
    match=_change,
    techniques=("T1530", "T1537"),
    description="The 9 CIS 4.8 events plus public access block changes (HIGH when removed); HIGH for a "
    "bucket policy open to everyone or another account, or an ACL granting AllUsers/AuthenticatedUsers.",
)

DETECTIONS = (BUCKET_POLICY,)
