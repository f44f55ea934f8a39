"""The audit watches a graduated role through its whole life (issue 15): its deletion, its tags and the IAM OIDC
provider it trusts, not only its trust and permissions.

Every event is the real UpdateAssumeRolePolicy record (Stratus Red Team, tests/audit/fixtures) with only the call
replaced, its request parameters named as CloudTrail names them (the API's parameter names, first letter lower
case: ``roleName``, ``tagKeys``, ``openIDConnectProviderArn``, ``clientID``, ``thumbprintList``; TagRole's ``tags``
as ``[{"key", "value"}]``). The four fixture files below are such records (fixtures/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.audit.context import AuditContext, Graduated
from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.pipeline import classify
from chalicelib.federation import GRADUATED_ROLE_PATH, provider_intent_subject, role_intent_subject
from chalicelib.graduation import TAG_GRADUATION, TAG_TARGET, TAG_USER

from .conftest import MANAGED, ROTATOR_ROLE, eventbridge, fixture
from .test_oidc_trust import ACCOUNT, GH, ROLE, ROTATOR, Paths, role_call

GRADUATED = "self-protection.graduated-role-changed"
PROVIDER = "self-protection.graduated-provider-changed"
IDENTITY_PROVIDER = "persistence.identity-provider"
PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{GH}"
AUDIENCE = "sts.amazonaws.com"
#: What the ledger says graduation made: this role, trusting GitHub's provider with the usual audience.
LEDGER = Graduated(roles={ROLE: GRADUATED_ROLE_PATH}, providers={GH: {ROLE: AUDIENCE}})

#: fixture file -> (eventName, requestParameters) put into the real record.
DERIVED: dict[str, tuple[str, dict[str, Any]]] = {
    "iam_DeleteRole_graduated.raw.json": ("DeleteRole", {"roleName": ROLE}),
    "iam_UntagRole_graduated.raw.json": ("UntagRole", {"roleName": ROLE, "tagKeys": [TAG_USER, TAG_TARGET]}),
    "iam_DeleteOpenIDConnectProvider_github.raw.json": (
        "DeleteOpenIDConnectProvider", {"openIDConnectProviderArn": PROVIDER_ARN}),
    "iam_AddClientIDToOpenIDConnectProvider_github.raw.json": (
        "AddClientIDToOpenIDConnectProvider", {"openIDConnectProviderArn": PROVIDER_ARN, "clientID": "vault.acme.example"}),
}


class Ledger:
    """A graduated-roles lookup (the ledger in the Lambda) that counts its calls."""

    def __init__(self, graduated: Graduated = LEDGER, fail: bool = False) -> None:
        self.graduated, self.fail, self.calls = graduated, fail, 0

    def __call__(self) -> Graduated:
        self.calls += 1
        if self.fail:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return self.graduated


def context(*, iam: Paths | None = None, ledger: Ledger | None = None,
            intents: set[tuple[str, str]] | None = None) -> AuditContext:
    """IAM no longer knows the role by default (it was just deleted); the ledger does."""
    def intent_lookup(subject: str, action: str, key_id: str | None, at: datetime) -> bool:
        return (subject, action) in (intents or set())

    return AuditContext(managed_users={MANAGED}, rotator_role_name=ROTATOR_ROLE, intent_lookup=intent_lookup,
                        role_path_lookup=iam if iam is not None else Paths({}),
                        graduated_lookup=ledger if ledger is not None else Ledger())


def found(event: dict[str, Any], ctx: AuditContext) -> dict[str, Finding]:
    return {f.detection: f for f in classify(event, ctx)}


def provider_call(name: str, identity: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    return role_call(name, {"openIDConnectProviderArn": PROVIDER_ARN, **params}, identity)


def test_the_fixtures_are_the_real_record_with_the_call_replaced() -> None:
    for name, (event_name, params) in DERIVED.items():
        assert fixture(name) == role_call(event_name, params), name


# -- 1. a graduated role deleted by someone else ------------------------------------------------------------------


def test_a_deleted_graduated_role_is_known_from_the_ledger_and_is_high() -> None:
    """DeleteRole names only the role, and by the time the audit asks IAM the role is gone (NoSuchEntity)."""
    event = fixture("iam_DeleteRole_graduated.raw.json")
    ledger = Ledger()
    finding = found(event, context(ledger=ledger))[GRADUATED]
    assert finding.severity is Severity.HIGH
    assert f"iam:DeleteRole on graduated role {GRADUATED_ROLE_PATH}{ROLE}" in finding.summary
    assert finding.principal == f"arn:aws:iam::{ACCOUNT}:user/christophe"
    # Without the ledger's knowledge (the old behaviour) the deletion went unrated.
    assert GRADUATED not in found(event, context(ledger=Ledger(Graduated())))
    assert GRADUATED in found(eventbridge(event), context()), "as EventBridge delivers it"


def test_iam_s_answer_wins_while_the_role_exists_and_the_ledger_is_read_only_when_needed() -> None:
    ledger = Ledger()
    ctx = context(iam=Paths({ROLE: GRADUATED_ROLE_PATH, "web": "/service-role/"}), ledger=ledger)
    assert GRADUATED in found(role_call("DetachRolePolicy", {
        "roleName": ROLE, "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/deploy"}), ctx)
    assert ledger.calls == 0, "IAM knew the path: no ledger read"
    assert GRADUATED not in found(role_call("DeleteRole", {"roleName": "web"}), ctx)
    # A role of the same name IAM says lives elsewhere is not the graduated one (someone re-created it).
    elsewhere = context(iam=Paths({ROLE: "/"}), ledger=ledger)
    assert GRADUATED not in found(role_call("DeleteRole", {"roleName": ROLE}), elsewhere)
    assert ledger.calls == 0


def test_a_failing_iam_lookup_falls_back_to_the_ledger_and_the_ledger_is_read_once() -> None:
    ledger = Ledger()
    ctx = context(iam=Paths({}, fail=True), ledger=ledger)
    for event in (fixture("iam_DeleteRole_graduated.raw.json"), fixture("iam_UntagRole_graduated.raw.json")):
        assert GRADUATED in found(event, ctx)
    assert ledger.calls == 1


def test_a_failing_ledger_lookup_loses_no_other_finding() -> None:
    event = role_call("DeleteRolePolicy", {"roleName": ROLE, "policyName": "deploy"})
    findings = found(event, context(ledger=Ledger(fail=True)))
    assert GRADUATED not in findings and "iam-policy.change" in findings


def test_graduation_s_own_announced_deletion_is_quiet_and_an_unannounced_one_is_not() -> None:
    """The rollback deletes the role it created, after announcing DeleteRole under the role's subject."""
    event = role_call("DeleteRole", {"roleName": ROLE}, ROTATOR)
    assert classify(event, context(intents={(role_intent_subject(ROLE), "DeleteRole")})) == []
    finding = found(event, context(intents={(role_intent_subject(ROLE), "DeleteRolePolicy")}))[GRADUATED]
    assert "no graduation announced this call" in finding.summary


