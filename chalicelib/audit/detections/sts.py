"""STS: the rotator's role assumed by anything but an AWS service; denied AssumeRole calls."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.detections.unauthorized import is_denied
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

STS = "sts.amazonaws.com"
ASSUME = names("AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML")


def _rotator_assumed(record: Record, ctx: AuditContext) -> MatchResult:
    if record.error_code or not ctx.is_rotator_role_arn(record.param("roleArn")):
        return False
    identity = record.identity
    # Lambda and Step Functions assume the role as AWSService principals; anything else is a person
    # or a workload holding the rotator's powers.
    if identity.type == "AWSService" or identity.invokedBy:
        return False
    return ROTATOR_ASSUMED.finding(
        record,
        summary=f"{record.principal} assumed the rotator's role {record.param('roleArn')} "
        f"(session {record.param('roleSessionName') or '?'}) from {record.cloudtrail.sourceIPAddress}",
    )


def _denied(record: Record, ctx: AuditContext) -> MatchResult:
    if not record.error_code or not is_denied(record.error_code):
        return False
    role = record.param("roleArn")
    rotator = ctx.is_rotator_role_arn(role)
    return ASSUME_DENIED.finding(
        record,
        severity=Severity.HIGH if rotator else Severity.MEDIUM,
        summary=f"{record.principal} was denied sts:{record.name} on {role or '?'}"
        + (" — the rotator's role" if rotator else ""),
        dedup_parts=(record.principal, record.name, role),
    )


ROTATOR_ASSUMED = Detection(
    id="sts.rotator-role-assumed",
    techniques=('T1078.004',),
    category=Category.STS,
    severity=Severity.HIGH,
    title="Rotator role assumed outside its services",
    events={STS: ASSUME},
    match=_rotator_assumed,
    description="Successful AssumeRole of the rotator's role by a principal that is not an AWS service.",
)

ASSUME_DENIED = Detection(
    id="sts.assume-role-denied",
    techniques=('T1078.004',),
    category=Category.STS,
    severity=Severity.MEDIUM,
    title="AssumeRole denied",
    events={STS: ASSUME},
    match=_denied,
    suppresses=("unauthorized-call.access-denied",),
    description="Denied AssumeRole*; HIGH when the target is the rotator's role.",
)

DETECTIONS = (ROTATOR_ASSUMED, ASSUME_DENIED)
