"""The audit watches OIDC trust (issue 15): a CI-trusting role without a repository-pinning ``sub`` is CRITICAL,
a change to a graduated role by anyone but graduation is HIGH.

Every event here is a real CloudTrail record (tests/audit/fixtures, Stratus Red Team detonation logs) with
only its trust policy, role name, caller or account replaced, written the way CloudTrail writes it: JSON text in the
request, URL-encoded JSON in CreateRole's response.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.audit.context import AuditContext
from chalicelib.audit.detections.oidc_trust import assess_trust
from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.pipeline import classify
from chalicelib.federation import GRADUATED_ROLE_PATH, Federation, role_intent_subject

from .conftest import MANAGED, ROTATOR_ROLE, assumed_role, eventbridge, fixture, fixture_record

OPEN, GRADUATED = "persistence.oidc-trust-open", "self-protection.graduated-role-changed"
ACCOUNT = "609418236337"  # the account of the real CreateRole sample
GH = "token.actions.githubusercontent.com"
GITLAB = "gitlab.com"
CIRCLE_ORG = "0f4f7a3c-1a2b-4c5d-8e9f-001122334455"
CIRCLE_PROJECT = "7e2b1c44-2a3b-4c5d-9e8f-aabbccddeeff"
CIRCLE = f"oidc.circleci.com/org/{CIRCLE_ORG}"
BITBUCKET = "api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc"
REPO_UUID = "{5b0c3c8e-8a4f-4f61-9d1f-2f1b4a8c9e10}"
ROLE = "deploy-web-app"


def provider(issuer: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:oidc-provider/{issuer}"


def oidc_trust(issuer: str, condition: dict[str, Any] | None, action: Any = "sts:AssumeRoleWithWebIdentity",
               federated: Any = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Federated": federated or provider(issuer)},
                                 "Action": action}
    if condition is not None:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def pinned(issuer: str, operator: str, sub: Any, aud: str | None = "sts.amazonaws.com") -> dict[str, Any]:
    condition: dict[str, Any] = {operator: {f"{issuer}:sub": sub}}
    if aud is not None:
        condition.setdefault("StringEquals", {})[f"{issuer}:aud"] = aud
    return oidc_trust(issuer, condition)


def as_cloudtrail_writes_it(document: dict[str, Any]) -> str:
    # The console and `aws iam ... file://` send indented JSON; CloudTrail logs the request text verbatim.
    return json.dumps(document, indent=2)


def create_role(document: dict[str, Any], *, role: str = ROLE, path: str | None = None,
                identity: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    """The real CreateRole record (Stratus Red Team) with this trust, role, path and caller."""
    record = copy.deepcopy(fixture_record("iam_CreateRole_crossaccount.raw.json"))
    text = as_cloudtrail_writes_it(document)
    params = record["requestParameters"]
    params.update(assumeRolePolicyDocument=text, roleName=role)
    params.pop("permissionsBoundary", None)
    if path is not None:
        params["path"] = path
    response = record["responseElements"]["role"]
    response.update(assumeRolePolicyDocument=quote(text, safe=""), roleName=role, path=path or "/",
                    arn=f"arn:aws:iam::{ACCOUNT}:role{path or '/'}{role}")
    response.pop("permissionsBoundary", None)
    if identity is not None:
        record["userIdentity"] = identity
    if error:
        record.update(errorCode=error, errorMessage="This policy contains invalid Json", responseElements=None)
    return record


def real_update_record() -> dict[str, Any]:
    """The real UpdateAssumeRolePolicy record, moved to the CreateRole sample's account: an IAM OIDC provider is
    always the role's own account's (another account's would read as a cross-account grant)."""
    text = json.dumps(fixture_record("iam_UpdateAssumeRolePolicy_crossaccount.raw.json"))
    record: dict[str, Any] = json.loads(text.replace("751203476945", ACCOUNT))
    return record


def update_trust(document: dict[str, Any], *, role: str = ROLE, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The real UpdateAssumeRolePolicy record (Stratus Red Team) with this trust, role and caller."""
    record = real_update_record()
    record["requestParameters"] = {"policyDocument": as_cloudtrail_writes_it(document), "roleName": role}
    if identity is not None:
        record["userIdentity"] = identity
    return record


def role_call(name: str, params: dict[str, Any], identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Another role call, in the real UpdateAssumeRolePolicy record's shape (same caller, session, TLS)."""
    record = real_update_record()
    record.update(eventName=name, requestParameters=params)
    if identity is not None:
        record["userIdentity"] = identity
    return record


def found(event: dict[str, Any], ctx: AuditContext) -> dict[str, Finding]:
    return {f.detection: f for f in classify(event, ctx)}


@pytest.fixture
def ctx() -> AuditContext:
    return AuditContext(managed_users={MANAGED}, rotator_role_name=ROTATOR_ROLE)


# -- the fixtures are the real thing -------------------------------------------------------------------------


def test_the_fixtures_are_cloudtrail_s_own_shape() -> None:
    """CreateRole logs the trust as JSON text in the request and URL-encoded in the response; the helpers write
    the same two encodings (checked against the real record's pair)."""
    record = fixture("iam_CreateRole_crossaccount.raw.json")
    text = record["requestParameters"]["assumeRolePolicyDocument"]
    assert record["responseElements"]["role"]["assumeRolePolicyDocument"] == quote(text, safe="")
    assert as_cloudtrail_writes_it(json.loads(text)) == text
    update = fixture("iam_UpdateAssumeRolePolicy_crossaccount.raw.json")
    assert update["eventVersion"] == "1.09" and update["responseElements"] is None
    assert json.loads(update["requestParameters"]["policyDocument"])["Statement"]


def test_derived_fixture_files_are_the_real_records_with_an_oidc_trust() -> None:
    assert fixture("iam_CreateRole_oidc_github_org_wildcard.raw.json") == create_role(
        pinned(GH, "StringLike", "repo:acme/*"))
    assert fixture("iam_UpdateAssumeRolePolicy_oidc_github_no_sub.raw.json") == update_trust(
        oidc_trust(GH, {"StringEquals": {f"{GH}:aud": "sts.amazonaws.com"}}))


# -- CRITICAL: the trust admits other repositories ---------------------------------------------------------------


CRITICAL_TRUSTS = {
    "github, no sub condition": oidc_trust(GH, {"StringEquals": {f"{GH}:aud": "sts.amazonaws.com"}}),
    "github, no condition at all": oidc_trust(GH, None),
    "github, repo:*": pinned(GH, "StringLike", "repo:*"),
    "github, repo:org/* (every repository of the org)": pinned(GH, "StringLike", "repo:acme/*"),
    "github, repository name prefix": pinned(GH, "StringLike", "repo:acme/web-*:ref:refs/heads/main"),
    "github, sub *": pinned(GH, "StringLike", "*"),
    "github, a spanning value after a pinned one (IAM checks only the first at creation)": pinned(
        GH, "ForAnyValue:StringLike", ["repo:acme/web-app:ref:refs/heads/main", "repo:acme/*"]),
    "github, negative sub only": pinned(GH, "StringNotEquals", "repo:evil/fork:ref:refs/heads/main"),
    "github, keys in another case": oidc_trust(GH, {"StringLike": {"Token.Actions.GitHubUserContent.com:SUB": "repo:*"}}),
    "github, IfExists": pinned(GH, "StringLikeIfExists", "repo:acme/*"),
    "github, sts:* action": oidc_trust(GH, None, action="sts:*"),
    "github, * action": oidc_trust(GH, None, action=["*"]),
    "github, provider as a list": oidc_trust(GH, None, federated=[provider(GH)]),
    "gitlab, project_path:group/*": pinned(GITLAB, "StringLike", "project_path:acme-group/*", aud="https://gitlab.com"),
    "gitlab, no sub": oidc_trust(GITLAB, {"StringEquals": {f"{GITLAB}:aud": "https://gitlab.com"}}),
    "circleci, every project of the org": pinned(CIRCLE, "StringLike", f"org/{CIRCLE_ORG}/project/*/user/*",
                                                 aud=CIRCLE_ORG),
    "bitbucket, any repository": pinned(BITBUCKET, "StringLike", "*:*", aud="ari:cloud:bitbucket::workspace/x"),
}


@pytest.mark.parametrize("name", list(CRITICAL_TRUSTS))
def test_a_trust_that_spans_repositories_is_critical_on_create_and_on_update(name: str, ctx: AuditContext) -> None:
    document = CRITICAL_TRUSTS[name]
    for event in (create_role(document), update_trust(document)):
        findings = found(event, ctx)
        assert findings[OPEN].severity is Severity.CRITICAL, (name, findings)
        assert "iam-policy.change" not in findings, "the specific finding silences the generic one"
        assert ROLE in findings[OPEN].summary and "christophe" in findings[OPEN].principal


def test_the_finding_says_what_is_open_and_that_aud_is_missing(ctx: AuditContext) -> None:
    (finding,) = classify(create_role(pinned(GH, "StringLike", "repo:acme/*", aud=None)), ctx)
    assert finding.detection == OPEN
    assert "'repo:acme/*'" in finding.summary and "spans repositories" in finding.summary
    assert "no aud condition" in finding.summary
    (no_sub,) = classify(update_trust(CRITICAL_TRUSTS["github, no sub condition"]), ctx)
    assert "no sub condition" in no_sub.summary and "no aud" not in no_sub.summary


def test_eventbridge_delivery_and_the_response_s_url_encoded_copy(ctx: AuditContext) -> None:
    record = create_role(CRITICAL_TRUSTS["github, repo:*"])
    assert found(eventbridge(record), ctx)[OPEN].severity is Severity.CRITICAL
    del record["requestParameters"]["assumeRolePolicyDocument"]
    assert found(record, ctx)[OPEN].severity is Severity.CRITICAL, "read from responseElements (URL-encoded)"


def test_other_grants_of_the_same_trust_are_kept_in_the_finding(ctx: AuditContext) -> None:
    document = CRITICAL_TRUSTS["github, repo:*"]
    document["Statement"].append({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::193672423079:root"},
                                  "Action": "sts:AssumeRole"})
    findings = found(create_role(document), ctx)
    assert set(findings) == {OPEN}, "persistence.role-trust-opened is silenced, its reason is not"
    assert "grants another account (193672423079)" in findings[OPEN].summary


def test_a_refused_attempt_is_medium(ctx: AuditContext) -> None:
    """IAM refuses a GitHub trust without a scoped sub (MalformedPolicyDocument): nothing changed."""
    finding = found(create_role(CRITICAL_TRUSTS["github, no sub condition"], error="MalformedPolicyDocument"),
                    ctx)[OPEN]
    assert finding.severity is Severity.MEDIUM and "attempt failed: MalformedPolicyDocument" in finding.summary


# -- not CRITICAL: one repository -------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [
    pinned(GH, "StringEquals", "repo:acme/web-app:ref:refs/heads/main"),
    pinned(GH, "StringEquals", "repo:acme/web-app:environment:production"),
    pinned(GH, "StringEquals", "repo:acme/*"),  # StringEquals: the * is a literal character
    pinned(GH, "StringLike", "repo:acme/web-app:ref:refs/heads/release-*"),
    oidc_trust(GH, {"StringEquals": {"TOKEN.actions.githubusercontent.com:Sub": "repo:acme/web-app:ref:refs/heads/main",
                                     "token.actions.githubusercontent.com:AUD": "sts.amazonaws.com"}}),
    pinned(GITLAB, "StringEquals", "project_path:acme-group/web-app:ref_type:branch:ref:main", aud="https://gitlab.com"),
    pinned(CIRCLE, "StringLike", f"org/{CIRCLE_ORG}/project/{CIRCLE_PROJECT}/user/*", aud=CIRCLE_ORG),
    pinned(BITBUCKET, "StringLike", f"{REPO_UUID}:*", aud="ari:cloud:bitbucket::workspace/x"),
], ids=["github exact ref", "github environment", "StringEquals literal *", "github release-* branches",
        "keys in another case", "gitlab exact", "circleci user/*", "bitbucket {repo}:*"])
