"""The product watching itself: its identity used outside a rotation, and its own resources changed."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, failed_suffix, names
from chalicelib.audit.detections.key_lifecycle import IAM, KEY_EVENTS, describe_change, key_id, key_user
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

ROLE_CHANGE_EVENTS = names(
    "UpdateAssumeRolePolicy", "PutRolePolicy", "DeleteRolePolicy", "AttachRolePolicy", "DetachRolePolicy",
    "DeleteRole", "PutRolePermissionsBoundary", "DeleteRolePermissionsBoundary", "UpdateRole",
)
# The local runtime's rotator is an IAM user of the same name.
USER_CHANGE_EVENTS = names(
    "PutUserPolicy", "DeleteUserPolicy", "AttachUserPolicy", "DetachUserPolicy", "DeleteUser",
    "AddUserToGroup", "CreateLoginProfile", "UpdateLoginProfile", "PutUserPermissionsBoundary",
    "DeleteUserPermissionsBoundary",
)
FUNCTION_EVENTS = names(
    "UpdateFunctionCode", "UpdateFunctionConfiguration", "DeleteFunction", "AddPermission", "RemovePermission",
    "PutFunctionConcurrency", "UpdateAlias", "DeleteAlias", "UpdateEventSourceMapping",
    "DeleteEventSourceMapping",
)
RULE_EVENTS = names("DeleteRule", "DisableRule", "RemoveTargets", "PutRule", "PutTargets")
STATE_MACHINE_EVENTS = names("UpdateStateMachine", "DeleteStateMachine")
STORE_EVENTS = {
    "dynamodb.amazonaws.com": names("DeleteTable", "UpdateTimeToLive", "UpdateTable"),
    "sns.amazonaws.com": names("DeleteTopic", "SetTopicAttributes", "Unsubscribe", "RemovePermission"),
    "secretsmanager.amazonaws.com": names("DeleteSecret", "PutResourcePolicy", "DeleteResourcePolicy"),
}


def _outside_rotation(record: Record, ctx: AuditContext) -> MatchResult:
    if not ctx.is_rotator(record):
        return False
    user, key = key_user(record), key_id(record)
    if ctx.intended(user, record.name, key, record.event_time):
        return False  # the workflow announced this exact call: the rotator's own, expected change
    return ROTATOR_OUTSIDE_ROTATION.finding(
        record,
        summary=f"The rotator's identity ({record.principal}) made a key change no rotation announced: "
        f"{describe_change(record)}. Someone may be using the rotator's role by hand."
        + failed_suffix(record),
        dedup_parts=(record.principal, record.name, user, key or ""),
    )


def _rotator_identity_changed(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name in ROLE_CHANGE_EVENTS:
        return record.param("roleName") in ctx.rotator_names
    return record.name in USER_CHANGE_EVENTS and record.param("userName") in ctx.rotator_names


def function_name(value: str) -> str:
    """Lambda accepts a name, a full ARN or a partial ARN (``123:function:name``), maybe qualified."""
    if ":function:" in value:
        value = value.split(":function:", 1)[1]
    return value.split(":", 1)[0]


def _own_function(record: Record, ctx: AuditContext) -> MatchResult:
    return ctx.owns(function_name(record.param("functionName")))


def _own_rule(record: Record, ctx: AuditContext) -> MatchResult:
    name = record.param("name") or record.param("rule")
    return ctx.owns(name.rsplit("/", 1)[-1])


def _own_state_machine(record: Record, ctx: AuditContext) -> MatchResult:
    arn = record.param("stateMachineArn")
    return ":stateMachine:" in arn and ctx.owns(arn.split(":stateMachine:", 1)[1])


def _own_store(record: Record, ctx: AuditContext) -> MatchResult:
    if ctx.is_rotator(record):
        return False
    if record.source == "dynamodb.amazonaws.com":
        name = record.param("tableName").rsplit("/", 1)[-1]
    elif record.source == "sns.amazonaws.com":
        arn = record.param("topicArn") or record.param("subscriptionArn")
        parts = arn.split(":")
        name = parts[5] if len(parts) > 5 else ""
    else:
        secret = record.param("secretId")
        name = secret.split(":secret:", 1)[1] if ":secret:" in secret else secret
    return ctx.owns(name)


ROTATOR_OUTSIDE_ROTATION = Detection(
    id="self-protection.rotator-outside-rotation",
    techniques=('T1098.001',),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotator role used outside a rotation",
    events={IAM: KEY_EVENTS},
    match=_outside_rotation,
    description="A key change by the rotator's identity with no matching intent from the workflow.",
)

ROTATOR_IDENTITY_CHANGED = Detection(
    id="self-protection.rotator-identity-changed",
    techniques=('T1098',),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotator's role or user changed",
    events={IAM: ROLE_CHANGE_EVENTS | USER_CHANGE_EVENTS},
    match=_rotator_identity_changed,
    suppresses=(
        "iam-policy.change", "iam-identity.user-deleted", "iam-identity.login-profile-change",
        "iam-identity.group-membership",
    ),
    description="Trust policy, permissions or existence of the rotator's role (or local IAM user).",
)

FUNCTION_CHANGED = Detection(
    id="self-protection.function-changed",
    techniques=('T1562.001',),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotator Lambda function changed",
    events={"lambda.amazonaws.com": FUNCTION_EVENTS},
    match=_own_function,
    description="Code, configuration, permissions or concurrency of the product's own functions.",
)

RULE_CHANGED = Detection(
    id="self-protection.event-rule-changed",
    techniques=('T1562.001',),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotator EventBridge rule changed",
    events={"events.amazonaws.com": RULE_EVENTS},
    match=_own_rule,
    description="Deleting, disabling or retargeting the rules that feed the audit and the schedule.",
)

STATE_MACHINE_CHANGED = Detection(
    id="self-protection.state-machine-changed",
    techniques=('T1562.001',),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotation state machine changed",
    events={"states.amazonaws.com": STATE_MACHINE_EVENTS},
    match=_own_state_machine,
    description="UpdateStateMachine / DeleteStateMachine on the product's state machine.",
)

STORE_CHANGED = Detection(
    id="self-protection.store-changed",
    techniques=('T1562.001', 'T1485'),
    category=Category.SELF_PROTECTION,
    severity=Severity.HIGH,
    title="Rotator table, topic or escrow changed",
    events=STORE_EVENTS,
    match=_own_store,
    description="The ledger table, the alert topic or an escrow secret deleted or re-permissioned by "
    "someone other than the rotator.",
)

DETECTIONS = (
    ROTATOR_OUTSIDE_ROTATION, ROTATOR_IDENTITY_CHANGED, FUNCTION_CHANGED, RULE_CHANGED, STATE_MACHINE_CHANGED,
    STORE_CHANGED,
)
