"""IAM policy changes (CIS 4.4 plus privilege-escalation relatives)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
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
    reasons = []
    if record.param("policyArn").endswith(":policy/AdministratorAccess"):
        reasons.append("grants AdministratorAccess")
    user = record.param("userName")
    if ctx.is_protected_user(user):
        reasons.append(f"targets managed user {user}")
    if not reasons:
        return True
    return POLICY_CHANGE.finding(
        record,
        severity=Severity.HIGH,
        summary=f"{record.principal} called iam:{record.name} — " + "; ".join(reasons),
    )


POLICY_CHANGE = Detection(
    id="iam-policy.change",
    category=Category.IAM_POLICY,
    severity=Severity.MEDIUM,
    title="IAM policy changed",
    events={IAM: CIS_POLICY_EVENTS | EXTRA_POLICY_EVENTS},
    match=_change,
    description="The 16 CIS 4.4 IAM policy events plus SetDefaultPolicyVersion, trust policy and "
    "permissions-boundary changes; HIGH for AdministratorAccess or a managed CI user.",
)

DETECTIONS = (POLICY_CHANGE,)
