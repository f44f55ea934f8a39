"""Exfiltration and destruction: data handed to another account or made public, data destroyed.

Reference: SigmaHQ's AWS CloudTrail rules (aws_snapshot_backup_exfiltration, aws_ec2_ami_shared_public,
aws_rds_public_db_restore, aws_rds_change_master_password, aws_kms_imported_key_material_usage,
aws_s3_bucket_replication...) and the ATT&CK cloud matrix (T1537 Transfer Data to Cloud Account, T1485 Data
Destruction, T1486 Data Encrypted for Impact). Sharing or exposing data outside the account, importing key
material and unrecoverable deletion are HIGH; deletion with a final snapshot, bucket deletion and a master
password reset are MEDIUM (routine in teardown and operations, still worth a look).
"""

from __future__ import annotations

from typing import Any

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections import policy_grants
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names, walk_strings
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

EC2 = "ec2.amazonaws.com"
RDS = "rds.amazonaws.com"
KMS = "kms.amazonaws.com"
S3 = "s3.amazonaws.com"
SQS = "sqs.amazonaws.com"
SNS = "sns.amazonaws.com"
SECRETS = "secretsmanager.amazonaws.com"
ECR = "ecr.amazonaws.com"


def _added_to(value: Any) -> list[str]:
    """EC2's ``{add: {items: [{userId}|{group: all}]}}``: the accounts added, ``all`` for public."""
    if not isinstance(value, dict):
        return []
    add = value.get("add")
    items = add.get("items") if isinstance(add, dict) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            who = item.get("userId") or item.get("group")
            if isinstance(who, str):
                out.append(who)
    return out


def _shared_with(record: Record) -> list[str]:
    params = record.params
    if record.source == EC2:
        return _added_to(params.get("createVolumePermission") or params.get("launchPermission"))
    if record.param("attributeName") != "restore":
        return []
    values = params.get("valuesToAdd")
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _snapshot_shared(record: Record, ctx: AuditContext) -> MatchResult:
    shared = [who for who in _shared_with(record) if who != record.account]
    if not shared:
        return False
    public = "all" in shared
    target = (record.param("snapshotId") or record.param("imageId") or record.param("dBSnapshotIdentifier")
              or record.param("dBClusterSnapshotIdentifier") or "?")
    return SNAPSHOT_SHARED.finding(
        record,
        summary=f"{record.principal} " + (f"made {target} public" if public else
                                          f"shared {target} with {', '.join(sorted(shared)[:3])}")
        + failed_suffix(record),
    )


def _public_db(record: Record, ctx: AuditContext) -> MatchResult:
    if record.params.get("publiclyAccessible") is not True:
        return False
    return DB_PUBLIC.finding(
        record, summary=f"{record.principal} called rds:{record.name} with publiclyAccessible=true on "
        f"{record.param('dBInstanceIdentifier') or '?'}{failed_suffix(record)}",
    )


def _db_deleted(record: Record, ctx: AuditContext) -> MatchResult:
    unrecoverable = record.params.get("skipFinalSnapshot") is True
    target = record.param("dBClusterIdentifier") or record.param("dBInstanceIdentifier") or "?"
    return DB_DESTROYED.finding(
        record,
        severity=Severity.HIGH if unrecoverable else Severity.MEDIUM,
        summary=f"{record.principal} called rds:{record.name} on {target}"
        + (" without a final snapshot" if unrecoverable else "") + failed_suffix(record),
    )


def _master_password(record: Record, ctx: AuditContext) -> MatchResult:
    # CloudTrail masks the value; its presence is the change.
    return "masterUserPassword" in record.params


def _replication(record: Record, ctx: AuditContext) -> MatchResult:
    accounts = {s for s in walk_strings(record.params.get("ReplicationConfiguration"))
                if s.isdigit() and len(s) == 12 and s != record.account}
    if not accounts:
        return False
    return BUCKET_REPLICATED_OUT.finding(
        record, summary=f"{record.principal} set bucket {record.param('bucketName') or '?'} to replicate to "
        f"account {', '.join(sorted(accounts))}{failed_suffix(record)}",
    )


