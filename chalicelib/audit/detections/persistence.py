"""Persistence outside IAM users and roles: other ways back in once a key is rotated.

Reference: SigmaHQ's AWS CloudTrail rules (aws_iam_roles_anywhere_*, aws_sso_idp_change,
aws_ec2_startup_script_change, aws_lambda_function_url, aws_ssm_malicious_usage...) and the ATT&CK cloud
matrix. A new trust path into the account (Roles Anywhere, SAML/OIDC provider, Identity Center identity
source, a role trusting another account, a function given away) is HIGH; running commands on instances and
updating someone's function code are MEDIUM: operators do both daily, and the finding names who did.
"""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record
from chalicelib.federation import issuer_host

IAM = "iam.amazonaws.com"
ROLES_ANYWHERE = "rolesanywhere.amazonaws.com"
SSO = "sso.amazonaws.com"
SSO_DIRECTORY = "sso-directory.amazonaws.com"
EC2 = "ec2.amazonaws.com"
SSM = "ssm.amazonaws.com"
LAMBDA = "lambda.amazonaws.com"


def _user_data(record: Record, ctx: AuditContext) -> MatchResult:
    if "userData" not in record.params:
        return False
    return USER_DATA.finding(
        record, summary=f"{record.principal} changed the user data (boot script) of instance "
        f"{record.param('instanceId') or '?'}{failed_suffix(record)}",
    )


def _lambda_permission(record: Record, ctx: AuditContext) -> MatchResult:
    function = record.param("functionName")
    if record.name in ("CreateFunctionUrlConfig", "UpdateFunctionUrlConfig"):
        if record.param("authType") != "NONE":
            return False
        grant = policy_grants.Assessment(Severity.HIGH, ("a public function URL (authType NONE)",))
    else:
        if record.param("functionUrlAuthType") == "NONE":
            grant = policy_grants.Assessment(Severity.HIGH, ("invocable by its public URL (authType NONE)",))
        else:
            narrowed = any(record.param(p) for p in ("sourceArn", "sourceAccount", "principalOrgID"))
            grant = policy_grants.principal_grant(record.param("principal"), record.account, narrowed)
    if not grant:
        return False
    return FUNCTION_SHARED.finding(
        record, severity=grant.severity,
        summary=f"{record.principal} called lambda:{record.name} on {function or '?'} — "
        + "; ".join(grant.reasons) + failed_suffix(record),
    )


def _identity_provider(record: Record, ctx: AuditContext) -> MatchResult:
    # Graduation creates the OIDC provider or adds its audience, announcing each call (the rotator's identity +
    # intent, as for its roles): expected, not a new trust path.
    arn = record.param("openIDConnectProviderArn") or str(record.response.get("openIDConnectProviderArn") or "")
    provider = arn.split(":oidc-provider/", 1)[1] if ":oidc-provider/" in arn else issuer_host(record.param("url"))
    return not ctx.announced_provider_change(record, provider)


def _foreign_code(record: Record, ctx: AuditContext) -> MatchResult:
    function = record.param("functionName")
    # The rotator's own functions are self-protection's (HIGH there); a name may be a full ARN.
    return not ctx.owns(function.rsplit(":function:", 1)[-1].split(":", 1)[0])


def _role_trust(record: Record, ctx: AuditContext) -> MatchResult:
    grant = policy_grants.assess(record.params.get("assumeRolePolicyDocument"), record.account,
                                 resource_policy=True)
    if not grant:
        return False
    return ROLE_TRUST_OPENED.finding(
        record, severity=grant.severity,
        summary=f"{record.principal} created role {record.param('roleName') or '?'} whose trust policy: "
        + "; ".join(grant.reasons) + failed_suffix(record),
    )


ROLES_ANYWHERE_CHANGE = Detection(
    id="persistence.roles-anywhere",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="IAM Roles Anywhere trust anchor or profile changed",
    events={ROLES_ANYWHERE: names("CreateTrustAnchor", "UpdateTrustAnchor", "EnableTrustAnchor", "CreateProfile",
                                  "UpdateProfile", "EnableProfile")},
    techniques=("T1098.001", "T1556"),
    description="A certificate authority that can mint role sessions from outside AWS.",
)

IDENTITY_PROVIDER = Detection(
    id="persistence.identity-provider",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="SAML/OIDC identity provider created or changed",
    events={IAM: names("CreateSAMLProvider", "UpdateSAMLProvider", "CreateOpenIDConnectProvider",
                       "UpdateOpenIDConnectProviderThumbprint", "AddClientIDToOpenIDConnectProvider")},
    match=_identity_provider,
    techniques=("T1484.002", "T1606.002"),
    description="A federation trust: whoever controls the provider can assume roles that trust it.",
)

IDENTITY_SOURCE = Detection(
    id="persistence.identity-center-source",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="IAM Identity Center identity source changed",
    events={SSO: names("AssociateDirectory", "DisassociateDirectory"),
            SSO_DIRECTORY: names("CreateExternalIdPConfigurationForDirectory",
                                 "UpdateExternalIdPConfigurationForDirectory",
                                 "EnableExternalIdPConfigurationForDirectory")},
    techniques=("T1484.002",),
    description="Who may sign in to every account of the organization.",
)

USER_DATA = Detection(
    id="persistence.instance-user-data",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="EC2 instance user data changed",
    events={EC2: names("ModifyInstanceAttribute")},
    match=_user_data,
    techniques=("T1059.009", "T1543"),
    description="User data runs as root at the next start: a boot-time backdoor.",
)

SSM_COMMAND = Detection(
    id="persistence.ssm-command",
    category=Category.PERSISTENCE,
    severity=Severity.MEDIUM,
    title="SSM command or session on instances",
    events={SSM: names("SendCommand", "StartSession")},
    techniques=("T1651",),
    description="Commands run as root on managed instances (HIGH through managed-user.* when a CI key does it).",
)

FUNCTION_SHARED = Detection(
    id="persistence.lambda-shared",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="Lambda function given to an external principal or made public",
    events={LAMBDA: names("AddPermission", "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig")},
    match=_lambda_permission,
    techniques=("T1648", "T1098"),
    description="AddPermission to principal * (unconditioned) or another account; a function URL with "
    "authType NONE.",
)

FOREIGN_CODE = Detection(
    id="persistence.lambda-code-updated",
    category=Category.PERSISTENCE,
    severity=Severity.MEDIUM,
    title="Lambda function code updated",
    events={LAMBDA: names("UpdateFunctionCode")},
    match=_foreign_code,
    techniques=("T1525", "T1648"),
    description="Code of a function other than the rotator's own (those are self-protection findings).",
)

ROLE_TRUST_OPENED = Detection(
    id="persistence.role-trust-opened",
    category=Category.PERSISTENCE,
    severity=Severity.HIGH,
    title="Role created that trusts another account or everyone",
    events={IAM: names("CreateRole")},
    match=_role_trust,
    techniques=("T1098.003", "T1078.004"),
    description="A new role whose trust policy (policy_grants) admits another account or any principal.",
)

DETECTIONS = (ROLES_ANYWHERE_CHANGE, IDENTITY_PROVIDER, IDENTITY_SOURCE, USER_DATA, SSM_COMMAND, FUNCTION_SHARED,
              FOREIGN_CODE, ROLE_TRUST_OPENED)
