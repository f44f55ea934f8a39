"""Least privilege per function: every ``.chalice/policy-<function>.json`` (a template, rendered per
stage) against the code it runs, and two stages in one account kept apart.

The check (deploy/policies.py) fails on a wildcard action, an IAM grant outside the managed users' path,
Secrets Manager or SSM access outside the app's prefixes, ``Resource: "*"`` on an action that has a
resource type, a forbidden action (``iam:*``, ``Put*Policy``, ``PassRole``...), a call in the code the
policy does not grant on the resource it is made on, and a grant no call in the code uses."""

from __future__ import annotations

import copy
import json

import pytest

from app import app
from deploy import analysis, chalice_config, naming, policies

FUNCTIONS = policies.functions()


def test_every_chalice_function_is_covered() -> None:
    expected = {f.name for f in app.pure_lambda_functions} | {s.name for s in app.event_sources} | {"api_handler"}
    assert set(FUNCTIONS) == expected
    files = {p.name for p in policies.CHALICE_DIR.glob("policy-*.json")}
    assert files == {f"policy-{f}.json" for f in FUNCTIONS}, "one policy file per function, no stray one"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_policy_is_least_privilege(function: str) -> None:
    assert policies.check(function) == []


def test_config_json_gives_every_function_its_policy_and_no_autogen() -> None:
    assert chalice_config.problems() == []
    config = chalice_config.load()
    for stage in ("dev", "prod"):
        functions = config["stages"][stage]["lambda_functions"]
        assert {f: v["iam_policy_file"] for f, v in functions.items()} == {
            f: f"stages/{stage}/policy-{f}.json" for f in FUNCTIONS}
        for function in FUNCTIONS:
            rendered = json.loads((policies.CHALICE_DIR / functions[function]["iam_policy_file"]).read_text())
            assert rendered == policies.for_stage(function, stage), "the committed rendering is the template's"


def test_the_audit_knows_every_role_that_changes_keys() -> None:
    roles = chalice_config.load()["stages"]["prod"]["environment_variables"]["ROTATOR_AUDIT_ROTATOR_ROLE"].split(",")
    writers = [f for f in FUNCTIONS if any(a.startswith(chalice_config.KEY_WRITES) for a in
                                           (n.action for n in policies.needs(f)))]
    assert sorted(roles) == sorted(naming.StageNames("prod").function(f) for f in writers)


# -- what the policies say, read directly ------------------------------------------------------------


def actions(function: str) -> set[str]:
    return {a for a, _, _ in policies.grants(policies.load(function))}


def test_no_function_may_touch_iam_policies_or_other_users() -> None:
    for function in FUNCTIONS:
        policy = policies.load(function)
        for action in ("iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:ListAccessKeys"):
            assert not policies.allows(policy, action, "arn:aws:iam::123456789012:user/admin"), (function, action)
            assert not policies.allows(policy, action, "arn:aws:iam::123456789012:user/service/ci-key-rotator")
        for action in ("iam:PutUserPolicy", "iam:AttachRolePolicy", "iam:PassRole", "iam:CreateUser",
                       "sts:AssumeRole", "secretsmanager:DeleteSecret", "dynamodb:DeleteTable"):
            assert not policies.allows(policy, action, "*"), (function, action)


def test_only_the_escrow_functions_can_read_or_write_the_escrow() -> None:
    escrow = policies.example_arn("escrow")
    readers = {f for f in FUNCTIONS if policies.allows(policies.load(f), "secretsmanager:GetSecretValue", escrow)}
    assert readers == {"plan", "create_key", "await_key_live", "push_target", "delete_old_key", "rollback",
                       # undo: the old key's secret back to the targets, the new one back if that fails
                       "undo_reactivate_old_key", "undo_push_target", "undo_rollback",
                       # graduation: checked before anything changes, restored from by the rollback
                       "graduate_plan", "graduate_rollback"}
    assert not policies.allows(policies.load("api_handler"), "secretsmanager:GetSecretValue", escrow), \
        "the internet-facing webhook Lambda cannot read an AWS key"
    writers = {f for f in FUNCTIONS if policies.allows(policies.load(f), "secretsmanager:PutSecretValue", escrow)}
    assert writers == {"create_key"}
    other_app = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/database-AbCdEf"
    assert not any(policies.allows(policies.load(f), "secretsmanager:GetSecretValue", other_app) for f in FUNCTIONS)


