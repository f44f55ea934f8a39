"""CIS AWS Foundations Benchmark controls -> the detections that cover them.

The event names are CIS's own (v5.0 text, identical in v7.0), kept here independently of the detection
modules so a test can prove coverage: for every name, a synthetic event fires one of the mapped
detections. ``docs/cis-mapping.md`` is rendered from this module (``python -m tests.audit.cis``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CisControl:
    #: Numbering of CIS v1.4 / v3.0 / v5.0 (section 4, "Monitoring").
    number: str
    v1_2: str
    v6_v7: str
    security_hub: str
    title: str
    #: eventSource the CIS filter requires, or None when it matches any source.
    event_source: str | None
    #: eventNames in the CIS filter; empty when the filter is a condition (errorCode, userIdentity...).
    event_names: tuple[str, ...]
    detections: tuple[str, ...]


CIS_MONITORING: tuple[CisControl, ...] = (
    CisControl(
        "4.1", "3.1", "5.1", "CloudWatch.2", "Unauthorized API calls", None, (),
        ("unauthorized-call.access-denied", "sts.assume-role-denied"),
    ),
    CisControl(
        "4.2", "3.2", "5.2", "CloudWatch.3", "Management console sign-in without MFA", "signin.amazonaws.com",
        ("ConsoleLogin",), ("console-login.no-mfa",),
    ),
    CisControl(
        "4.3", "3.3", "5.3", "CloudWatch.1", "Usage of the root account", None, (),
        ("root.activity", "root.access-key-created", "console-login.no-mfa"),
    ),
    CisControl(
        "4.4", "3.4", "5.4", "CloudWatch.4", "IAM policy changes", "iam.amazonaws.com",
        (
            "DeleteGroupPolicy", "DeleteRolePolicy", "DeleteUserPolicy", "PutGroupPolicy", "PutRolePolicy",
            "PutUserPolicy", "CreatePolicy", "DeletePolicy", "CreatePolicyVersion", "DeletePolicyVersion",
            "AttachRolePolicy", "DetachRolePolicy", "AttachUserPolicy", "DetachUserPolicy", "AttachGroupPolicy",
            "DetachGroupPolicy",
        ),
        ("iam-policy.change", "exposure.quarantine-policy-attached", "self-protection.rotator-identity-changed",
         "self-protection.graduated-role-changed"),
    ),
    CisControl(
        "4.5", "3.5", "5.5", "CloudWatch.5", "CloudTrail configuration changes", "cloudtrail.amazonaws.com",
        ("CreateTrail", "UpdateTrail", "DeleteTrail", "StartLogging", "StopLogging"),
        ("cloudtrail.logging-stopped", "cloudtrail.trail-modified", "cloudtrail.trail-created-or-started"),
    ),
    CisControl(
        "4.6", "3.6", "5.6", "CloudWatch.6", "Console authentication failures", "signin.amazonaws.com",
        ("ConsoleLogin",), ("console-login.failure",),
    ),
    CisControl(
        "4.7", "3.7", "5.7", "CloudWatch.7", "Disabling or scheduled deletion of customer managed keys",
        "kms.amazonaws.com", ("DisableKey", "ScheduleKeyDeletion"), ("kms.key-disabled-or-deleted",),
    ),
    CisControl(
        "4.8", "3.8", "5.8", "CloudWatch.8", "S3 bucket policy changes", "s3.amazonaws.com",
        (
            "PutBucketAcl", "PutBucketPolicy", "PutBucketCors", "PutBucketLifecycle", "PutBucketReplication",
            "DeleteBucketPolicy", "DeleteBucketCors", "DeleteBucketLifecycle", "DeleteBucketReplication",
        ),
        ("s3-policy.bucket-policy-change",),
    ),
    CisControl(
        "4.9", "3.9", "5.9", "CloudWatch.9", "AWS Config configuration changes", "config.amazonaws.com",
        ("StopConfigurationRecorder", "DeleteDeliveryChannel", "PutDeliveryChannel", "PutConfigurationRecorder"),
        ("config.recording-stopped", "config.recorder-changed"),
    ),
    CisControl(
        "4.10", "3.10", "5.10", "CloudWatch.10", "Security group changes", "ec2.amazonaws.com",
        (
            "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupIngress",
            "RevokeSecurityGroupEgress", "CreateSecurityGroup", "DeleteSecurityGroup", "ModifySecurityGroupRules",
        ),
        ("network.security-group-change",),
    ),
    CisControl(
        "4.11", "3.11", "5.11", "CloudWatch.11", "Network ACL changes", "ec2.amazonaws.com",
        (
            "CreateNetworkAcl", "CreateNetworkAclEntry", "DeleteNetworkAcl", "DeleteNetworkAclEntry",
            "ReplaceNetworkAclEntry", "ReplaceNetworkAclAssociation",
        ),
        ("network.nacl-change",),
    ),
    CisControl(
        "4.12", "3.12", "5.12", "CloudWatch.12", "Network gateway changes", "ec2.amazonaws.com",
        (
            "CreateCustomerGateway", "DeleteCustomerGateway", "AttachInternetGateway", "CreateInternetGateway",
            "DeleteInternetGateway", "DetachInternetGateway",
        ),
        ("network.gateway-change",),
    ),
    CisControl(
        "4.13", "3.13", "5.13", "CloudWatch.13", "Route table changes", "ec2.amazonaws.com",
        (
            "CreateRoute", "CreateRouteTable", "ReplaceRoute", "ReplaceRouteTableAssociation", "DeleteRouteTable",
            "DeleteRoute", "DisassociateRouteTable",
        ),
        ("network.route-table-change",),
    ),
    CisControl(
        "4.14", "3.14", "5.14", "CloudWatch.14", "VPC changes", "ec2.amazonaws.com",
        (
            "CreateVpc", "DeleteVpc", "ModifyVpcAttribute", "AcceptVpcPeeringConnection",
            "CreateVpcPeeringConnection", "DeleteVpcPeeringConnection", "RejectVpcPeeringConnection",
            "AttachClassicLinkVpc", "DetachClassicLinkVpc", "DisableVpcClassicLink", "EnableVpcClassicLink",
        ),
        ("network.vpc-change",),
    ),
    CisControl(
        "4.15", "—", "5.15", "—", "AWS Organizations changes", "organizations.amazonaws.com",
        (
            "AcceptHandshake", "AttachPolicy", "CreateAccount", "CreateOrganizationalUnit", "CreatePolicy",
            "DeclineHandshake", "DeleteOrganization", "DeleteOrganizationalUnit", "DeletePolicy", "DetachPolicy",
            "DisablePolicyType", "EnablePolicyType", "InviteAccountToOrganization", "LeaveOrganization",
            "MoveAccount", "RemoveAccountFromOrganization", "UpdatePolicy", "UpdateOrganizationalUnit",
        ),
        ("organizations.change",),
    ),
)


@dataclass(frozen=True)
class CisCredentialControl:
    number: str  # v1.4 / v3.0 numbering
    title: str
    security_hub: str
    detections: tuple[str, ...]


#: IAM credential controls, covered by the daily credential-report audit (posture, not events).
CIS_CREDENTIALS: tuple[CisCredentialControl, ...] = (
    CisCredentialControl("1.4", "No root user access key exists", "IAM.4",
                         ("root.access-key-present", "root.access-key-created")),
    CisCredentialControl("1.12", "Credentials unused for 45 days or more are disabled", "IAM.22",
                         ("key-lifecycle.credential-report",)),
    CisCredentialControl("1.13", "Only one active access key per IAM user", "—",
                         ("key-lifecycle.credential-report",)),
    CisCredentialControl("1.14", "Access keys are rotated every 90 days or less", "IAM.3",
                         ("key-lifecycle.credential-report",)),
)


def _names(control: CisControl) -> str:
    if not control.event_names:
        return "(condition on errorCode / userIdentity)"
    return ", ".join(control.event_names)


def render_markdown() -> str:
    lines = [
        "# CIS AWS Foundations Benchmark coverage",
        "",
        "Generated from `tests/audit/cis.py` (`python -m tests.audit.cis > "
        "docs/cis-mapping.md`); a test fails when the two differ.",
        "",
        "## Monitoring (log metric filter and alarm controls)",
        "",
        "| CIS v1.4/v3.0/v5.0 | v1.2 | v6.0/v7.0 | Security Hub | Control | eventSource | CIS eventNames "
        "| Detections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in CIS_MONITORING:
        detections = ", ".join(f"`{d}`" for d in c.detections)
        lines.append(
            f"| {c.number} | {c.v1_2} | {c.v6_v7} | {c.security_hub} | {c.title} | {c.event_source or 'any'} "
            f"| {_names(c)} | {detections} |"
        )
    lines += [
        "",
        "## IAM credentials (daily credential-report audit)",
        "",
        "| CIS v1.4/v3.0 | Control | Security Hub | Detections |",
        "|---|---|---|---|",
    ]
    for c in CIS_CREDENTIALS:
        detections = ", ".join(f"`{d}`" for d in c.detections)
        lines.append(f"| {c.number} | {c.title} | {c.security_hub} | {detections} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
