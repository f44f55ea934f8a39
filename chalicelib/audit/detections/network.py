"""Network changes: security groups, NACLs, gateways, route tables, VPCs (CIS 4.10-4.14)."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names, walk_strings
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

EC2 = "ec2.amazonaws.com"
SECURITY_GROUP_EVENTS = names(
    "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress", "CreateSecurityGroup", "DeleteSecurityGroup", "ModifySecurityGroupRules",
)
NACL_EVENTS = names(
    "CreateNetworkAcl", "CreateNetworkAclEntry", "DeleteNetworkAcl", "DeleteNetworkAclEntry",
    "ReplaceNetworkAclEntry", "ReplaceNetworkAclAssociation",
)
GATEWAY_EVENTS = names(
    "CreateCustomerGateway", "DeleteCustomerGateway", "AttachInternetGateway", "CreateInternetGateway",
    "DeleteInternetGateway", "DetachInternetGateway",
)
ROUTE_EVENTS = names(
    "CreateRoute", "CreateRouteTable", "ReplaceRoute", "ReplaceRouteTableAssociation", "DeleteRouteTable",
    "DeleteRoute", "DisassociateRouteTable",
)
VPC_EVENTS = names(
    "CreateVpc", "DeleteVpc", "ModifyVpcAttribute", "AcceptVpcPeeringConnection", "CreateVpcPeeringConnection",
    "DeleteVpcPeeringConnection", "RejectVpcPeeringConnection", "AttachClassicLinkVpc", "DetachClassicLinkVpc",
    "DisableVpcClassicLink", "EnableVpcClassicLink",
)
_OPEN_TO_WORLD = ("0.0.0.0/0", "::/0")


def _security_group(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name in ("AuthorizeSecurityGroupIngress", "ModifySecurityGroupRules") and any(
        value in _OPEN_TO_WORLD for value in walk_strings(record.params)
    ):
        return SECURITY_GROUP.finding(
            record,
            severity=Severity.HIGH,
            summary=f"{record.principal} opened security group {record.param('groupId') or '?'} "
            "to the whole internet (0.0.0.0/0 or ::/0)",
        )
    return True


SECURITY_GROUP = Detection(
    id="network.security-group-change",
    techniques=('T1562.007',),
    category=Category.NETWORK,
    severity=Severity.MEDIUM,
    title="Security group changed",
    events={EC2: SECURITY_GROUP_EVENTS},
    match=_security_group,
    description="CIS 4.10; HIGH when ingress is opened to 0.0.0.0/0 or ::/0.",
)

NACL = Detection(
    id="network.nacl-change",
    techniques=('T1562.007',),
    category=Category.NETWORK,
    severity=Severity.MEDIUM,
    title="Network ACL changed",
    events={EC2: NACL_EVENTS},
    description="CIS 4.11.",
)

GATEWAY = Detection(
    id="network.gateway-change",
    category=Category.NETWORK,
    severity=Severity.MEDIUM,
    title="Network gateway changed",
    events={EC2: GATEWAY_EVENTS},
    description="CIS 4.12.",
)

ROUTE_TABLE = Detection(
    id="network.route-table-change",
    category=Category.NETWORK,
    severity=Severity.MEDIUM,
    title="Route table changed",
    events={EC2: ROUTE_EVENTS},
    description="CIS 4.13.",
)

VPC = Detection(
    id="network.vpc-change",
    category=Category.NETWORK,
    severity=Severity.MEDIUM,
    title="VPC changed",
    events={EC2: VPC_EVENTS},
    description="CIS 4.14.",
)

DETECTIONS = (SECURITY_GROUP, NACL, GATEWAY, ROUTE_TABLE, VPC)
