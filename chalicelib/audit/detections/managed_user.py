"""What a managed CI user does with its own key: the first moves of whoever holds a leaked one.

A pipeline's key pushes artifacts and deploys; it does not write IAM, mint sessions or sign in to the
console. Sessions minted with GetSessionToken/GetFederationToken keep working after the key is
deactivated (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html),
so minting one is how a leak outlives the emergency rotation. Every finding here is HIGH, and CRITICAL once
the rotator has handled an exposure of that user's key (``AuditContext.exposed_before``).
"""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import ANY, Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

IAM = "iam.amazonaws.com"
STS = "sts.amazonaws.com"
SIGNIN = "signin.amazonaws.com"
MINT_EVENTS = names("GetSessionToken", "GetFederationToken")
#: Read-only IAM calls (CloudTrail's readOnly is not always present; the verb is).
_IAM_READ_VERBS = ("Get", "List", "Generate", "Simulate")
#: The IAM writes that create, empower or keep an identity (the audit rule admits these by name).
IAM_WRITES = names(
    "AddClientIDToOpenIDConnectProvider", "AddRoleToInstanceProfile", "AddUserToGroup", "AttachGroupPolicy",
    "AttachRolePolicy", "AttachUserPolicy", "ChangePassword", "CreateAccessKey", "CreateGroup",
    "CreateInstanceProfile", "CreateLoginProfile", "CreateOpenIDConnectProvider", "CreatePolicy",
    "CreatePolicyVersion", "CreateRole", "CreateSAMLProvider", "CreateServiceSpecificCredential", "CreateUser",
    "CreateVirtualMFADevice", "DeactivateMFADevice", "DeleteAccessKey", "DeleteLoginProfile", "DeletePolicy",
    "DeleteRole", "DeleteRolePolicy", "DeleteUser", "DeleteUserPolicy", "DetachGroupPolicy", "DetachRolePolicy",
    "DetachUserPolicy", "EnableMFADevice", "PutGroupPolicy", "PutRolePermissionsBoundary", "PutRolePolicy",
    "PutUserPermissionsBoundary", "PutUserPolicy", "RemoveUserFromGroup", "ResetServiceSpecificCredential",
    "SetDefaultPolicyVersion", "UpdateAccessKey", "UpdateAssumeRolePolicy", "UpdateLoginProfile", "UpdateRole",
    "UpdateUser", "UploadSSHPublicKey", "UploadSigningCertificate",
)


def _severity(ctx: AuditContext, user: str, record: Record) -> tuple[Severity, str]:
    exposed = ctx.exposed_before(user, record.event_time)
    if exposed is None:
        return Severity.HIGH, ""
    return Severity.CRITICAL, f" — after the exposure of {user}'s key handled at {exposed:%Y-%m-%d %H:%M} UTC"


def _minted(record: Record, ctx: AuditContext) -> MatchResult:
    user = ctx.managed_caller(record)
    if not user:
        return False
    severity, exposed = _severity(ctx, user, record)
    profile = ctx.profile(user)
    console = record.source == SIGNIN
    if not console and not exposed and profile is not None and profile.may_mint_sessions:
        return False
    what = "a console sign-in token" if console else f"a session ({record.name})"
    return SESSION_MINTED.finding(
        record,
        severity=severity,
        summary=f"managed CI user {user} minted {what} from {record.cloudtrail.sourceIPAddress or '?'}: "
        f"the session outlives deactivation of the key{exposed}",
        dedup_parts=(user, record.name, record.cloudtrail.sourceIPAddress or ""),
    )


def _iam_write(record: Record, ctx: AuditContext) -> MatchResult:
    user = ctx.managed_caller(record)
    if not user or record.name.startswith(_IAM_READ_VERBS) or record.cloudtrail.readOnly:
        return False
    severity, exposed = _severity(ctx, user, record)
    target = record.param("userName") or record.param("roleName") or record.param("policyArn")
    return IAM_WRITE.finding(
        record,
        severity=severity,
        summary=f"managed CI user {user} called iam:{record.name}"
        + (f" on {target}" if target else "") + f"{exposed}",
    )


def _unexpected(record: Record, ctx: AuditContext) -> MatchResult:
    user = ctx.managed_caller(record)
    if not user:
        return False
    profile = ctx.profile(user)
    if profile is None:
        return False
    # The version-less name: Lambda logs UpdateFunctionCode20150331v2, profiles say UpdateFunctionCode.
    action = f"{record.source.split('.', 1)[0]}:{record.name}"
    source_ip = record.cloudtrail.sourceIPAddress
    reasons = []
    if not profile.expects(action):
        reasons.append(f"{action} is not in its profile")
    if not profile.from_expected_place(source_ip):
        reasons.append(f"{source_ip} is outside its runners' ranges")
    if not reasons:
        return False
    severity, exposed = _severity(ctx, user, record)
    return UNEXPECTED_CALL.finding(
        record,
        severity=severity,
        summary=f"managed CI user {user}: " + "; ".join(reasons) + exposed,
        dedup_parts=(user, action, source_ip or ""),
    )


UNEXPECTED_CALL = Detection(
    id="managed-user.unexpected-call",
    category=Category.MANAGED_USER,
    severity=Severity.HIGH,
    title="Managed CI user acted outside its profile",
    events={ANY: None},
    match=_unexpected,
    techniques=("T1078.004",),
    description="A call not in the user's profile, or from outside its CIDRs (only events the audit rule "
    "admits are seen); CRITICAL after an exposure.",
)

SESSION_MINTED = Detection(
    id="managed-user.session-minted",
    category=Category.MANAGED_USER,
    severity=Severity.HIGH,
    title="Managed CI user minted a session",
    events={STS: MINT_EVENTS, SIGNIN: names("GetSigninToken")},
    match=_minted,
    suppresses=("managed-user.unexpected-call",),
    techniques=("T1550.001", "T1078.004", "T1021.007"),
    description="GetSessionToken/GetFederationToken (unless the profile allows them) or GetSigninToken with a "
    "CI key: the session survives the key's deactivation; CRITICAL after an exposure.",
)

IAM_WRITE = Detection(
    id="managed-user.iam-write",
    category=Category.MANAGED_USER,
    severity=Severity.HIGH,
    title="Managed CI user wrote IAM",
    events={IAM: IAM_WRITES},
    match=_iam_write,
    suppresses=("managed-user.unexpected-call", "iam-identity.user-created", "iam-policy.change",
                "key-lifecycle.access-key-change"),
    techniques=("T1098", "T1098.001", "T1136.003"),
    description="Any IAM write (CreateUser, CreateAccessKey, policy changes...) made with a CI user's key; "
    "CRITICAL after an exposure.",
)

DETECTIONS = (UNEXPECTED_CALL, SESSION_MINTED, IAM_WRITE)
