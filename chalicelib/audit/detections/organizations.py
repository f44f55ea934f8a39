"""AWS Organizations changes (CIS 4.15); leaving or deleting the organization is CRITICAL."""

from __future__ import annotations

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.base import Detection, MatchResult, names
from chalicelib.audit.finding import Category, Severity
from chalicelib.audit.models import Record

ORGANIZATIONS = "organizations.amazonaws.com"
CIS_ORG_EVENTS = names(
    "AcceptHandshake", "AttachPolicy", "CreateAccount", "CreateOrganizationalUnit", "CreatePolicy",
    "DeclineHandshake", "DeleteOrganization", "DeleteOrganizationalUnit", "DeletePolicy", "DetachPolicy",
    "DisablePolicyType", "EnablePolicyType", "InviteAccountToOrganization", "LeaveOrganization", "MoveAccount",
    "RemoveAccountFromOrganization", "UpdatePolicy", "UpdateOrganizationalUnit",
)
_CRITICAL = names("LeaveOrganization", "DeleteOrganization", "RemoveAccountFromOrganization")


def _change(record: Record, ctx: AuditContext) -> MatchResult:
    if record.name in _CRITICAL:
        return ORG_CHANGE.finding(
            record,
            severity=Severity.CRITICAL,
            summary=f"{record.principal} called organizations:{record.name}: the account's SCPs and "
            "organization-wide guardrails stop applying",
        )
    return True


ORG_CHANGE = Detection(
    id="organizations.change",
    techniques=('T1666',),
    category=Category.ORGANIZATIONS,
    severity=Severity.HIGH,
    title="AWS Organizations changed",
    events={ORGANIZATIONS: CIS_ORG_EVENTS},
    match=_change,
    description="The 18 CIS 4.15 events; CRITICAL for leaving/deleting the organization.",
)

DETECTIONS = (ORG_CHANGE,)