def test_a_trust_pinned_to_one_repository_is_not_flagged(document: dict[str, Any], ctx: AuditContext) -> None:
    assert OPEN not in found(create_role(document), ctx)
    assert OPEN not in found(update_trust(document), ctx)
    assert assess_trust(document) == []


@pytest.mark.parametrize("provider_name", ["github", "gitlab", "circleci", "bitbucket"])
def test_the_trust_graduation_writes_is_never_flagged(provider_name: str) -> None:
    """federation.Federation.trust_policy is what graduation puts on a role: the audit must agree it is pinned."""
    federation = {
        "github": Federation("github", f"https://{GH}", "sts.amazonaws.com",
                             "repo:acme/web-app:ref:refs/heads/main", "StringEquals"),
        "gitlab": Federation("gitlab", "https://gitlab.com", "https://gitlab.com",
                             "project_path:acme-group/web-app:ref_type:branch:ref:main", "StringEquals"),
        "circleci": Federation("circleci", f"https://{CIRCLE}", CIRCLE_ORG,
                               f"org/{CIRCLE_ORG}/project/{CIRCLE_PROJECT}/user/*", "StringLike"),
        "bitbucket": Federation("bitbucket", f"https://{BITBUCKET}", "ari:cloud:bitbucket::workspace/x",
                                f"{REPO_UUID}:*", "StringLike"),
    }[provider_name]
    assert assess_trust(federation.trust_policy(federation.provider_arn(ACCOUNT))) == []


