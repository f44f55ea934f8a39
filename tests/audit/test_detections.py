"""Every detection: at least one positive and one negative case on real-shaped events.

Cases are data (one row each) and a meta-test checks that no event detection lacks either kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.finding import Finding
from chalicelib.audit.pipeline import classify

from .conftest import (
    ACCOUNT,
    MANAGED,
    ROTATOR_ROLE,
    assumed_role,
    aws_service,
    create_access_key,
    ct,
    eventbridge,
    fixture,
    fixture_record,
    iam_user,
    root,
)
from .depth_cases import ROWS as DEPTH_ROWS
from .test_graduated_role_lifecycle import ROWS as LIFECYCLE_ROWS
from .test_oidc_trust import ROWS as OIDC_ROWS


@dataclass
class Case:
    detection: str
    label: str
    event: Any
    severity: str | None = None  # None: a negative case (the detection must not fire)
    ctx: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.detection}:{'+' if self.severity else '-'}:{self.label}"


def context(**overrides: Any) -> AuditContext:
    base: dict[str, Any] = {"managed_users": {MANAGED}, "rotator_role_name": ROTATOR_ROLE}
    base.update(overrides)
    return AuditContext(**base)


def fired(event: Any, **ctx: Any) -> dict[str, Finding]:
    return {f.detection: f for f in classify(event, context(**ctx))}


EB = eventbridge
SG_OPEN = {
    "groupId": "sg-0123456789abcdef0",
    "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "groups": {},
                                 "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}, "prefixListIds": {}}]},
}
SG_PRIVATE = {
    "groupId": "sg-0123456789abcdef0",
    "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "groups": {},
                                 "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}, "prefixListIds": {}}]},
}
ROTATOR_SM = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:ci-key-rotator-rotation"
ADMIN = assumed_role("Admin", "jane")

CASES = [
    # -- key lifecycle ------------------------------------------------------------------------------
    Case("key-lifecycle.access-key-change", "human creates key for managed user", EB(create_access_key()), "HIGH"),
    Case("key-lifecycle.access-key-change", "key for unmanaged user", EB(create_access_key("bob")), "MEDIUM"),
    Case("key-lifecycle.access-key-change", "admin role deletes managed key",
         EB(ct("DeleteAccessKey", identity=ADMIN, params={"userName": MANAGED, "accessKeyId": "AKIAOLDKEY0000000001"})),
         "HIGH"),
    Case("key-lifecycle.access-key-change", "user deactivates own key (no userName)",
         EB(ct("UpdateAccessKey", params={"accessKeyId": "AKIAOLDKEY0000000001", "status": "Inactive"})), "MEDIUM"),
    Case("key-lifecycle.access-key-change", "key for the rotator's own user",
         EB(create_access_key(ROTATOR_ROLE)), "HIGH"),
    Case("key-lifecycle.access-key-change", "made by the rotator role",
         EB(create_access_key(identity=assumed_role(ROTATOR_ROLE, "rotation-1")))),
    Case("key-lifecycle.access-key-change", "read-only ListAccessKeys", EB(ct("ListAccessKeys", params={"userName": MANAGED}))),
    Case("key-lifecycle.access-key-change", "root creates its own key",
         EB(ct("CreateAccessKey", identity=root(), params=None,
               response={"accessKey": {"accessKeyId": "AKIAROOTKEY000000001", "status": "Active"}}))),
    # -- root ---------------------------------------------------------------------------------------
    Case("root.access-key-created", "root key, requestParameters null",
         EB(ct("CreateAccessKey", identity=root(), params=None,
               response={"accessKey": {"accessKeyId": "AKIAROOTKEY000000001", "status": "Active"}})), "CRITICAL"),
    Case("root.access-key-created", "root creates a key for an IAM user",
         EB(ct("CreateAccessKey", identity=root(), params={"userName": "bob"}))),
    Case("root.access-key-created", "IAM user creates own key", EB(ct("CreateAccessKey", params=None))),
    Case("root.activity", "root console sign-in with MFA (fixture)",
         fixture("signin_ConsoleLogin_Root_success_MFA.raw.json"), "HIGH"),
    Case("root.activity", "root write call", EB(ct("CreateUser", identity=root(), params={"userName": "x"})), "CRITICAL"),
    Case("root.activity", "root read call",
         EB(ct("ListBuckets", "s3.amazonaws.com", identity=root(), readOnly=True)), "HIGH"),
    Case("root.activity", "root failed sign-in (fixture)", fixture("signin_ConsoleLogin_Root_failure.raw.json")),
    Case("root.activity", "root call invoked by a service",
         EB(ct("CreateServiceLinkedRole", identity={**root(), "invokedBy": "support.amazonaws.com"}))),
    Case("root.activity", "AwsServiceEvent", EB(ct("SharedSnapshotCopyInitiated", "ec2.amazonaws.com",
                                                   identity=root(), eventType="AwsServiceEvent"))),
    Case("root.activity", "IAM user sign-in (fixture)", fixture("signin_ConsoleLogin_IAMUser_success_MFA.raw.json")),
    # -- console login ------------------------------------------------------------------------------
    Case("console-login.no-mfa", "IAM user without MFA (fixture)",
         fixture("signin_ConsoleLogin_IAMUser_success_noMFA.raw.json"), "HIGH"),
    Case("console-login.no-mfa", "root without MFA (fixture)",
         fixture("signin_ConsoleLogin_Root_success_noMFA.raw.json"), "CRITICAL"),
    Case("console-login.no-mfa", "IAM user with MFA (fixture)", fixture("signin_ConsoleLogin_IAMUser_success_MFA.raw.json")),
    Case("console-login.no-mfa", "root with MFA 'YES' (fixture)", fixture("signin_ConsoleLogin_Root_success_MFA.raw.json")),
    Case("console-login.no-mfa", "failed sign-in (fixture)", fixture("signin_ConsoleLogin_IAMUser_failure.raw.json")),
    Case("console-login.no-mfa", "CheckMfa step (fixture)", fixture("signin_CheckMfa_IAMUser.raw.json")),
    Case("console-login.no-mfa", "SSO session",
         EB(ct("ConsoleLogin", "signin.amazonaws.com",
               identity=assumed_role("AWSReservedSSO_AdministratorAccess_0123456789abcdef", "jane@example.com"),
               response={"ConsoleLogin": "Success"}, additional={"MFAUsed": "No"}))),
    Case("console-login.no-mfa", "SAML federation",
         EB(ct("ConsoleLogin", "signin.amazonaws.com", identity=iam_user("jane"), response={"ConsoleLogin": "Success"},
               additional={"MFAUsed": "No", "SamlProviderArn": f"arn:aws:iam::{ACCOUNT}:saml-provider/okta"}))),
    Case("console-login.failure", "IAM user failure (fixture)",
         fixture("signin_ConsoleLogin_IAMUser_failure.raw.json"), "MEDIUM"),
    Case("console-login.failure", "root failure (fixture)", fixture("signin_ConsoleLogin_Root_failure.raw.json"), "HIGH"),
    Case("console-login.failure", "unknown user (fixture)",
         fixture("signin_ConsoleLogin_failure_unknown_user.raw.json"), "MEDIUM"),
    Case("console-login.failure", "managed CI user failure (fixture, anaya managed)",
         fixture("signin_ConsoleLogin_IAMUser_failure.raw.json"), "HIGH", {"managed_users": {"anaya"}}),
    Case("console-login.failure", "successful sign-in (fixture)",
         fixture("signin_ConsoleLogin_IAMUser_success_noMFA.raw.json")),
    Case("console-login.failure", "CheckMfa (fixture)", fixture("signin_CheckMfa_IAMUser.raw.json")),
    Case("console-login.ci-user", "managed user signs in (fixture, anaya managed)",
         fixture("signin_ConsoleLogin_IAMUser_success_MFA.raw.json"), "HIGH", {"managed_users": {"anaya"}}),
    Case("console-login.ci-user", "unmanaged user signs in (fixture)",
         fixture("signin_ConsoleLogin_IAMUser_success_MFA.raw.json")),
    # -- unauthorized calls -------------------------------------------------------------------------
    Case("unauthorized-call.access-denied", "AccessDenied by a person",
         EB(ct("GetSecretValue", "secretsmanager.amazonaws.com", error_code="AccessDenied")), "LOW"),
    Case("unauthorized-call.access-denied", "EC2 Client.UnauthorizedOperation",
         EB(ct("RunInstances", "ec2.amazonaws.com", error_code="Client.UnauthorizedOperation")), "LOW"),
    Case("unauthorized-call.access-denied", "AccessDeniedException by the rotator role",
         EB(ct("CreateAccessKey", identity=assumed_role(ROTATOR_ROLE), params={"userName": MANAGED},
               error_code="AccessDenied")), "HIGH"),
    Case("unauthorized-call.access-denied", "denied for a managed CI user",
         EB(ct("PutObject", "s3.amazonaws.com", identity=iam_user(MANAGED), error_code="AccessDenied")), "HIGH"),
    Case("unauthorized-call.access-denied", "non-auth error (fixture)",
         fixture("cloudtrail_UpdateTrail_TrailNotFoundException.raw.json")),
    Case("unauthorized-call.access-denied", "HeadBucket probe",
         EB(ct("HeadBucket", "s3.amazonaws.com", error_code="AccessDenied"))),
    Case("unauthorized-call.access-denied", "log delivery",
         EB(ct("PutObject", "s3.amazonaws.com", error_code="AccessDenied", sourceIPAddress="delivery.logs.amazonaws.com"))),
    Case("unauthorized-call.access-denied", "anonymous principal",
         EB(ct("GetObject", "s3.amazonaws.com", identity={"type": "AWSAccount", "accountId": "ANONYMOUS_PRINCIPAL"},
               error_code="AccessDenied"))),
    Case("unauthorized-call.access-denied", "successful call", EB(ct("GetUser"))),
    # -- IAM policy ---------------------------------------------------------------------------------
    Case("iam-policy.change", "PutUserPolicy on another user",
         EB(ct("PutUserPolicy", params={"userName": "bob", "policyName": "p", "policyDocument": "{}"})), "MEDIUM"),
    Case("iam-policy.change", "AdministratorAccess attached",
         EB(ct("AttachRolePolicy", params={"roleName": "app",
                                           "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})), "HIGH"),
    Case("iam-policy.change", "policy attached to a managed CI user",
         EB(ct("AttachUserPolicy", params={"userName": MANAGED,
                                           "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})), "HIGH"),
    Case("iam-policy.change", "read-only ListPolicies", EB(ct("ListPolicies"))),
    Case("iam-policy.change", "quarantine policy (reported as exposure instead)",
         EB(ct("AttachUserPolicy", identity=aws_service("iam.amazonaws.com"),
               params={"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}))),
    Case("iam-policy.change", "rotator role policy (reported as self-protection instead)",
         EB(ct("PutRolePolicy", params={"roleName": ROTATOR_ROLE, "policyName": "p", "policyDocument": "{}"}))),
    # -- IAM identity -------------------------------------------------------------------------------
    Case("iam-identity.user-created", "CreateUser (fixture)", fixture("iam_CreateUser.raw.json"), "MEDIUM"),
    Case("iam-identity.user-created", "GetUser", EB(ct("GetUser", params={"userName": "bob"}))),
    Case("iam-identity.user-deleted", "DeleteUser", EB(ct("DeleteUser", params={"userName": "bob"})), "MEDIUM"),
    Case("iam-identity.user-deleted", "DeleteUser of a managed user",
         EB(ct("DeleteUser", params={"userName": MANAGED})), "HIGH"),
    Case("iam-identity.user-deleted", "DeleteUser of the rotator user (self-protection instead)",
         EB(ct("DeleteUser", params={"userName": ROTATOR_ROLE}))),
    Case("iam-identity.login-profile-change", "password for a managed user",
         EB(ct("CreateLoginProfile", params={"userName": MANAGED})), "HIGH"),
    Case("iam-identity.login-profile-change", "password changed",
         EB(ct("UpdateLoginProfile", params={"userName": "bob"})), "MEDIUM"),
    Case("iam-identity.login-profile-change", "GetLoginProfile", EB(ct("GetLoginProfile", params={"userName": "bob"}))),
    Case("iam-identity.group-membership", "AddUserToGroup",
         EB(ct("AddUserToGroup", params={"userName": "bob", "groupName": "admins"})), "MEDIUM"),
    Case("iam-identity.group-membership", "RemoveUserFromGroup",
         EB(ct("RemoveUserFromGroup", params={"userName": "bob", "groupName": "admins"}))),
    Case("iam-identity.mfa-removed", "DeactivateMFADevice",
         EB(ct("DeactivateMFADevice", params={"userName": "bob", "serialNumber": f"arn:aws:iam::{ACCOUNT}:mfa/bob"})),
         "HIGH"),
    Case("iam-identity.mfa-removed", "EnableMFADevice", EB(ct("EnableMFADevice", params={"userName": "bob"}))),
    # -- CloudTrail ---------------------------------------------------------------------------------
    Case("cloudtrail.logging-stopped", "StopLogging",
         EB(ct("StopLogging", "cloudtrail.amazonaws.com", params={"name": "management"})), "CRITICAL"),
    Case("cloudtrail.logging-stopped", "failed DeleteTrail attempt",
         EB(ct("DeleteTrail", "cloudtrail.amazonaws.com", params={"name": "management"}, error_code="AccessDenied")),
         "CRITICAL"),
    Case("cloudtrail.logging-stopped", "StartLogging", EB(ct("StartLogging", "cloudtrail.amazonaws.com"))),
    Case("cloudtrail.trail-modified", "UpdateTrail (fixture)",
         fixture("cloudtrail_UpdateTrail_TrailNotFoundException.raw.json"), "MEDIUM"),
    Case("cloudtrail.trail-modified", "PutEventSelectors",
         EB(ct("PutEventSelectors", "cloudtrail.amazonaws.com", params={"trailName": "management"})), "MEDIUM"),
    Case("cloudtrail.trail-modified", "StopLogging is not a modification",
         EB(ct("StopLogging", "cloudtrail.amazonaws.com"))),
    Case("cloudtrail.trail-created-or-started", "CreateTrail",
         EB(ct("CreateTrail", "cloudtrail.amazonaws.com", params={"name": "t"})), "LOW"),
    Case("cloudtrail.trail-created-or-started", "UpdateTrail (fixture)",
         fixture("cloudtrail_UpdateTrail_TrailNotFoundException.raw.json")),
    # -- KMS ----------------------------------------------------------------------------------------
    Case("kms.key-disabled-or-deleted", "ScheduleKeyDeletion",
         EB(ct("ScheduleKeyDeletion", "kms.amazonaws.com", params={"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
                                                                    "pendingWindowInDays": 7})), "HIGH"),
    Case("kms.key-disabled-or-deleted", "DisableKey", EB(ct("DisableKey", "kms.amazonaws.com")), "HIGH"),
    Case("kms.key-disabled-or-deleted", "EnableKey", EB(ct("EnableKey", "kms.amazonaws.com"))),
    Case("kms.key-disabled-or-deleted", "DisableKey of another service", EB(ct("DisableKey", "payment-cryptography.amazonaws.com"))),
    Case("kms.key-policy-changed", "PutKeyPolicy", EB(ct("PutKeyPolicy", "kms.amazonaws.com")), "MEDIUM"),
    Case("kms.key-policy-changed", "GetKeyPolicy", EB(ct("GetKeyPolicy", "kms.amazonaws.com"))),
    # -- S3 -----------------------------------------------------------------------------------------
    Case("s3-policy.bucket-policy-change", "PutBucketPolicy",
         EB(ct("PutBucketPolicy", "s3.amazonaws.com", params={"bucketName": "ci-artifacts"})), "MEDIUM"),
    Case("s3-policy.bucket-policy-change", "public access block removed",
         EB(ct("DeleteBucketPublicAccessBlock", "s3.amazonaws.com", params={"bucketName": "ci-artifacts"})), "HIGH"),
    Case("s3-policy.bucket-policy-change", "PutObject", EB(ct("PutObject", "s3.amazonaws.com"))),
    Case("s3-policy.bucket-policy-change", "GetBucketPolicy", EB(ct("GetBucketPolicy", "s3.amazonaws.com"))),
    # -- Config -------------------------------------------------------------------------------------
    Case("config.recording-stopped", "StopConfigurationRecorder",
         EB(ct("StopConfigurationRecorder", "config.amazonaws.com", params={"configurationRecorderName": "default"})),
         "HIGH"),
    Case("config.recording-stopped", "StartConfigurationRecorder",
         EB(ct("StartConfigurationRecorder", "config.amazonaws.com"))),
    Case("config.recorder-changed", "PutDeliveryChannel", EB(ct("PutDeliveryChannel", "config.amazonaws.com")), "LOW"),
    Case("config.recorder-changed", "DescribeDeliveryChannels", EB(ct("DescribeDeliveryChannels", "config.amazonaws.com"))),
    # -- network ------------------------------------------------------------------------------------
    Case("network.security-group-change", "SSH open to the world",
         EB(ct("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", params=SG_OPEN)), "HIGH"),
    Case("network.security-group-change", "ingress from a private range",
         EB(ct("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", params=SG_PRIVATE)), "MEDIUM"),
    Case("network.security-group-change", "DescribeSecurityGroups", EB(ct("DescribeSecurityGroups", "ec2.amazonaws.com"))),
    Case("network.nacl-change", "CreateNetworkAclEntry",
         EB(ct("CreateNetworkAclEntry", "ec2.amazonaws.com", params={"networkAclId": "acl-0123"})), "MEDIUM"),
    Case("network.nacl-change", "DescribeNetworkAcls", EB(ct("DescribeNetworkAcls", "ec2.amazonaws.com"))),
    Case("network.gateway-change", "AttachInternetGateway",
         EB(ct("AttachInternetGateway", "ec2.amazonaws.com", params={"internetGatewayId": "igw-1", "vpcId": "vpc-1"})),
         "MEDIUM"),
    Case("network.gateway-change", "DescribeInternetGateways", EB(ct("DescribeInternetGateways", "ec2.amazonaws.com"))),
    Case("network.route-table-change", "CreateRoute",
         EB(ct("CreateRoute", "ec2.amazonaws.com", params={"routeTableId": "rtb-1"})), "MEDIUM"),
    Case("network.route-table-change", "DescribeRouteTables", EB(ct("DescribeRouteTables", "ec2.amazonaws.com"))),
    Case("network.vpc-change", "CreateVpcPeeringConnection",
         EB(ct("CreateVpcPeeringConnection", "ec2.amazonaws.com", params={"vpcId": "vpc-1"})), "MEDIUM"),
    Case("network.vpc-change", "DescribeVpcs", EB(ct("DescribeVpcs", "ec2.amazonaws.com"))),
    # -- Organizations ------------------------------------------------------------------------------
    Case("organizations.change", "AttachPolicy (SCP)",
         EB(ct("AttachPolicy", "organizations.amazonaws.com", params={"policyId": "p-1", "targetId": "ou-1"})), "HIGH"),
    Case("organizations.change", "LeaveOrganization", EB(ct("LeaveOrganization", "organizations.amazonaws.com")),
         "CRITICAL"),
    Case("organizations.change", "ListAccounts", EB(ct("ListAccounts", "organizations.amazonaws.com"))),
    Case("organizations.change", "IAM CreatePolicy is not Organizations", EB(ct("CreatePolicy", params={"policyName": "x"}))),
    # -- STS ----------------------------------------------------------------------------------------
    Case("sts.rotator-role-assumed", "a person assumes the rotator role",
         EB(ct("AssumeRole", "sts.amazonaws.com", identity=iam_user("mallory"),
               params={"roleArn": f"arn:aws:iam::{ACCOUNT}:role/{ROTATOR_ROLE}", "roleSessionName": "hands-on"})),
         "HIGH"),
    Case("sts.rotator-role-assumed", "role chaining onto the rotator role (fixture)",
         fixture("sts_AssumeRole_role_chaining.raw.json"), "HIGH", {"rotator_role_name": "JohnRole2"}),
    Case("sts.rotator-role-assumed", "Lambda assumes its execution role",
         EB(ct("AssumeRole", "sts.amazonaws.com", identity=aws_service("lambda.amazonaws.com"),
               params={"roleArn": f"arn:aws:iam::{ACCOUNT}:role/{ROTATOR_ROLE}", "roleSessionName": "fn"}))),
    Case("sts.rotator-role-assumed", "cross-account AssumeRole of another role (fixture)",
         fixture("sts_AssumeRole_crossaccount_caller.raw.json")),
    Case("sts.rotator-role-assumed", "role chaining onto another role (fixture)",
         fixture("sts_AssumeRole_role_chaining.raw.json")),
    Case("sts.assume-role-denied", "denied on the rotator role",
         EB(ct("AssumeRole", "sts.amazonaws.com", params={"roleArn": f"arn:aws:iam::{ACCOUNT}:role/{ROTATOR_ROLE}"},
               error_code="AccessDenied")), "HIGH"),
    Case("sts.assume-role-denied", "denied on another role",
         EB(ct("AssumeRole", "sts.amazonaws.com", params={"roleArn": f"arn:aws:iam::{ACCOUNT}:role/app"},
               error_code="AccessDenied")), "MEDIUM"),
    Case("sts.assume-role-denied", "successful cross-account (fixture)",
         fixture("sts_AssumeRole_crossaccount_target.raw.json")),
    # -- exposure -----------------------------------------------------------------------------------
    Case("exposure.health-risk", "AWS_RISK_CREDENTIALS_EXPOSED (fixture)",
         fixture("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json"), "CRITICAL"),
    Case("exposure.health-risk", "operational Health issue (fixture)",
         fixture("health_AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED.eventbridge.json")),
    Case("exposure.quarantine-policy-attached", "AWSCompromisedKeyQuarantineV3 attached by AWS",
         EB(ct("AttachUserPolicy", identity={"type": "AWSService", "invokedBy": "AWS Internal"},
               params={"userName": MANAGED, "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"},
               userAgent="AWS Internal")), "CRITICAL"),
    Case("exposure.quarantine-policy-attached", "legacy inline exposed-credential policy",
         EB(ct("PutUserPolicy", params={"userName": "bob", "policyName": "AWSExposedCredentialPolicy_DO_NOT_REMOVE"})),
         "CRITICAL"),
    Case("exposure.quarantine-policy-attached", "ordinary managed policy",
         EB(ct("AttachUserPolicy", params={"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}))),
    # -- self-protection ----------------------------------------------------------------------------
    Case("self-protection.rotator-outside-rotation", "rotator role, no intent lookup",
         EB(create_access_key(identity=assumed_role(ROTATOR_ROLE, "by-hand"))), "HIGH"),
    Case("self-protection.rotator-outside-rotation", "someone else's key change", EB(create_access_key())),
    Case("self-protection.rotator-identity-changed", "trust policy of the rotator role",
         EB(ct("UpdateAssumeRolePolicy", params={"roleName": ROTATOR_ROLE, "policyDocument": "{}"})), "HIGH"),
    Case("self-protection.rotator-identity-changed", "policy on the local rotator user",
         EB(ct("AttachUserPolicy", params={"userName": ROTATOR_ROLE,
                                           "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})), "HIGH"),
    Case("self-protection.rotator-identity-changed", "another role's policy",
         EB(ct("PutRolePolicy", params={"roleName": "app", "policyName": "p"}))),
    Case("self-protection.function-changed", "versioned UpdateFunctionCode on the audit Lambda",
         EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com",
               params={"functionName": "ci-key-rotator-dev-audit", "publish": False})), "HIGH"),
    Case("self-protection.function-changed", "function given by ARN",
         EB(ct("UpdateFunctionConfiguration20150331v2", "lambda.amazonaws.com",
               params={"functionName": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:ci-key-rotator-dev-plan"})), "HIGH"),
    Case("self-protection.function-changed", "another team's function",
         EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", params={"functionName": "billing-api"}))),
    Case("self-protection.function-changed", "GetFunction",
         EB(ct("GetFunction20150331v2", "lambda.amazonaws.com", params={"functionName": "ci-key-rotator-dev-audit"}))),
    Case("self-protection.event-rule-changed", "audit rule disabled",
         EB(ct("DisableRule", "events.amazonaws.com", params={"name": "ci-key-rotator-dev-audit-event"})), "HIGH"),
    Case("self-protection.event-rule-changed", "targets removed",
         EB(ct("RemoveTargets", "events.amazonaws.com", params={"rule": "ci-key-rotator-dev-schedule", "ids": ["1"]})),
         "HIGH"),
    Case("self-protection.event-rule-changed", "another rule",
         EB(ct("DisableRule", "events.amazonaws.com", params={"name": "nightly-report"}))),
    Case("self-protection.state-machine-changed", "DeleteStateMachine",
         EB(ct("DeleteStateMachine", "states.amazonaws.com", params={"stateMachineArn": ROTATOR_SM})), "HIGH"),
    Case("self-protection.state-machine-changed", "StartExecution",
         EB(ct("StartExecution", "states.amazonaws.com", params={"stateMachineArn": ROTATOR_SM}))),
    Case("self-protection.state-machine-changed", "another state machine",
         EB(ct("UpdateStateMachine", "states.amazonaws.com",
               params={"stateMachineArn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:etl"}))),
    Case("self-protection.store-changed", "ledger table deleted",
         EB(ct("DeleteTable", "dynamodb.amazonaws.com", params={"tableName": "ci-key-rotator"})), "HIGH"),
    Case("self-protection.store-changed", "escrow secret deleted",
         EB(ct("DeleteSecret", "secretsmanager.amazonaws.com",
               params={"secretId": "ci-key-rotator/ci-deployer", "forceDeleteWithoutRecovery": True})), "HIGH"),
    Case("self-protection.store-changed", "alert subscription removed",
         EB(ct("Unsubscribe", "sns.amazonaws.com",
               params={"subscriptionArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:ci-key-rotator-alerts:5f1b2c3d"})), "HIGH"),
    Case("self-protection.store-changed", "another table",
         EB(ct("DeleteTable", "dynamodb.amazonaws.com", params={"tableName": "orders"}))),
    Case("self-protection.store-changed", "the rotator itself deletes an escrow secret",
         EB(ct("DeleteSecret", "secretsmanager.amazonaws.com", identity=assumed_role(ROTATOR_ROLE),
               params={"secretId": "ci-key-rotator/ci-deployer"}))),
]

CASES += [Case(detection, label, event, severity, ctx) for detection, label, event, severity, ctx in DEPTH_ROWS]
CASES += [Case(detection, label, event, severity, ctx) for detection, label, event, severity, ctx in OIDC_ROWS]
CASES += [Case(detection, label, event, severity, ctx) for detection, label, event, severity, ctx in LIFECYCLE_ROWS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case(case: Case) -> None:
    findings = fired(case.event, **case.ctx)
    if case.severity is None:
        assert case.detection not in findings, findings.get(case.detection)
        return
    assert case.detection in findings, f"{case.detection} did not fire; got {sorted(findings)}"
    finding = findings[case.detection]
    assert finding.severity.value == case.severity
    assert finding.category.value == case.detection.split(".", 1)[0]
    assert finding.summary and finding.principal and finding.dedup_key.startswith(case.detection + ":")


def test_every_event_detection_has_a_positive_and_a_negative_case() -> None:
    positive = {c.detection for c in CASES if c.severity}
    negative = {c.detection for c in CASES if not c.severity}
    event_detections = {d.id for d in all_detections() if d.triggers}
    assert event_detections - positive == set()
    assert event_detections - negative == set()


def test_suppression_leaves_the_specific_finding() -> None:
    root_key = EB(ct("CreateAccessKey", identity=root(), params=None,
                     response={"accessKey": {"accessKeyId": "AKIAROOTKEY000000001", "status": "Active"}}))
    assert set(fired(root_key)) == {"root.access-key-created"}
    denied = EB(ct("AssumeRole", "sts.amazonaws.com", params={"roleArn": "arn:aws:iam::1:role/x"},
                   error_code="AccessDenied"))
    assert set(fired(denied)) == {"sts.assume-role-denied"}


def test_finding_fields_come_from_the_event() -> None:
    event = EB(create_access_key())
    finding = fired(event)["key-lifecycle.access-key-change"]
    detail = event["detail"]
    assert finding.event_id == detail["eventID"]
    assert finding.account == ACCOUNT and finding.region == "us-east-1"
    assert finding.source_ip == "198.51.100.7" and finding.user_agent.startswith("aws-cli/")
    assert finding.principal == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert finding.action == "iam:CreateAccessKey"
    assert "userName=ci-deployer" in finding.resources and "accessKeyId=AKIAI44QH8DHBEXAMPLE" in finding.resources
    assert finding.console_url == (
        f"https://us-east-1.console.aws.amazon.com/cloudtrailv2/home?region=us-east-1#/events/{detail['eventID']}"
    )
    assert "AKIAI44QH8DHBEXAMPLE" in finding.summary and "ci-deployer" in finding.summary


def test_key_created_for_another_user_is_called_out() -> None:
    finding = fired(EB(create_access_key("bob")))["key-lifecycle.access-key-change"]
    assert "another user (alice)" in finding.summary


def test_health_finding_lists_every_affected_key() -> None:
    event = fixture("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json")
    event["detail"]["affectedEntities"] = [{"entityValue": "AKIAEXPOSED000000001"}, {"entityValue": "AKIAEXPOSED000000002"}]
    finding = fired(event)["exposure.health-risk"]
    assert finding.resources == ["AKIAEXPOSED000000001", "AKIAEXPOSED000000002"]
    assert finding.console_url and finding.console_url.startswith("https://health.aws.amazon.com/")


def test_raw_and_wrapped_fixture_give_the_same_findings() -> None:
    record = fixture_record("signin_ConsoleLogin_IAMUser_success_noMFA.raw.json")
    raw = {f.detection for f in classify(record, context())}
    wrapped = {f.detection for f in classify(EB(record), context())}
    assert raw == wrapped == {"console-login.no-mfa"}
