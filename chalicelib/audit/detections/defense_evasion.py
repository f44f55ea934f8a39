"""Turning off the other security tools (ATT&CK T1562 Impair Defenses).

Reference: SigmaHQ's AWS CloudTrail rules (aws_guardduty_disruption, aws_securityhub_finding_evasion,
aws_ec2_disable_encryption, aws_delete_identity_trail...) and the ATT&CK cloud matrix. Deleting or
disabling a detector or a log is HIGH: nothing routine does it without a change ticket, and it blinds
every later alert. Suspended versioning, disabled EBS default encryption and suppressed Security Hub
findings are MEDIUM: they weaken recovery or hide findings, and are sometimes done on purpose.
"""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names, walk_strings
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

GUARDDUTY = "guardduty.amazonaws.com"
SECURITYHUB = "securityhub.amazonaws.com"
EC2 = "ec2.amazonaws.com"
S3 = "s3.amazonaws.com"
RESOLVER = "route53resolver.amazonaws.com"
ACCESS_ANALYZER = "access-analyzer.amazonaws.com"
MACIE = "macie2.amazonaws.com"

GUARDDUTY_EVENTS = names(
    "DeleteDetector", "UpdateDetector", "CreateIPSet", "UpdateIPSet", "CreateFilter", "UpdateFilter",
    "DisassociateFromMasterAccount", "DisassociateFromAdministratorAccount", "DeleteMembers",
    "DisassociateMembers", "StopMonitoringMembers",
)


def _guardduty(record: Record, ctx: AuditContext) -> MatchResult:
    name = record.name
    params = record.params
    if name == "UpdateDetector":
        if params.get("enable") is not False:
            return False
        what = "disabled a GuardDuty detector"
    elif name in ("CreateIPSet", "UpdateIPSet"):
        # Addresses on a trusted IP list raise no GuardDuty findings: an attacker lists their own.
        what = f"changed a GuardDuty trusted IP list ({record.param('name') or record.param('ipSetId') or '?'})"
    elif name in ("CreateFilter", "UpdateFilter"):
        if params.get("action") != "ARCHIVE":
            return False
        what = f"added a GuardDuty filter that auto-archives findings ({record.param('name') or '?'})"
    elif name == "DeleteDetector":
        what = "deleted a GuardDuty detector"
    else:
        what = f"detached GuardDuty monitoring ({name})"
    return GUARDDUTY_IMPAIRED.finding(
        record, summary=f"{record.principal} {what}{failed_suffix(record)}",
        dedup_parts=(record.principal, name, record.param("detectorId")),
    )


def _securityhub(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name != "BatchUpdateFindings":
        return True
    workflow = record.params.get("Workflow") or record.params.get("workflow")
    status = (workflow.get("Status") or workflow.get("status")) if isinstance(workflow, dict) else None
    if status != "SUPPRESSED":
        return False
    count = record.params.get("FindingIdentifiers") or record.params.get("findingIdentifiers")
    return SECURITYHUB_IMPAIRED.finding(
        record,
        severity=Severity.MEDIUM,
        summary=f"{record.principal} suppressed {len(count) if isinstance(count, list) else 'some'} "
        f"Security Hub finding(s){failed_suffix(record)}",
    )


def _versioning(record: Record, ctx: AuditContext) -> MatchResult:
    if "Suspended" not in walk_strings(record.params.get("VersioningConfiguration")):
        return False
    return VERSIONING_SUSPENDED.finding(
        record, summary=f"{record.principal} suspended versioning of bucket {record.param('bucketName') or '?'}"
        f"{failed_suffix(record)}",
    )


def _macie(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name == "UpdateMacieSession" and record.param("status") != "PAUSED":
        return False
    return ANALYZER_REMOVED.finding(record)


GUARDDUTY_IMPAIRED = Detection(
    id="defense-evasion.guardduty-impaired",
    category=Category.DEFENSE_EVASION,
    severity=Severity.HIGH,
    title="GuardDuty disabled or blinded",
    events={GUARDDUTY: GUARDDUTY_EVENTS},
    match=_guardduty,
    techniques=("T1562.001",),
    description="Detector deleted or disabled, trusted IP list created/changed, auto-archive filter, "
    "member accounts detached.",
)

SECURITYHUB_IMPAIRED = Detection(
    id="defense-evasion.securityhub-impaired",
    category=Category.DEFENSE_EVASION,
    severity=Severity.HIGH,
    title="Security Hub disabled or findings suppressed",
    events={SECURITYHUB: names("DisableSecurityHub", "BatchDisableStandards", "DisableImportFindingsForProduct",
                               "BatchUpdateFindings")},
    match=_securityhub,
    techniques=("T1562.001",),
    description="Security Hub or a standard disabled (HIGH); findings set to SUPPRESSED (MEDIUM).",
)

LOGS_DELETED = Detection(
    id="defense-evasion.network-logs-deleted",
    category=Category.DEFENSE_EVASION,
    severity=Severity.HIGH,
    title="VPC Flow Logs or Resolver query logging removed",
    events={EC2: names("DeleteFlowLogs"),
            RESOLVER: names("DeleteResolverQueryLogConfig", "DisassociateResolverQueryLogConfig")},
    techniques=("T1562.008",),
    description="The network and DNS logs an investigation of exfiltration relies on.",
)

VERSIONING_SUSPENDED = Detection(
    id="defense-evasion.bucket-versioning-suspended",
    category=Category.DEFENSE_EVASION,
    severity=Severity.MEDIUM,
    title="S3 bucket versioning suspended",
    events={S3: names("PutBucketVersioning")},
    match=_versioning,
    techniques=("T1490",),
    description="Overwritten or deleted objects can no longer be recovered (ransomware preparation).",
)

EBS_ENCRYPTION_DISABLED = Detection(
    id="defense-evasion.ebs-default-encryption-disabled",
    category=Category.DEFENSE_EVASION,
    severity=Severity.MEDIUM,
    title="EBS encryption by default disabled",
    events={EC2: names("DisableEbsEncryptionByDefault")},
    techniques=("T1562.001",),
    description="New volumes and snapshot copies in the region are unencrypted.",
)

ANALYZER_REMOVED = Detection(
    id="defense-evasion.analyzer-removed",
    category=Category.DEFENSE_EVASION,
    severity=Severity.HIGH,
    title="IAM Access Analyzer or Macie removed",
    events={ACCESS_ANALYZER: names("DeleteAnalyzer"),
            MACIE: names("DisableMacie", "UpdateMacieSession", "DisableOrganizationAdminAccount")},
    match=_macie,
    techniques=("T1562.001",),
    description="The tools that report public or cross-account access and exposed data.",
)

DETECTIONS = (GUARDDUTY_IMPAIRED, SECURITYHUB_IMPAIRED, LOGS_DELETED, VERSIONING_SUSPENDED, EBS_ENCRYPTION_DISABLED,
              ANALYZER_REMOVED)