@pytest.mark.parametrize("document", [
    pinned(GH, "StringLike", "repo:acme/web-app:*"),
    pinned(GITLAB, "StringLike", "project_path:acme-group/web-app:*", aud="https://gitlab.com"),
], ids=["github", "gitlab"])
def test_one_repository_with_any_ref_is_medium(document: dict[str, Any], ctx: AuditContext) -> None:
    """Every branch anyone with push access creates can assume the role, bypassing review: worth a look, not a page."""
    finding = found(update_trust(document), ctx)[OPEN]
    assert finding.severity is Severity.MEDIUM and "every branch, tag and environment" in finding.summary


@pytest.mark.parametrize("fixture_name", ["iam_CreateRole_crossaccount.raw.json",
                                          "iam_UpdateAssumeRolePolicy_crossaccount.raw.json"])
def test_non_oidc_trusts_are_left_to_the_other_detections(fixture_name: str, ctx: AuditContext) -> None:
    findings = found(fixture(fixture_name), ctx)
    assert OPEN not in findings and GRADUATED not in findings
    assert findings, "the real samples trust another account: persistence / iam-policy still report them"


@pytest.mark.parametrize("principal", [
    {"Service": "ec2.amazonaws.com"},
    {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    {"Federated": "cognito-identity.amazonaws.com"},
    {"Federated": f"arn:aws:iam::{ACCOUNT}:saml-provider/okta"},
])
def test_service_account_saml_and_cognito_trusts_are_not_this_detection_s(principal: dict[str, Any],
                                                                          ctx: AuditContext) -> None:
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}]}
    assert OPEN not in found(create_role(document), ctx)