# -- 2. its tags ---------------------------------------------------------------------------------------------------


def test_removing_the_rotator_s_tags_is_high_and_says_what_relies_on_them() -> None:
    finding = found(fixture("iam_UntagRole_graduated.raw.json"), context(iam=Paths({ROLE: GRADUATED_ROLE_PATH})))[
        GRADUATED]
    assert finding.severity is Severity.HIGH
    assert f"removes the rotator's tag {TAG_USER!r}, {TAG_TARGET!r}" in finding.summary
    assert "a retry or a new graduation refuses it" in finding.summary


@pytest.mark.parametrize("key", [TAG_GRADUATION, TAG_USER.upper()])
def test_changing_the_rotator_s_tags_is_high_whatever_the_case(key: str) -> None:
    event = role_call("TagRole", {"roleName": ROLE, "tags": [{"key": key, "value": "grad-20240801"}]})
    finding = found(event, context(iam=Paths({ROLE: GRADUATED_ROLE_PATH})))[GRADUATED]
    assert finding.severity is Severity.HIGH and f"sets the rotator's tag {key!r}" in finding.summary


def test_other_tags_on_a_graduated_role_are_high_as_principal_tags() -> None:
    event = role_call("TagRole", {"roleName": ROLE, "tags": [{"key": "team", "value": "payments"}]})
    finding = found(event, context(iam=Paths({ROLE: GRADUATED_ROLE_PATH})))[GRADUATED]
    assert finding.severity is Severity.HIGH and "principal tags of its sessions" in finding.summary


def test_tags_on_other_roles_and_garbage_tag_parameters_find_nothing() -> None:
    ctx = context(iam=Paths({"web": "/"}), ledger=Ledger(Graduated()))
    assert found(role_call("TagRole", {"roleName": "web", "tags": [{"key": TAG_USER, "value": "x"}]}), ctx) == {}
    for params in ({"roleName": ROLE, "tags": "nope"}, {"roleName": ROLE, "tagKeys": {"a": 1}},
                   {"roleName": ROLE, "tags": [None, 3, {"key": None}]}):
        for name in ("TagRole", "UntagRole"):
            findings = found(role_call(name, params), context())
            assert findings[GRADUATED].severity is Severity.HIGH, (name, params)