def test_send_task_only_for_the_webhook_and_the_poller() -> None:
    senders = {f for f in FUNCTIONS if actions(f) & {"states:SendTaskSuccess", "states:SendTaskFailure"}}
    assert senders == {"api_handler", "poller"}


def test_only_creating_a_key_creates_one() -> None:
    assert {f for f in FUNCTIONS if "iam:CreateAccessKey" in actions(f)} == {"create_key"}


# -- the check itself catches each kind of mistake --------------------------------------------------------


def broken(function: str, change: callable) -> list[str]:
    policy = copy.deepcopy(policies.load(function))
    change(policy)
    return policies.check(function, policy=policy)


def statement(policy: dict, sid: str) -> dict:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


@pytest.mark.parametrize(("function", "change", "expected"), [
    ("create_key", lambda p: statement(p, "ManagedUserKeys").update(Action=["iam:*"]), "wildcard action 'iam:*'"),
    ("create_key", lambda p: statement(p, "Ledger").update(Action=["dynamodb:*Item", "dynamodb:Query"]),
     "wildcard action"),
    ("create_key", lambda p: statement(p, "ManagedUserKeys").update(Resource="*"),
     "iam:CreateAccessKey on Resource '*'"),
    ("create_key", lambda p: statement(p, "ManagedUserKeys").update(Resource="arn:aws:iam::*:user/*"),
     "IAM key actions are scoped to arn:aws:iam::*:user/ci/prod/*"),
    ("plan", lambda p: statement(p, "Ledger").update(Resource="arn:aws:dynamodb:*:*:table/ci-key-rotator-*"),
     "every Resource names the stage"),
    ("push_target", lambda p: statement(p, "ReferencedSecrets").update(
        Resource="arn:aws:secretsmanager:*:*:secret:ci-key-rotator/dev/*"), "every Resource names the stage"),
    ("push_target", lambda p: statement(p, "ReferencedSecrets").update(Resource="arn:aws:secretsmanager:*:*:secret:*"),
     "Secrets Manager access is scoped to"),
    ("plan", lambda p: p["Statement"].append({"Sid": "X", "Effect": "Allow", "Action": "iam:PutUserPolicy",
                                              "Resource": naming.MANAGED_USERS_PATTERN}),
     "iam:PutUserPolicy is never granted"),
    ("drain_check", lambda p: statement(p, "ManagedUserKeys").update(Action=[]),
     "the code calls iam:GetAccessKeyLastUsed on the managed-user"),
    ("api_handler", lambda p: p["Statement"].append({"Sid": "Escrow", "Effect": "Allow",
                                                     "Action": ["secretsmanager:GetSecretValue"],
                                                     "Resource": naming.ESCROW_PATTERN}),
     "is granted but the code never calls it there"),
    ("report", lambda p: p["Statement"].append({"Sid": "S", "Effect": "Allow", "Action": ["states:SendTaskSuccess"],
                                                "Resource": naming.STATE_MACHINE_PATTERN}),
     "only ['api_handler', 'poller'] resolve verifications"),
    ("alert", lambda p: statement(p, "Outcomes").update(NotResource="x"), "NotResource is not allowed"),
    ("alert", lambda p: p["Statement"].pop(0), "missing the baseline grant logs:CreateLogStream"),
])
def test_the_check_catches(function: str, change: callable, expected: str) -> None:
    problems = broken(function, change)
    assert any(expected in p for p in problems), problems


def test_a_call_the_analysis_finds_names_its_path() -> None:
    problems = broken("create_key", lambda p: statement(p, "Escrow").update(
        Action=["secretsmanager:CreateSecret", "secretsmanager:GetSecretValue", "secretsmanager:TagResource"]))
    (missing,) = [p for p in problems if "PutSecretValue" in p]
    assert "app.create_key_task -> chalicelib.workflow.create_key.run -> chalicelib.keys.Escrow.stash_pending" in missing