def test_a_deny_or_another_action_is_not_an_oidc_grant(ctx: AuditContext) -> None:
    deny = oidc_trust(GH, None)
    deny["Statement"][0]["Effect"] = "Deny"
    assert OPEN not in found(update_trust(deny), ctx)
    assert OPEN not in found(update_trust(oidc_trust(GH, None, action="sts:TagSession")), ctx)


@pytest.mark.parametrize("junk", ["", "not json", "%7Bbroken", "[]", json.dumps({"Statement": "x"}),
                                  json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"Federated": 7},
                                                             "Action": 3, "Condition": {"StringLike": []}}]})])
def test_garbage_documents_find_nothing_and_raise_nothing(junk: str, ctx: AuditContext) -> None:
    record = update_trust({})
    record["requestParameters"]["policyDocument"] = junk
    assert OPEN not in found(record, ctx)


# -- HIGH: a graduated role changed by someone else -----------------------------------------------------------


class Paths:
    """A role-path lookup (IAM GetRole in the Lambda) that counts its calls."""

    def __init__(self, paths: dict[str, str], fail: bool = False) -> None:
        self.paths, self.fail, self.calls = paths, fail, 0

    def __call__(self, role: str) -> str | None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("throttled")
        return self.paths.get(role)


def graduated_ctx(lookup: Paths | None = None, intents: set[tuple[str, str]] | None = None) -> AuditContext:
    def intent_lookup(subject: str, action: str, key_id: str | None, at: datetime) -> bool:
        return (subject, action) in (intents or set())

    return AuditContext(managed_users={MANAGED}, rotator_role_name=ROTATOR_ROLE, intent_lookup=intent_lookup,
                        role_path_lookup=lookup or Paths({ROLE: GRADUATED_ROLE_PATH}))


