"""Console sign-in: without MFA (CIS 4.2), failures (CIS 4.6), and CI users signing in at all."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

SIGNIN = "signin.amazonaws.com"
LOGIN = {SIGNIN: names("ConsoleLogin")}
FAILURE_MESSAGES = frozenset({"Failed authentication", "No username found in supplied account"})


def _who(record: Record) -> str:
    if record.identity.type == "Root":
        return "root"
    return record.identity.userName or record.principal


def _succeeded(record: Record) -> bool:
    return record.response.get("ConsoleLogin") == "Success" and not record.error_code


def _federated(record: Record) -> bool:
    # SSO/SAML sessions enforce MFA at the IdP; CloudTrail's MFAUsed says nothing about it.
    arn = record.identity.arn or ""
    return "AWSReservedSSO_" in arn or "SamlProviderArn" in record.additional


def _without_mfa(record: Record, ctx: AuditContext) -> MatchResult:
    kind = record.identity.type
    if kind not in ("IAMUser", "Root") or not _succeeded(record) or _federated(record):
        return False
    mfa = record.additional.get("MFAUsed")
    if isinstance(mfa, str) and mfa.lower() == "yes":  # the root samples say "YES"
        return False
    return NO_MFA.finding(
        record,
        severity=Severity.CRITICAL if kind == "Root" else Severity.HIGH,
        summary=f"{_who(record)} signed in to the console without MFA from {record.cloudtrail.sourceIPAddress}",
        dedup_parts=(record.principal, record.cloudtrail.sourceIPAddress or ""),
    )


def _failed(record: Record, ctx: AuditContext) -> MatchResult:
    event = record.cloudtrail
    if event.errorMessage not in FAILURE_MESSAGES and record.response.get("ConsoleLogin") != "Failure":
        return False
    who = _who(record)
    important = record.identity.type == "Root" or ctx.is_protected_user(who)
    return FAILURE.finding(
        record,
        severity=Severity.HIGH if important else Severity.MEDIUM,
        summary=f"Console sign-in failed for {who} from {event.sourceIPAddress}: "
        f"{event.errorMessage or 'Failure'}",
        dedup_parts=(record.account or "", who, event.sourceIPAddress or ""),
    )


def _ci_user(record: Record, ctx: AuditContext) -> MatchResult:
    user = record.identity.userName or ""
    if record.identity.type != "IAMUser" or not _succeeded(record) or not ctx.is_protected_user(user):
        return False
    return CI_USER_LOGIN.finding(
        record,
        summary=f"Managed CI user {user} signed in to the console from {record.cloudtrail.sourceIPAddress}: "
        "it is meant for API keys only, so someone holds a password for it",
    )


NO_MFA = Detection(
    id="console-login.no-mfa",
    techniques=('T1078.004',),
    category=Category.CONSOLE_LOGIN,
    severity=Severity.HIGH,
    title="Console sign-in without MFA",
    events=LOGIN,
    match=_without_mfa,
    suppresses=("root.activity",),
    description="Successful ConsoleLogin of an IAM or root user with MFAUsed != Yes (SSO/SAML excluded).",
)

FAILURE = Detection(
    id="console-login.failure",
    techniques=('T1110',),
    category=Category.CONSOLE_LOGIN,
    severity=Severity.MEDIUM,
    title="Console sign-in failed",
    events=LOGIN,
    match=_failed,
    description="ConsoleLogin failures (CIS 4.6); aggregated per user and source IP by the dedup window.",
)

CI_USER_LOGIN = Detection(
    id="console-login.ci-user",
    techniques=('T1078.004',),
    category=Category.CONSOLE_LOGIN,
    severity=Severity.HIGH,
    title="Managed CI user signed in to the console",
    events=LOGIN,
    match=_ci_user,
    description="A CI user exists for API keys only; a console session means someone holds its password.",
)

DETECTIONS = (NO_MFA, FAILURE, CI_USER_LOGIN)