# -- the analysis ------------------------------------------------------------------------------------------


def test_the_analysis_sees_calls_through_helpers_properties_and_references() -> None:
    reach = analysis.function_actions()
    # a client method passed to a helper: _call(client("iam").list_access_keys, ...)
    assert "iam:ListAccessKeys" in reach["scheduler"].actions
    # a property that builds a client (Escrow._sm), reached through an annotated dataclass field (Deps.escrow)
    assert "secretsmanager:PutSecretValue" in reach["create_key"].actions
    # a handler passed by reference: run_task("plan", plan.run, event)
    assert "states:DescribeExecution" in reach["plan"].actions
    # a client held in a parameter named like its service: fetch_credential_report(iam)
    assert {"iam:GenerateCredentialReport", "iam:GetCredentialReport"} <= reach["credential_report"].actions
    # a Protocol's implementations: Notifier.send -> SnsNotifier.send
    assert "sns:Publish" in reach["audit"].actions
    # powertools Parameters behind SecretRef.resolve
    assert "secretsmanager:GetSecretValue" in reach["verify_build"].actions
    # and nothing the function cannot reach
    assert reach["await_key_live"].actions == {"secretsmanager:GetSecretValue"}
    assert not any(a.startswith("iam:") for a in reach["api_handler"].actions)


def test_policies_are_rendered_from_the_analysis() -> None:
    for function in FUNCTIONS:
        rendered = policies.render(function)
        assert policies.check(function, policy=policies.render_stage(rendered, policies.STAGE)) == [], function
        assert json.loads(json.dumps(rendered)) == rendered


# -- stages ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_stage_s_policy_reaches_nothing_of_another_stage(function: str) -> None:
    """dev and prod in one account: dev's functions cannot read prod's CI tokens or escrow, change prod's
    users' keys, write prod's ledger or publish to prod's topic (and the other way round)."""
    for mine, theirs in (("dev", "prod"), ("prod", "dev")):
        policy = policies.load(function, mine)
        for action, resource, _ in policies.grants(policy):
            # "*": actions with no resource type; a key ARN: the stage is in its kms:ResourceAliases condition.
            if resource in ("*", policies.KMS_KEY_PATTERN) or (function, action) in policies.IAM_EXCEPTIONS:
                continue
            for kind in policies.patterns(naming.StageNames(theirs)):
                if kind in ("account", "escrow-key") or kind in policies.UNSTAGED_KINDS:
                    continue  # graduated roles and OIDC providers are the account's, not a stage's
                arn = policies.example_arn(kind, theirs)
                assert not policies.allows(policy, action, arn), (function, mine, action, arn)


def test_every_template_resource_names_the_stage() -> None:
    for function in FUNCTIONS:
        for action, resource, _ in policies.grants(policies.template(function)):
            if resource in ("*", policies.KMS_KEY_PATTERN, *policies.UNSTAGED_IAM_PATTERNS) \
                    or (function, action) in policies.IAM_EXCEPTIONS:
                continue
            assert naming.STAGE_TOKEN in resource, (function, action, resource)


@pytest.mark.parametrize("stage", ["dev-eu", "Prod", "", "a" * 17, "${Stage}x"])
def test_a_stage_name_that_would_blur_the_patterns_is_refused(stage: str) -> None:
    with pytest.raises(ValueError, match="one lowercase word"):
        naming.StageNames(stage)


def test_managed_users_of_each_stage_live_under_their_own_path() -> None:
    assert naming.StageNames("prod").managed_path == "/ci/prod/"
    prod_user = "arn:aws:iam::123456789012:user/ci/prod/ci-web"
    assert policies.allows(policies.load("create_key", "prod"), "iam:CreateAccessKey", prod_user)
    assert not policies.allows(policies.load("create_key", "dev"), "iam:CreateAccessKey", prod_user)