GOOD_TRUST = pinned(GH, "StringEquals", "repo:acme/web-app:ref:refs/heads/main")
ROTATOR = assumed_role(ROTATOR_ROLE, session="graduate", account=ACCOUNT)

GRADUATED_CHANGES = {
    "UpdateAssumeRolePolicy": lambda identity=None: update_trust(GOOD_TRUST, identity=identity),
    "DeleteRole": lambda identity=None: role_call("DeleteRole", {"roleName": ROLE}, identity),
    "DetachRolePolicy": lambda identity=None: role_call(
        "DetachRolePolicy", {"roleName": ROLE, "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/deploy"}, identity),
    "PutRolePolicy": lambda identity=None: role_call("PutRolePolicy", {
        "roleName": ROLE, "policyName": "extra",
        "policyDocument": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::artifacts/*"}]})}, identity),
    "CreateRole": lambda identity=None: create_role(GOOD_TRUST, path=GRADUATED_ROLE_PATH, identity=identity),
}


@pytest.mark.parametrize("name", list(GRADUATED_CHANGES))
def test_a_graduated_role_changed_by_someone_else_is_high(name: str) -> None:
    findings = found(GRADUATED_CHANGES[name](), graduated_ctx())
    finding = findings[GRADUATED]
    assert finding.severity is Severity.HIGH
    assert f"{GRADUATED_ROLE_PATH}{ROLE}" in finding.summary and "outside the graduation workflow" in finding.summary
    assert "iam-policy.change" not in findings


@pytest.mark.parametrize("name", list(GRADUATED_CHANGES))
def test_the_rotator_s_own_announced_change_is_quiet(name: str) -> None:
    """Graduation's own calls: the rotator's identity AND an intent recorded under the role's subject."""
    ctx = graduated_ctx(intents={(role_intent_subject(ROLE), name)})
    assert classify(GRADUATED_CHANGES[name](ROTATOR), ctx) == []


def test_the_rotator_s_identity_without_an_announcement_is_high() -> None:
    ctx = graduated_ctx(intents={(role_intent_subject(ROLE), "DeleteRole")})  # announced something else
    finding = found(GRADUATED_CHANGES["UpdateAssumeRolePolicy"](ROTATOR), ctx)[GRADUATED]
    assert finding.severity is Severity.HIGH and "no graduation announced this call" in finding.summary
    # Someone else with an intent on record for this very call is still someone else.
    ctx = graduated_ctx(intents={(role_intent_subject(ROLE), "UpdateAssumeRolePolicy")})
    assert GRADUATED in found(GRADUATED_CHANGES["UpdateAssumeRolePolicy"](), ctx)


def test_roles_outside_the_graduated_path_are_not_graduated() -> None:
    ctx = graduated_ctx(Paths({ROLE: "/service-role/"}))
    findings = found(update_trust(GOOD_TRUST), ctx)
    assert GRADUATED not in findings and "iam-policy.change" in findings
    assert GRADUATED not in found(create_role(GOOD_TRUST, path="/ci-key-rotator/"), ctx)
    assert GRADUATED not in found(role_call("DeleteRole", {"roleName": "gone"}), ctx), "no such role: unknown"


def test_the_path_is_asked_once_per_role_and_a_failing_lookup_loses_no_other_finding() -> None:
    lookup = Paths({ROLE: GRADUATED_ROLE_PATH})
    ctx = graduated_ctx(lookup)
    for name in ("UpdateAssumeRolePolicy", "DeleteRole"):
        assert GRADUATED in found(GRADUATED_CHANGES[name](), ctx)
    assert lookup.calls == 1
    assert lookup.calls == 1 and GRADUATED in found(GRADUATED_CHANGES["CreateRole"](), ctx), "CreateRole has the path"
    failing = graduated_ctx(Paths({}, fail=True))
    findings = found(update_trust(GOOD_TRUST), failing)
    assert GRADUATED not in findings and "iam-policy.change" in findings


def test_an_open_trust_on_a_graduated_role_is_one_finding_carrying_both() -> None:
    """The OIDC finding silences the graduated one, so it keeps HIGH as a floor and says which role it is."""
    one_repo_any_ref = pinned(GH, "StringLike", "repo:acme/web-app:*")
    findings = found(update_trust(one_repo_any_ref), graduated_ctx())
    assert set(findings) == {OPEN}
    assert findings[OPEN].severity is Severity.HIGH and "is a graduated role" in findings[OPEN].summary
    spanning = found(update_trust(pinned(GH, "StringLike", "repo:acme/*")), graduated_ctx())
    assert set(spanning) == {OPEN} and spanning[OPEN].severity is Severity.CRITICAL


def test_an_open_trust_is_critical_even_when_the_rotator_announced_it() -> None:
    """Graduation never writes a spanning sub (federation pins it); if it ever did, that is a bug to page on."""
    ctx = graduated_ctx(intents={(role_intent_subject(ROLE), "UpdateAssumeRolePolicy")})
    finding = found(update_trust(pinned(GH, "StringLike", "repo:*"), identity=ROTATOR), ctx)[OPEN]
    assert finding.severity is Severity.CRITICAL


#: Rows for test_detections.py's table (its meta-test holds every detection to a positive and a negative case):
#: (detection, label, event, severity or None, AuditContext overrides).
ROWS: list[tuple[str, str, Any, str | None, dict[str, Any]]] = [
    (OPEN, "CreateRole trusting every repository of a GitHub org (fixture)",
     fixture("iam_CreateRole_oidc_github_org_wildcard.raw.json"), "CRITICAL", {}),
    (OPEN, "UpdateAssumeRolePolicy trusting GitHub without a sub (fixture)",
     eventbridge(fixture("iam_UpdateAssumeRolePolicy_oidc_github_no_sub.raw.json")), "CRITICAL", {}),
    (OPEN, "CreateRole trusting another account (fixture)", fixture("iam_CreateRole_crossaccount.raw.json"), None, {}),
    (OPEN, "trust pinned to one repository and branch", update_trust(GOOD_TRUST), None, {}),
    (GRADUATED, "someone updates a graduated role's trust", eventbridge(update_trust(GOOD_TRUST)), "HIGH",
     {"role_path_lookup": Paths({ROLE: GRADUATED_ROLE_PATH})}),
    (GRADUATED, "the same call on a role outside the graduated path", eventbridge(update_trust(GOOD_TRUST)), None,
     {"role_path_lookup": Paths({ROLE: "/"})}),
]
