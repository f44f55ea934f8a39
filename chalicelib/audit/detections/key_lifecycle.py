"""Access keys created, (de)activated or deleted by anyone but the rotator."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

IAM = "iam.amazonaws.com"
KEY_EVENTS = names("CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey")


def key_user(record: Record) -> str:
    """The user whose key changed: userName, else the one CloudTrail echoes, else the caller itself."""
    user = record.param("userName")
    if user:
        return user
    key = record.response.get("accessKey")
    name = key.get("userName") if isinstance(key, dict) else None
    if isinstance(name, str):
        return name
    if record.identity.type == "IAMUser":
        return record.identity.userName or ""
    return ""


def key_id(record: Record) -> str | None:
    found = record.param("accessKeyId")
    if found:
        return found
    key = record.response.get("accessKey")
    found_id = key.get("accessKeyId") if isinstance(key, dict) else None
    return found_id if isinstance(found_id, str) else None


def describe_change(record: Record) -> str:
    verb = {"CreateAccessKey": "created", "DeleteAccessKey": "deleted"}.get(record.name)
    if verb is None:
        status = record.param("status")
        verb = f"set to {status}" if status else "updated"
    who = key_user(record) or "(unknown user)"
    return f"access key {key_id(record) or '(new)'} of user {who} {verb}"


def _not_by_rotator(record: Record, ctx: AuditContext) -> MatchResult:
    if ctx.is_rotator(record):
        return False  # self_protection.ROTATOR_OUTSIDE_ROTATION judges those, with the intent lookup
    user = key_user(record)
    protected = ctx.is_protected_user(user)
    summary = f"{record.principal}: {describe_change(record)}"
    if protected:
        summary += " (a user managed by the rotator)"
    caller = record.identity.userName if record.identity.type == "IAMUser" else None
    if caller and user and caller != user:
        summary += f"; done by another user ({caller})"
    return ACCESS_KEY_CHANGE.finding(
        record,
        severity=Severity.HIGH if protected else Severity.MEDIUM,
        summary=summary + failed_suffix(record),
        dedup_parts=(record.principal, record.name, user, key_id(record) or ""),
    )


ACCESS_KEY_CHANGE = Detection(
    id="key-lifecycle.access-key-change",
    techniques=('T1098.001',),
    category=Category.KEY_LIFECYCLE,
    severity=Severity.MEDIUM,
    title="Access key changed outside the rotator",
    events={IAM: KEY_EVENTS},
    match=_not_by_rotator,
    description="Create/Update/DeleteAccessKey not made by the rotator; HIGH for a managed CI user.",
)

#: Emitted by the daily credential-report audit (credential_report.py), never by an event.
CREDENTIAL_REPORT = Detection(
    id="key-lifecycle.credential-report",
    category=Category.KEY_LIFECYCLE,
    severity=Severity.MEDIUM,
    title="Credential report: access keys need attention",
    events={},
    description="Daily digest: keys over the age policy, active keys unused, users with two active keys.",
)

DETECTIONS = (ACCESS_KEY_CHANGE, CREDENTIAL_REPORT)