def _resource_policy(record: Record, ctx: AuditContext) -> MatchResult:
    params = record.params
    if record.source == SQS:
        attributes = params.get("attributes")
        document = attributes.get("Policy") if isinstance(attributes, dict) else None
    elif record.source == SNS:
        if record.param("attributeName") != "Policy":
            return False
        document = params.get("attributeValue")
    elif record.source == SECRETS:
        document = params.get("resourcePolicy")
    else:
        document = params.get("policyText")
    grant = policy_grants.assess(document, record.account, resource_policy=True)
    if not grant:
        return False
    target = (record.param("queueUrl") or record.param("topicArn") or record.param("secretId")
              or record.param("repositoryName") or "?")
    return RESOURCE_POLICY_OPENED.finding(
        record, severity=grant.severity,
        summary=f"{record.principal} called {record.source.split('.')[0]}:{record.name} on {target} — "
        + "; ".join(grant.reasons) + failed_suffix(record),
    )


SNAPSHOT_SHARED = Detection(
    id="exfiltration.snapshot-shared",
    category=Category.EXFILTRATION,
    severity=Severity.HIGH,
    title="Snapshot or AMI shared with another account or made public",
    events={EC2: names("ModifySnapshotAttribute", "ModifyImageAttribute"),
            RDS: names("ModifyDBSnapshotAttribute", "ModifyDBClusterSnapshotAttribute")},
    match=_snapshot_shared,
    techniques=("T1537",),
    description="EBS snapshots, AMIs, RDS (cluster) snapshots: whoever they are shared with gets the data.",
)

DB_PUBLIC = Detection(
    id="exfiltration.db-made-public",
    category=Category.EXFILTRATION,
    severity=Severity.HIGH,
    title="Database restored or modified as publicly accessible",
    events={RDS: names("RestoreDBInstanceFromDBSnapshot", "RestoreDBInstanceToPointInTime",
                       "RestoreDBInstanceFromS3", "ModifyDBInstance", "CreateDBInstance")},
    match=_public_db,
    techniques=("T1537", "T1578.002"),
    description="A copy of the data reachable from the internet (with the master password the restorer set).",
)

DB_DESTROYED = Detection(
    id="exfiltration.db-deleted",
    category=Category.EXFILTRATION,
    severity=Severity.MEDIUM,
    title="RDS cluster or instance deleted",
    events={RDS: names("DeleteDBCluster", "DeleteDBInstance")},
    match=_db_deleted,
    techniques=("T1485",),
    description="HIGH without a final snapshot (unrecoverable).",
)

DB_PASSWORD = Detection(
    id="exfiltration.db-master-password-changed",
    category=Category.EXFILTRATION,
    severity=Severity.MEDIUM,
    title="RDS master password changed",
    events={RDS: names("ModifyDBInstance", "ModifyDBCluster")},
    match=_master_password,
    techniques=("T1098",),
    description="Whoever resets it can read every table.",
)

KEY_MATERIAL = Detection(
    id="exfiltration.kms-key-material",
    category=Category.EXFILTRATION,
    severity=Severity.HIGH,
    title="KMS key material imported or deleted",
    events={KMS: names("ImportKeyMaterial", "DeleteImportedKeyMaterial")},
    techniques=("T1486", "T1485"),
    description="Encryption under key material the attacker holds, then its deletion: ransomware.",
)

BUCKET_DELETED = Detection(
    id="exfiltration.bucket-deleted",
    category=Category.EXFILTRATION,
    severity=Severity.MEDIUM,
    title="S3 bucket deleted",
    events={S3: names("DeleteBucket")},
    techniques=("T1485",),
    description="The bucket and (it had to be emptied first) its objects are gone.",
)

BUCKET_REPLICATED_OUT = Detection(
    id="exfiltration.bucket-replicated-out",
    category=Category.EXFILTRATION,
    severity=Severity.HIGH,
    title="S3 bucket replicated to another account",
    events={S3: names("PutBucketReplication")},
    match=_replication,
    suppresses=("s3-policy.bucket-policy-change",),
    techniques=("T1537",),
    description="Every new object is copied to an account the organization may not control.",
)

RESOURCE_POLICY_OPENED = Detection(
    id="exfiltration.resource-policy-opened",
    category=Category.EXFILTRATION,
    severity=Severity.HIGH,
    title="Queue, topic, secret or repository policy opened",
    events={SQS: names("SetQueueAttributes", "CreateQueue"), SNS: names("SetTopicAttributes"),
            SECRETS: names("PutResourcePolicy"), ECR: names("SetRepositoryPolicy")},
    match=_resource_policy,
    techniques=("T1537", "T1098"),
    description="A resource policy (policy_grants) open to everyone or another account.",
)

DETECTIONS = (SNAPSHOT_SHARED, DB_PUBLIC, DB_DESTROYED, DB_PASSWORD, KEY_MATERIAL, BUCKET_DELETED,
              BUCKET_REPLICATED_OUT, RESOURCE_POLICY_OPENED)
