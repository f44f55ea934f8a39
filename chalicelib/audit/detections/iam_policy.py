"""IAM policy changes (CIS 4.4 plus privilege-escalation relatives)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

IAM = "iam.amazonaws.com"
CIS_POLICY_EVENTS = names(
    "DeleteGroupPolicy", "DeleteRolePolicy", "DeleteUserPolicy", "PutGroupPolicy", "PutRolePolicy",
    "PutUserPolicy", "CreatePolicy", "DeletePolicy", "CreatePolicyVersion", "DeletePolicyVersion",
    "AttachRolePolicy", "DetachRolePolicy", "AttachUserPolicy", "DetachUserPolicy", "AttachGroupPolicy",
    "DetachGroupPolicy",
)
EXTRA_POLICY_EVENTS = names(
    "SetDefaultPolicyVersion", "UpdateAssumeRolePolicy", "PutRolePermissionsBoundary",
    "DeleteRolePermissionsBoundary", "PutUserPermissionsBoundary", "DeleteUserPermissionsBoundary",
)


def _change(record: Record, ctx: AuditContext) -> MatchResult:
    if ctx.announced_role_change(record):
        return False  # graduation's own, announced change to a role it manages (the rotator's identity + intent)
    grant = policy_grants.merge(
        policy_grants.assess(record.params.get("policyDocument"), record.account,
                             resource_policy=record.name == "UpdateAssumeRolePolicy"),
        policy_grants.managed_policy(record.param("policyArn")),
    )
    reasons = list(grant.reasons)
    user = record.param("userName")
    if ctx.is_protected_user(user):
        reasons.append(f"targets managed user {user}")
    if not reasons:
        return True
    return POLICY_CHANGE.finding(
        record,
        severity=grant.severity or Severity.HIGH,
        summary=f"{record.principal} called iam:{record.name} — " + "; ".join(reasons) + failed_suffix(record),
    )


POLICY_CHANGE = Detection(
    id="iam-policy.change",
    category=Category.IAM_POLICY,
    severity=Severity.MEDIUM,
    title="IAM policy changed",
    events={IAM: CIS_POLICY_EVENTS | EXTRA_POLICY_EVENTS},
    match=_change,
    techniques=("T1098", "T1098.003", "T1484"),
    description="The 16 CIS 4.4 IAM policy events plus SetDefaultPolicyVersion, trust policy and "
    "permissions-boundary changes; HIGH (CRITICAL for a trust policy anyone may assume) by what the "
    "document grants (policy_grants), for an admin-equivalent AWS managed policy or a managed CI user.",
)

DETECTIONS = (POLICY_CHANGE,)
