"""Cases for issue 14's detections (managed-user profiles, families 2-4, severity from content), as rows
that test_detections.py turns into its ``Case``s, so its meta-test also holds every new detection to a
positive and a negative case.

Events are shaped on CloudTrail's own records (the fixtures in this folder; the request parameter shapes
of each service's "Logging ... with AWS CloudTrail" documentation page): ``requestParameters`` use the
service's own casing (EC2's ``createVolumePermission.add.items[].userId``, S3's ``VersioningConfiguration``,
Lambda's versioned eventNames), policies travel as JSON strings (IAM, KMS, SQS, SNS) or objects (S3).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from chalicelib.audit.profile import ManagedUserProfile

from .conftest import ACCOUNT, MANAGED, assumed_role, ct, eventbridge, iam_user

EB = eventbridge
ADMIN = assumed_role("Admin", "jane")
OTHER = "999988887777"
CI_KEY = iam_user(MANAGED)
EXPOSED_AT = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
PROFILE = {MANAGED: ManagedUserProfile(expected=["s3:PutObject", "lambda:UpdateFunctionCode", "cloudfront:*"],
                                       source_cidrs=["198.51.100.0/24"])}


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def trust(principal: Any, **extra: Any) -> str:
    return policy({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole", **extra})


def minted(name: str = "GetSessionToken", identity: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    params = {"durationSeconds": 129600} if name == "GetSessionToken" else {
        "name": "bob", "durationSeconds": 43200, "policy": policy(allow("*"))}
    return EB(ct(name, "sts.amazonaws.com", identity=identity or CI_KEY, params=params,
                 response={"credentials": {"accessKeyId": "ASIAEXAMPLEMINTED001", "sessionToken": "<encoded>",
                                           "expiration": "May 2, 2024, 10:15:00 PM"}}, readOnly=True, **extra))


FEDERATED = {
    "type": "FederatedUser", "principalId": f"{ACCOUNT}:bob", "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/bob",
    "accountId": ACCOUNT, "accessKeyId": "ASIAEXAMPLEMINTED001",
    "sessionContext": {"sessionIssuer": {"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE",
                                         "arn": f"arn:aws:iam::{ACCOUNT}:user/{MANAGED}", "accountId": ACCOUNT,
                                         "userName": MANAGED},
                       "attributes": {"creationDate": "2024-05-01T10:10:00Z", "mfaAuthenticated": "false"}},
}
SIGNIN_TOKEN = ct("GetSigninToken", "signin.amazonaws.com", identity=FEDERATED, params=None,
                  response={"GetSigninToken": "Success"}, additional={"MobileVersion": "No"},
                  eventType="AwsConsoleSignIn", sourceIPAddress="203.0.113.50")
GD = "guardduty.amazonaws.com"
DETECTOR = {"detectorId": "12abc34d567e8fa901bc2d34eexample"}
SNAPSHOT_SHARE = {"snapshotId": "snap-0b2d3e4f5a6b7c8d9", "attributeType": "CREATE_VOLUME_PERMISSION",
                  "createVolumePermission": {"add": {"items": [{"userId": OTHER}]}}}
AMI_PUBLIC = {"imageId": "ami-0abcdef1234567890", "attributeType": "launchPermission",
              "launchPermission": {"add": {"items": [{"group": "all"}]}}}
REPLICATION = {"bucketName": "orders-data", "Host": "orders-data.s3.amazonaws.com", "replication": "",
               "ReplicationConfiguration": {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/",
                                            "Role": f"arn:aws:iam::{ACCOUNT}:role/s3-replication",
                                            "Rule": {"ID": "all", "Status": "Enabled", "Priority": 1,
                                                     "Filter": {"Prefix": ""},
                                                     "Destination": {"Bucket": "arn:aws:s3:::drop-zone",
                                                                     "Account": OTHER}}}}
QUEUE = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/orders"
EXPOSED = {"exposure_lookup": lambda user: EXPOSED_AT}

#: (detection, label, event, severity or None for a negative case, AuditContext overrides)
ROWS: list[tuple[str, str, Any, str | None, dict[str, Any]]] = [
    # -- managed CI users: their own key's first moves ------------------------------------------------
    ("managed-user.session-minted", "CI key mints a session (GetSessionToken)", minted(), "HIGH", {}),
    ("managed-user.session-minted", "CI key mints a federated session", minted("GetFederationToken"), "HIGH", {}),
    ("managed-user.session-minted", "federated session from a CI key gets a console token", EB(SIGNIN_TOKEN),
     "HIGH", {}),
    ("managed-user.session-minted", "after an exposure of the key", minted(), "CRITICAL", EXPOSED),
    ("managed-user.session-minted", "a human mints a session", minted(identity=iam_user("alice")), None, {}),
    ("managed-user.session-minted", "profile allows minting",
     minted(), None, {"profiles": {MANAGED: ManagedUserProfile(may_mint_sessions=True)}}),
    ("managed-user.iam-write", "CI key creates a user", EB(ct("CreateUser", identity=CI_KEY,
                                                                params={"userName": "backdoor"})), "HIGH", {}),
    ("managed-user.iam-write", "CI key creates a key for another user",
     EB(ct("CreateAccessKey", identity=CI_KEY, params={"userName": "backdoor"})), "HIGH", {}),
    ("managed-user.iam-write", "after an exposure of the key",
     EB(ct("AttachUserPolicy", identity=CI_KEY, params={"userName": MANAGED,
                                                          "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})),
     "CRITICAL", EXPOSED),
    ("managed-user.iam-write", "an admin creates a user", EB(ct("CreateUser", identity=ADMIN,
                                                               params={"userName": "new-dev"})), None, {}),
    ("managed-user.unexpected-call", "CI key opens a security group",
     EB(ct("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", identity=CI_KEY, params={"groupId": "sg-1"})),
     "HIGH", {"profiles": PROFILE}),
    ("managed-user.unexpected-call", "expected call from outside the runners' ranges",
     EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", identity=CI_KEY,
           params={"functionName": "site"}, sourceIPAddress="203.0.113.9")), "HIGH", {"profiles": PROFILE}),
    ("managed-user.unexpected-call", "expected call from a runner",
     EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", identity=CI_KEY,
           params={"functionName": "site"})), None, {"profiles": PROFILE}),
    ("managed-user.unexpected-call", "no profile configured",
     EB(ct("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", identity=CI_KEY, params={"groupId": "sg-1"})),
     None, {}),
    # -- severity from what a policy grants (issue finding 5) ----------------------------------------
    ("iam-policy.change", "inline policy with Action *",
     EB(ct("PutUserPolicy", identity=ADMIN, params={"userName": "dev", "policyName": "x",
                                                    "policyDocument": policy(allow("*"))})), "HIGH", {}),
    ("iam-policy.change", "IAMFullAccess attached",
     EB(ct("AttachRolePolicy", identity=ADMIN, params={"roleName": "app",
                                                       "policyArn": "arn:aws:iam::aws:policy/IAMFullAccess"})),
     "HIGH", {}),
    ("iam-policy.change", "PassRole with Lambda (escalation)",
     EB(ct("CreatePolicy", identity=ADMIN, params={"policyName": "deployer", "policyDocument": policy(
         allow(["iam:PassRole", "lambda:CreateFunction", "lambda:InvokeFunction"]))})), "HIGH", {}),
    ("iam-policy.change", "iam:Put* (expanded, escalation)",
     EB(ct("PutRolePolicy", identity=ADMIN, params={"roleName": "app", "policyName": "x",
                                                    "policyDocument": policy(allow("iam:Put*"))})), "HIGH", {}),
    ("iam-policy.change", "trust policy opened to another account",
     EB(ct("UpdateAssumeRolePolicy", identity=ADMIN, params={
         "roleName": "app", "policyDocument": trust({"AWS": f"arn:aws:iam::{OTHER}:root"})})), "HIGH", {}),
    ("iam-policy.change", "trust policy anyone may assume",
     EB(ct("UpdateAssumeRolePolicy", identity=ADMIN, params={"roleName": "app", "policyDocument": trust("*")})),
     "CRITICAL", {}),
    ("iam-policy.change", "routine scoped inline policy",
     EB(ct("PutRolePolicy", identity=ADMIN, params={"roleName": "app", "policyName": "read-orders",
                                                    "policyDocument": policy(allow(
                                                        "s3:GetObject", "arn:aws:s3:::orders/*"))})),
     "MEDIUM", {}),
    ("s3-policy.bucket-policy-change", "public bucket policy",
     EB(ct("PutBucketPolicy", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "site", "Host": "site.s3.amazonaws.com", "policy": "",
         "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Sid": "Public", "Effect": "Allow",
                                                                 "Principal": "*", "Action": "s3:GetObject",
                                                                 "Resource": "arn:aws:s3:::site/*"}]}})),
     "HIGH", {}),
    ("s3-policy.bucket-policy-change", "bucket policy limited to a VPC endpoint",
     EB(ct("PutBucketPolicy", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "site", "bucketPolicy": {"Statement": [{
             "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*",
             "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}}]}})), "MEDIUM", {}),
    ("s3-policy.bucket-policy-change", "ACL grants AllUsers",
     EB(ct("PutBucketAcl", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "site", "AccessControlPolicy": {"AccessControlList": {"Grant": [{
             "Grantee": {"xsi:type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
             "Permission": "READ"}]}}})), "HIGH", {}),
    ("kms.key-policy-changed", "key policy grants another account",
     EB(ct("PutKeyPolicy", "kms.amazonaws.com", identity=ADMIN, params={
         "keyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "policyName": "default",
         "policy": policy({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                           "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
                          {"Sid": "x", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                           "Action": "kms:Decrypt", "Resource": "*"})})), "HIGH", {}),
    ("kms.key-policy-changed", "the default key policy",
     EB(ct("PutKeyPolicy", "kms.amazonaws.com", identity=ADMIN, params={
         "keyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "policyName": "default",
         "policy": policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                           "Action": "kms:*", "Resource": "*"})})), "MEDIUM", {}),
    # -- family 2: turning off security tools --------------------------------------------------------
    ("defense-evasion.guardduty-impaired", "detector deleted",
     EB(ct("DeleteDetector", GD, identity=ADMIN, params=DETECTOR)), "HIGH", {}),
    ("defense-evasion.guardduty-impaired", "detector disabled",
     EB(ct("UpdateDetector", GD, identity=ADMIN, params={**DETECTOR, "enable": False})), "HIGH", {}),
    ("defense-evasion.guardduty-impaired", "trusted IP list added",
     EB(ct("CreateIPSet", GD, identity=ADMIN, params={**DETECTOR, "name": "office", "format": "TXT",
                                                      "location": "https://s3.amazonaws.com/x/ips.txt",
                                                      "activate": True})), "HIGH", {}),
    ("defense-evasion.guardduty-impaired", "auto-archive filter",
     EB(ct("CreateFilter", GD, identity=ADMIN, params={**DETECTOR, "name": "quiet", "action": "ARCHIVE",
                                                       "findingCriteria": {"criterion": {"severity": {"gte": 1}}}})),
     "HIGH", {}),
    ("defense-evasion.guardduty-impaired", "publishing frequency changed",
     EB(ct("UpdateDetector", GD, identity=ADMIN, params={**DETECTOR, "findingPublishingFrequency": "SIX_HOURS"})),
     None, {}),
    ("defense-evasion.securityhub-impaired", "Security Hub disabled",
     EB(ct("DisableSecurityHub", "securityhub.amazonaws.com", identity=ADMIN, params=None)), "HIGH", {}),
    ("defense-evasion.securityhub-impaired", "findings suppressed",
     EB(ct("BatchUpdateFindings", "securityhub.amazonaws.com", identity=ADMIN, params={
         "FindingIdentifiers": [{"Id": "arn:aws:securityhub:us-east-1:111122223333:finding/1",
                                 "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/guardduty"}],
         "Workflow": {"Status": "SUPPRESSED"}})), "MEDIUM", {}),
    ("defense-evasion.securityhub-impaired", "findings resolved",
     EB(ct("BatchUpdateFindings", "securityhub.amazonaws.com", identity=ADMIN, params={
         "FindingIdentifiers": [], "Workflow": {"Status": "RESOLVED"}})), None, {}),
    ("defense-evasion.network-logs-deleted", "VPC flow logs deleted",
     EB(ct("DeleteFlowLogs", "ec2.amazonaws.com", identity=ADMIN, params={
         "DeleteFlowLogsRequest": {"FlowLogId": {"content": "fl-0123456789abcdef0", "tag": 1}}})), "HIGH", {}),
    ("defense-evasion.network-logs-deleted", "resolver query logging detached",
     EB(ct("DisassociateResolverQueryLogConfig", "route53resolver.amazonaws.com", identity=ADMIN, params={
         "resolverQueryLogConfigId": "rqlc-8ca61fe7c055415a", "resourceId": "vpc-0a1b2c3d"})), "HIGH", {}),
    ("defense-evasion.network-logs-deleted", "flow logs created",
     EB(ct("CreateFlowLogs", "ec2.amazonaws.com", identity=ADMIN, params={"resourceIdSet": {}})), None, {}),
    ("defense-evasion.bucket-versioning-suspended", "versioning suspended",
     EB(ct("PutBucketVersioning", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "backups", "Host": "backups.s3.amazonaws.com", "versioning": "",
         "VersioningConfiguration": {"Status": "Suspended", "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"}})),
     "MEDIUM", {}),
    ("defense-evasion.bucket-versioning-suspended", "versioning enabled",
     EB(ct("PutBucketVersioning", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "backups", "VersioningConfiguration": {"Status": "Enabled"}})), None, {}),
    ("defense-evasion.ebs-default-encryption-disabled", "disabled",
     EB(ct("DisableEbsEncryptionByDefault", "ec2.amazonaws.com", identity=ADMIN,
           params={"DisableEbsEncryptionByDefaultRequest": ""},
           response={"DisableEbsEncryptionByDefaultResponse": {"ebsEncryptionByDefault": False}})), "MEDIUM", {}),
    ("defense-evasion.ebs-default-encryption-disabled", "enabled",
     EB(ct("EnableEbsEncryptionByDefault", "ec2.amazonaws.com", identity=ADMIN)), None, {}),
    ("defense-evasion.analyzer-removed", "Access Analyzer deleted",
     EB(ct("DeleteAnalyzer", "access-analyzer.amazonaws.com", identity=ADMIN,
           params={"analyzerName": "ConsoleAnalyzer-0a1b2c3d"})), "HIGH", {}),
    ("defense-evasion.analyzer-removed", "Macie paused",
     EB(ct("UpdateMacieSession", "macie2.amazonaws.com", identity=ADMIN, params={"status": "PAUSED"})), "HIGH", {}),
    ("defense-evasion.analyzer-removed", "Macie publishing frequency changed",
     EB(ct("UpdateMacieSession", "macie2.amazonaws.com", identity=ADMIN,
           params={"findingPublishingFrequency": "FIFTEEN_MINUTES"})), None, {}),
    # -- family 3: persistence outside IAM users and roles -------------------------------------------
    ("persistence.roles-anywhere", "trust anchor created",
     EB(ct("CreateTrustAnchor", "rolesanywhere.amazonaws.com", identity=ADMIN, params={
         "name": "partner-ca", "enabled": True,
         "source": {"sourceType": "CERTIFICATE_BUNDLE", "sourceData": {"x509CertificateData": "-----BEGIN..."}}})),
     "HIGH", {}),
    ("persistence.roles-anywhere", "trust anchors listed",
     EB(ct("ListTrustAnchors", "rolesanywhere.amazonaws.com", identity=ADMIN)), None, {}),
    ("persistence.identity-provider", "SAML provider created",
     EB(ct("CreateSAMLProvider", identity=ADMIN, params={"name": "corp-idp", "sAMLMetadataDocument": "<md:...>"},
           response={"sAMLProviderArn": f"arn:aws:iam::{ACCOUNT}:saml-provider/corp-idp"})), "HIGH", {}),
    ("persistence.identity-provider", "OIDC thumbprint updated",
     EB(ct("UpdateOpenIDConnectProviderThumbprint", identity=ADMIN, params={
         "openIDConnectProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com",
         "thumbprintList": ["6938fd4d98bab03faadb97b34396831e3780aea1"]})), "HIGH", {}),
    ("persistence.identity-provider", "provider deleted", EB(ct("DeleteSAMLProvider", identity=ADMIN)), None, {}),
    ("persistence.identity-center-source", "external IdP configured",
     EB(ct("CreateExternalIdPConfigurationForDirectory", "sso-directory.amazonaws.com", identity=ADMIN,
           params={"directoryId": "d-906716f4c7"})), "HIGH", {}),
    ("persistence.identity-center-source", "directory listed",
     EB(ct("ListDirectoryAssociations", "sso.amazonaws.com", identity=ADMIN)), None, {}),
    ("persistence.instance-user-data", "user data replaced",
     EB(ct("ModifyInstanceAttribute", "ec2.amazonaws.com", identity=ADMIN, params={
         "instanceId": "i-0123456789abcdef0", "userData": "<sensitiveDataRemoved>"})), "HIGH", {}),
    ("persistence.instance-user-data", "instance type changed",
     EB(ct("ModifyInstanceAttribute", "ec2.amazonaws.com", identity=ADMIN, params={
         "instanceId": "i-0123456789abcdef0", "instanceType": {"value": "m5.large"}})), None, {}),
    ("persistence.ssm-command", "SendCommand",
     EB(ct("SendCommand", "ssm.amazonaws.com", identity=ADMIN, params={
         "instanceIds": ["i-0123456789abcdef0"], "documentName": "AWS-RunShellScript",
         "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS", "interactive": False})), "MEDIUM", {}),
    ("persistence.ssm-command", "commands listed", EB(ct("ListCommands", "ssm.amazonaws.com", identity=ADMIN)),
     None, {}),
    ("persistence.lambda-shared", "invocable by anyone",
     EB(ct("AddPermission20150331v2", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": "orders-api", "statementId": "open", "action": "lambda:InvokeFunction", "principal": "*"})),
     "HIGH", {}),
    ("persistence.lambda-shared", "given to another account",
     EB(ct("AddPermission20150331v2", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": "orders-api", "statementId": "x", "action": "lambda:InvokeFunction", "principal": OTHER})),
     "HIGH", {}),
    ("persistence.lambda-shared", "public function URL",
     EB(ct("CreateFunctionUrlConfig20211031", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": "orders-api", "authType": "NONE"})), "HIGH", {}),
    ("persistence.lambda-shared", "S3 notifications from one bucket",
     EB(ct("AddPermission20150331v2", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": "thumbs", "statementId": "s3", "action": "lambda:InvokeFunction",
         "principal": "s3.amazonaws.com", "sourceArn": "arn:aws:s3:::uploads", "sourceAccount": ACCOUNT})),
     None, {}),
    ("persistence.lambda-code-updated", "another team's function",
     EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": "orders-api", "publish": True})), "MEDIUM", {}),
    ("persistence.lambda-code-updated", "the rotator's own function (self-protection's)",
     EB(ct("UpdateFunctionCode20150331v2", "lambda.amazonaws.com", identity=ADMIN, params={
         "functionName": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:ci-key-rotator-dev-audit"})), None, {}),
    ("persistence.role-trust-opened", "role trusting another account",
     EB(ct("CreateRole", identity=ADMIN, params={
         "roleName": "vendor-access", "assumeRolePolicyDocument": trust({"AWS": OTHER})})), "HIGH", {}),
    ("persistence.role-trust-opened", "role anyone may assume",
     EB(ct("CreateRole", identity=ADMIN, params={"roleName": "open", "assumeRolePolicyDocument": trust(
         {"AWS": "*"})})), "CRITICAL", {}),
    ("persistence.role-trust-opened", "Lambda execution role",
     EB(ct("CreateRole", identity=ADMIN, params={"roleName": "fn", "assumeRolePolicyDocument": trust(
         {"Service": "lambda.amazonaws.com"})})), None, {}),
    # -- family 4: exfiltration and destruction ------------------------------------------------------
    ("exfiltration.snapshot-shared", "EBS snapshot shared with another account",
     EB(ct("ModifySnapshotAttribute", "ec2.amazonaws.com", identity=ADMIN, params=SNAPSHOT_SHARE)), "HIGH", {}),
    ("exfiltration.snapshot-shared", "AMI made public",
     EB(ct("ModifyImageAttribute", "ec2.amazonaws.com", identity=ADMIN, params=AMI_PUBLIC)), "HIGH", {}),
    ("exfiltration.snapshot-shared", "RDS snapshot made public",
     EB(ct("ModifyDBSnapshotAttribute", "rds.amazonaws.com", identity=ADMIN, params={
         "dBSnapshotIdentifier": "orders-2024-05-01", "attributeName": "restore", "valuesToAdd": ["all"]})),
     "HIGH", {}),
    ("exfiltration.snapshot-shared", "sharing removed",
     EB(ct("ModifySnapshotAttribute", "ec2.amazonaws.com", identity=ADMIN, params={
         "snapshotId": "snap-0b2d3e4f5a6b7c8d9", "attributeType": "CREATE_VOLUME_PERMISSION",
         "createVolumePermission": {"remove": {"items": [{"userId": OTHER}]}}})), None, {}),
    ("exfiltration.db-made-public", "public restore",
     EB(ct("RestoreDBInstanceFromDBSnapshot", "rds.amazonaws.com", identity=ADMIN, params={
         "dBInstanceIdentifier": "restored", "dBSnapshotIdentifier": "orders-2024-05-01",
         "publiclyAccessible": True})), "HIGH", {}),
    ("exfiltration.db-made-public", "private restore",
     EB(ct("RestoreDBInstanceFromDBSnapshot", "rds.amazonaws.com", identity=ADMIN, params={
         "dBInstanceIdentifier": "restored", "dBSnapshotIdentifier": "orders-2024-05-01",
         "publiclyAccessible": False})), None, {}),
    ("exfiltration.db-deleted", "cluster deleted without a final snapshot",
     EB(ct("DeleteDBCluster", "rds.amazonaws.com", identity=ADMIN, params={
         "dBClusterIdentifier": "orders", "skipFinalSnapshot": True})), "HIGH", {}),
    ("exfiltration.db-deleted", "instance deleted with a final snapshot",
     EB(ct("DeleteDBInstance", "rds.amazonaws.com", identity=ADMIN, params={
         "dBInstanceIdentifier": "staging", "skipFinalSnapshot": False,
         "finalDBSnapshotIdentifier": "staging-final"})), "MEDIUM", {}),
    ("exfiltration.db-deleted", "clusters listed", EB(ct("DescribeDBClusters", "rds.amazonaws.com")), None, {}),
    ("exfiltration.db-master-password-changed", "master password reset",
     EB(ct("ModifyDBInstance", "rds.amazonaws.com", identity=ADMIN, params={
         "dBInstanceIdentifier": "orders", "masterUserPassword": "****", "applyImmediately": True})), "MEDIUM", {}),
    ("exfiltration.db-master-password-changed", "storage grown",
     EB(ct("ModifyDBInstance", "rds.amazonaws.com", identity=ADMIN, params={
         "dBInstanceIdentifier": "orders", "allocatedStorage": 200})), None, {}),
    ("exfiltration.kms-key-material", "key material imported",
     EB(ct("ImportKeyMaterial", "kms.amazonaws.com", identity=ADMIN, params={
         "keyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
         "expirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"})), "HIGH", {}),
    ("exfiltration.kms-key-material", "decrypt", EB(ct("Decrypt", "kms.amazonaws.com")), None, {}),
    ("exfiltration.bucket-deleted", "bucket deleted",
     EB(ct("DeleteBucket", "s3.amazonaws.com", identity=ADMIN, params={
         "bucketName": "orders-data", "Host": "orders-data.s3.amazonaws.com"})), "MEDIUM", {}),
    ("exfiltration.bucket-deleted", "bucket created",
     EB(ct("CreateBucket", "s3.amazonaws.com", identity=ADMIN, params={"bucketName": "new"})), None, {}),
    ("exfiltration.bucket-replicated-out", "replication to another account",
     EB(ct("PutBucketReplication", "s3.amazonaws.com", identity=ADMIN, params=REPLICATION)), "HIGH", {}),
    ("exfiltration.bucket-replicated-out", "replication within the account",
     EB(ct("PutBucketReplication", "s3.amazonaws.com", identity=ADMIN, params={
         **REPLICATION, "ReplicationConfiguration": {"Role": f"arn:aws:iam::{ACCOUNT}:role/r", "Rule": {
             "Destination": {"Bucket": "arn:aws:s3:::dr-copy"}}}})), None, {}),
    ("exfiltration.resource-policy-opened", "queue open to everyone",
     EB(ct("SetQueueAttributes", "sqs.amazonaws.com", identity=ADMIN, params={
         "queueUrl": QUEUE, "attributes": {"Policy": policy({"Effect": "Allow", "Principal": "*",
                                                             "Action": "sqs:ReceiveMessage", "Resource": "*"})}})),
     "HIGH", {}),
    ("exfiltration.resource-policy-opened", "topic given to another account",
     EB(ct("SetTopicAttributes", "sns.amazonaws.com", identity=ADMIN, params={
         "topicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:orders", "attributeName": "Policy",
         "attributeValue": policy({"Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": "sns:Subscribe",
                                   "Resource": "*"})})), "HIGH", {}),
    ("exfiltration.resource-policy-opened", "queue timeout changed",
     EB(ct("SetQueueAttributes", "sqs.amazonaws.com", identity=ADMIN, params={
         "queueUrl": QUEUE, "attributes": {"VisibilityTimeout": "60"}})), None, {}),
]