# -- 3. the OIDC provider graduated roles trust --------------------------------------------------------------------

PROVIDER_CHANGES: dict[str, Callable[..., dict[str, Any]]] = {
    "DeleteOpenIDConnectProvider": lambda identity=None: provider_call("DeleteOpenIDConnectProvider", identity),
    "RemoveClientIDFromOpenIDConnectProvider": lambda identity=None: provider_call(
        "RemoveClientIDFromOpenIDConnectProvider", identity, clientID=AUDIENCE),
    "UpdateOpenIDConnectProviderThumbprint": lambda identity=None: provider_call(
        "UpdateOpenIDConnectProviderThumbprint", identity, thumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"]),
    "AddClientIDToOpenIDConnectProvider": lambda identity=None: provider_call(
        "AddClientIDToOpenIDConnectProvider", identity, clientID="vault.acme.example"),
}


@pytest.mark.parametrize("name", list(PROVIDER_CHANGES))
def test_a_change_to_the_provider_graduated_roles_trust_is_high(name: str) -> None:
    findings = found(PROVIDER_CHANGES[name](), context())
    finding = findings[PROVIDER]
    assert finding.severity is Severity.HIGH
    assert f"iam:{name} on the OIDC provider {GH}, which graduated CI roles trust (graduated roles: {ROLE!r})" \
        in finding.summary
    assert IDENTITY_PROVIDER not in findings, "the specific finding silences the generic one"


def test_the_fixtures_say_what_breaks_and_what_widens() -> None:
    deleted = found(fixture("iam_DeleteOpenIDConnectProvider_github.raw.json"), context())[PROVIDER]
    assert "every graduated pipeline of that issuer fails to assume its role" in deleted.summary
    added = found(eventbridge(fixture("iam_AddClientIDToOpenIDConnectProvider_github.raw.json")), context())[PROVIDER]
    assert "added the audience 'vault.acme.example'" in added.summary


def test_removing_an_audience_no_graduated_role_uses_is_medium() -> None:
    event = provider_call("RemoveClientIDFromOpenIDConnectProvider", clientID="legacy-app")
    assert found(event, context())[PROVIDER].severity is Severity.MEDIUM


def test_providers_no_graduated_role_trusts_are_left_to_the_generic_detection() -> None:
    ctx = context(ledger=Ledger(Graduated(roles={ROLE: GRADUATED_ROLE_PATH},
                                          providers={"gitlab.com": {ROLE: "https://gitlab.com"}})))
    for name, make in PROVIDER_CHANGES.items():
        findings = found(make(), ctx)
        assert PROVIDER not in findings, name
    assert IDENTITY_PROVIDER in found(PROVIDER_CHANGES["AddClientIDToOpenIDConnectProvider"](), ctx)
    assert found(role_call("DeleteOpenIDConnectProvider", {"openIDConnectProviderArn": "not-an-arn"}), context()) == {}


@pytest.mark.parametrize("name", ["AddClientIDToOpenIDConnectProvider"])
def test_graduation_s_own_announced_provider_change_is_quiet(name: str) -> None:
    """EnsureOidcProvider announces the audience it adds (and the provider it creates) before the call."""
    ctx = context(intents={(provider_intent_subject(PROVIDER_ARN), name)})
    assert classify(PROVIDER_CHANGES[name](ROTATOR), ctx) == []
    created = role_call("CreateOpenIDConnectProvider", {"url": f"https://{GH}", "clientIDList": [AUDIENCE]}, ROTATOR)
    created["responseElements"] = {"openIDConnectProviderArn": PROVIDER_ARN}
    assert IDENTITY_PROVIDER in found(created, ctx), "announced something else"
    announced = context(intents={(provider_intent_subject(GH), "CreateOpenIDConnectProvider")})
    assert classify(created, announced) == []


def test_the_rotator_s_identity_without_an_announcement_or_an_announcement_by_someone_else_is_high() -> None:
    unannounced = found(PROVIDER_CHANGES["DeleteOpenIDConnectProvider"](ROTATOR), context())[PROVIDER]
    assert "no graduation announced this call" in unannounced.summary
    ctx = context(intents={(provider_intent_subject(GH), "AddClientIDToOpenIDConnectProvider")})
    assert PROVIDER in found(PROVIDER_CHANGES["AddClientIDToOpenIDConnectProvider"](), ctx)


def test_a_refused_call_is_still_reported_as_refused() -> None:
    event = PROVIDER_CHANGES["DeleteOpenIDConnectProvider"]()
    event.update(errorCode="AccessDenied", errorMessage="User: ... is not authorized to perform: "
                 "iam:DeleteOpenIDConnectProvider")
    assert PROVIDER in found(event, context())


#: Rows for test_detections.py's table: (detection, label, event, severity or None, AuditContext overrides).
ROWS: list[tuple[str, str, Any, str | None, dict[str, Any]]] = [
    (GRADUATED, "a graduated role deleted, known from the ledger (fixture)",
     eventbridge(fixture("iam_DeleteRole_graduated.raw.json")), "HIGH",
     {"role_path_lookup": Paths({}), "graduated_lookup": Ledger()}),
    (GRADUATED, "a deleted role the ledger does not know (fixture)",
     eventbridge(fixture("iam_DeleteRole_graduated.raw.json")), None,
     {"role_path_lookup": Paths({}), "graduated_lookup": Ledger(Graduated())}),
    (PROVIDER, "the OIDC provider of graduated roles deleted (fixture)",
     eventbridge(fixture("iam_DeleteOpenIDConnectProvider_github.raw.json")), "HIGH",
     {"graduated_lookup": Ledger()}),
    (PROVIDER, "a provider no graduated role trusts deleted (fixture)",
     eventbridge(fixture("iam_DeleteOpenIDConnectProvider_github.raw.json")), None,
     {"graduated_lookup": Ledger(Graduated())}),
]


# -- what the Lambda knows: the ledger the graduation workflow writes ----------------------------------------------


def test_the_lookup_reads_graduated_targets_and_graduations_in_flight_from_the_ledger(
        moto_aws: None, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The records as GraduatePlan, EnsureRole, GraduateRecord and GraduateRollback write them (chalicelib/ledger.py),
    in a real table: a graduated target, a graduation in flight that created its role, and one rolled back that
    deleted it (no longer a graduated role)."""
    import boto3

    from chalicelib import audit_handlers
    from chalicelib.ledger import Ledger as RealLedger
    from deploy.infra import ensure_table

    table = f"ci-key-rotator-{uid}"
    ensure_table(boto3.client("dynamodb", region_name="us-east-1"), table)
    ledger = RealLedger(table)
    gitlab = f"arn:aws:iam::{ACCOUNT}:oidc-provider/gitlab.com"

    def graduation(gid: str, role: str, provider_arn: str, audience: str) -> str:
        arn = f"arn:aws:iam::{ACCOUNT}:role{GRADUATED_ROLE_PATH}{role}"
        ledger.start_rotation(MANAGED, gid, {"kind": "graduation", "reason": "graduation", "phase": "graduating",
                                             "role_arn": arn, "plan": {"role_name": role, "role_arn": arn,
                                                                       "provider_arn": provider_arn,
                                                                       "audience": audience}})
        return arn

    done = graduation("g1", ROLE, PROVIDER_ARN, AUDIENCE)
    ledger.update_rotation(MANAGED, "g1", role_created_by_us=True, phase="graduated")
    ledger.set_graduation(MANAGED, "github:acme/web-app", role_arn=done, graduation_id="g1",
                          issuer=f"https://{GH}")
    graduation("g2", "ci-deployer-gitlab", gitlab, "https://gitlab.com")
    ledger.update_rotation(MANAGED, "g2", role_created_by_us=True, phase="role-ready")
    graduation("g3", "ci-deployer-old", PROVIDER_ARN, AUDIENCE)
    ledger.update_rotation(MANAGED, "g3", role_created_by_us=True, phase="rolled-back",
                           rollback={"role_deleted": True, "key_restored": True})
    graduation("g4", "ci-deployer-refused", PROVIDER_ARN, AUDIENCE)  # failed before EnsureRole created a role

    monkeypatch.setattr(audit_handlers, "get_deps", lambda: SimpleNamespace(ledger=ledger))
    monkeypatch.setattr(audit_handlers, "_managed_users", lambda: [MANAGED, "nobody"])
    graduated = audit_handlers.graduated_lookup()
    assert graduated.roles == {ROLE: GRADUATED_ROLE_PATH, "ci-deployer-gitlab": GRADUATED_ROLE_PATH}
    assert graduated.providers == {GH: {ROLE: AUDIENCE}, "gitlab.com": {"ci-deployer-gitlab": "https://gitlab.com"}}


def test_the_rotator_s_tag_prefix_covers_every_tag_graduation_writes() -> None:
    from chalicelib.audit.detections.oidc_trust import ROTATOR_TAG_PREFIX

    assert all(tag.startswith(ROTATOR_TAG_PREFIX) for tag in (TAG_USER, TAG_TARGET, TAG_GRADUATION))
