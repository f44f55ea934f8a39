"""Leaked credentials: AWS Health RISK events and AWS's own quarantine policy on a user."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import HEALTH_SOURCE, Record

IAM = "iam.amazonaws.com"
QUARANTINE_POLICY_NAMES = names(
    "AWSExposedCredentialPolicy_DO_NOT_REMOVE", "AWSCompromisedKeyQuarantine", "AWSCompromisedKeyQuarantineV2",
    "AWSCompromisedKeyQuarantineV3",
)


def _health_risk(record: Record, ctx: AuditContext) -> MatchResult:
    if record.kind != "health":
        return False  # a (forged) CloudTrail record claiming eventSource aws.health
    event = record.health
    if event.service != "RISK" and not event.eventTypeCode.startswith("AWS_RISK_"):
        return False
    keys = sorted({e.entityValue for e in event.affectedEntities or () if e.entityValue})
    return HEALTH_RISK.finding(
        record,
        summary=f"AWS Health {event.eventTypeCode}: AWS reports credentials exposed or compromised "
        f"({', '.join(keys) or 'no entity listed'}). Rotate them now; the rotator starts an emergency "
        "rotation for keys of managed users.",
        resources=keys,
        dedup_parts=(event.eventArn or "", event.communicationId or "", *keys),
    )


def _quarantined(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name == "PutUserPolicy":
        policy = record.param("policyName")
        hit = policy in QUARANTINE_POLICY_NAMES
    else:
        policy = record.param("policyArn")
        hit = "AWSCompromisedKeyQuarantine" in policy
    if not hit:
        return False
    target = record.param("userName") or record.param("roleName") or record.param("groupName") or "?"
    return QUARANTINE.finding(
        record,
        summary=f"{policy} was attached to {target} by {record.principal}: AWS found a leaked access key "
        "of this identity and quarantined it",
    )


HEALTH_RISK = Detection(
    id="exposure.health-risk",
    techniques=('T1552.001', 'T1078.004'),
    category=Category.EXPOSURE,
    severity=Severity.CRITICAL,
    title="AWS reports exposed credentials",
    events={HEALTH_SOURCE: None},
    match=_health_risk,
    description="AWS Health RISK events (AWS_RISK_CREDENTIALS_EXPOSED, ..._COMPROMISED, IAM quarantine).",
)

QUARANTINE = Detection(
    id="exposure.quarantine-policy-attached",
    techniques=('T1078.004',),
    category=Category.EXPOSURE,
    severity=Severity.CRITICAL,
    title="AWS compromised-key quarantine policy attached",
    events={IAM: names("AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy", "PutUserPolicy")},
    match=_quarantined,
    suppresses=("iam-policy.change",),
    description="AWSCompromisedKeyQuarantine* / AWSExposedCredentialPolicy_DO_NOT_REMOVE on an identity.",
)

DETECTIONS = (HEALTH_RISK, QUARANTINE)
