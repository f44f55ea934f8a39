"""Root user: access key creation and any activity (CIS 4.3)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import ANY, Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

_READ_PREFIXES = ("Get", "List", "Describe", "Head", "Lookup", "Search", "Check")


def is_root(record: Record) -> bool:
    return record.identity.type == "Root"


def _root_key_created(record: Record, ctx: AuditContext) -> MatchResult:
    # Root creating a key for an IAM user passes userName; without it the key is root's own.
    return is_root(record) and not record.param("userName")


def _root_activity(record: Record, ctx: AuditContext) -> MatchResult:
    if record.identity.type != "Root" or record.identity.invokedBy:
        return False
    event = record.cloudtrail
    if event.eventType == "AwsServiceEvent":
        return False
    if record.name == "ConsoleLogin" and record.response.get("ConsoleLogin") != "Success":
        return False  # a failed root sign-in is not root usage; console-login.failure reports it
    read_only = event.readOnly if event.readOnly is not None else record.name.startswith(_READ_PREFIXES)
    if record.source == "signin.amazonaws.com":
        what = "signed in to the console"
    else:
        what = f"called {record.source.split('.', 1)[0]}:{event.eventName}"
    return ROOT_ACTIVITY.finding(
        record,
        severity=Severity.HIGH if read_only or record.source == "signin.amazonaws.com" else Severity.CRITICAL,
        summary=f"The root user of account {record.account} {what} from {event.sourceIPAddress}",
        dedup_parts=(record.account or "", record.name),
    )


ROOT_ACCESS_KEY_CREATED = Detection(
    id="root.access-key-created",
    techniques=('T1098.001', 'T1078.004'),
    category=Category.ROOT,
    severity=Severity.CRITICAL,
    title="Root access key created",
    events={"iam.amazonaws.com": names("CreateAccessKey")},
    match=_root_key_created,
    suppresses=("root.activity", "key-lifecycle.access-key-change"),
    description="CreateAccessKey by the root user for itself (CIS: no root access keys).",
)

ROOT_ACTIVITY = Detection(
    id="root.activity",
    techniques=('T1078.004',),
    category=Category.ROOT,
    severity=Severity.CRITICAL,
    title="Root user activity",
    events={ANY: None},
    match=_root_activity,
    description="Any root call not made by an AWS service (CIS 4.3); HIGH for sign-in/read-only.",
)

#: Emitted by the daily credential-report audit when root holds an access key.
ROOT_ACCESS_KEY_PRESENT = Detection(
    id="root.access-key-present",
    category=Category.ROOT,
    severity=Severity.CRITICAL,
    title="Root user has an access key",
    events={},
    description="Credential report shows an access key on the root user (CIS: no root access keys).",
)

DETECTIONS = (ROOT_ACCESS_KEY_CREATED, ROOT_ACTIVITY, ROOT_ACCESS_KEY_PRESENT)
