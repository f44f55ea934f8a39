"""Unauthorized / AccessDenied API calls (CIS 4.1, with v5.0's exclusions applied as intended)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import ANY, Detection, MatchResult
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record


def is_denied(code: str) -> bool:
    return code.endswith("UnauthorizedOperation") or code.startswith("AccessDenied")


def _denied(record: Record, ctx: AuditContext) -> MatchResult:
    code = record.error_code
    if not code or not is_denied(code):
        return False
    event = record.cloudtrail
    # CIS v5.0 exclusions (log delivery, HeadBucket probes) plus anonymous S3 requests.
    if event.sourceIPAddress == "delivery.logs.amazonaws.com" or record.name == "HeadBucket":
        return False
    if record.identity.accountId == "ANONYMOUS_PRINCIPAL" or record.identity.principalId == "ANONYMOUS_PRINCIPAL":
        return False
    identity = record.identity
    ci_user = identity.type == "IAMUser" and ctx.is_managed(identity.userName or "")
    rotator = ctx.is_rotator(record)
    if rotator:
        who = "the rotator"
    elif ci_user:
        who = "managed CI user"
    else:
        who = ""
    summary = f"{record.principal} was denied {record.source.split('.', 1)[0]}:{event.eventName} ({code})"
    if who:
        summary += f" — {who} lacks a permission it uses, or its identity is misused"
    return ACCESS_DENIED.finding(
        record,
        severity=Severity.HIGH if rotator or ci_user else Severity.LOW,
        summary=summary,
        dedup_parts=(record.principal, record.source, record.name),
    )


ACCESS_DENIED = Detection(
    id="unauthorized-call.access-denied",
    techniques=('T1526',),
    category=Category.UNAUTHORIZED_CALL,
    severity=Severity.LOW,
    title="Unauthorized API call",
    events={ANY: None},
    match=_denied,
    description="errorCode *UnauthorizedOperation or AccessDenied*; HIGH for the rotator or a CI user; "
    "repeats per principal and action are aggregated by the dedup window.",
)

DETECTIONS = (ACCESS_DENIED,)
