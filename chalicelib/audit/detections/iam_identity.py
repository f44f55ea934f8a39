"""IAM identities: users, console passwords, group membership, MFA devices."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

IAM = "iam.amazonaws.com"


def _escalated(detection: Detection, record: Record, ctx: AuditContext) -> MatchResult:
    user = record.param("userName")
    if not ctx.is_protected_user(user):
        return True
    return detection.finding(
        record,
        severity=Severity.HIGH,
        summary=f"{record.principal} called iam:{record.cloudtrail.eventName} on managed CI user {user}",
    )


def _user_deleted(record: Record, ctx: AuditContext) -> MatchResult:
    return _escalated(USER_DELETED, record, ctx)


def _login_profile(record: Record, ctx: AuditContext) -> MatchResult:
    return _escalated(LOGIN_PROFILE, record, ctx)


def _group_membership(record: Record, ctx: AuditContext) -> MatchResult:
    return _escalated(GROUP_MEMBERSHIP, record, ctx)


USER_CREATED = Detection(
    id="iam-identity.user-created",
    techniques=('T1136.003',),
    category=Category.IAM_IDENTITY,
    severity=Severity.MEDIUM,
    title="IAM user created",
    events={IAM: names("CreateUser")},
    description="A new long-lived identity.",
)

USER_DELETED = Detection(
    id="iam-identity.user-deleted",
    techniques=('T1531',),
    category=Category.IAM_IDENTITY,
    severity=Severity.MEDIUM,
    title="IAM user deleted",
    events={IAM: names("DeleteUser")},
    match=_user_deleted,
    description="HIGH when the user is a managed CI user (its pipelines will break).",
)

LOGIN_PROFILE = Detection(
    id="iam-identity.login-profile-change",
    techniques=('T1098',),
    category=Category.IAM_IDENTITY,
    severity=Severity.MEDIUM,
    title="Console password created or changed",
    events={IAM: names("CreateLoginProfile", "UpdateLoginProfile", "DeleteLoginProfile")},
    match=_login_profile,
    description="HIGH for a managed CI user: it should never have a console password.",
)

GROUP_MEMBERSHIP = Detection(
    id="iam-identity.group-membership",
    techniques=('T1098',),
    category=Category.IAM_IDENTITY,
    severity=Severity.MEDIUM,
    title="User added to an IAM group",
    events={IAM: names("AddUserToGroup")},
    match=_group_membership,
    description="Group membership grants the group's policies; HIGH for a managed CI user.",
)

MFA_REMOVED = Detection(
    id="iam-identity.mfa-removed",
    techniques=('T1556.006',),
    category=Category.IAM_IDENTITY,
    severity=Severity.HIGH,
    title="MFA device deactivated or deleted",
    events={IAM: names("DeactivateMFADevice", "DeleteVirtualMFADevice")},
    description="Removing MFA is a common step before taking over an account.",
)

DETECTIONS = (USER_CREATED, USER_DELETED, LOGIN_PROFILE, GROUP_MEMBERSHIP, MFA_REMOVED)
