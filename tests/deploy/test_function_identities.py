"""Each Lambda signs its AWS calls with its own moto IAM user, carrying exactly the actions of its
``.chalice/policy-<function>.json``, with IAM authentication on: a permission missing from a policy
file fails a rotation here as it would in AWS, and what every function called is recorded and compared
with its policy and with the static analysis."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import boto3
import pytest

from chalicelib.workflow.state import execution_name
from deploy import analysis, policies
from local.runtime import LocalRuntime, function_policy
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import alerts_for
from tests.test_graduation import exercise_graduation
from tests.test_undo import exercise_undo

HEALTH = json.loads((Path(__file__).parents[1] / "audit" / "fixtures"
                     / "health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json").read_text())
SCHEDULED = {"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-01-01T06:00:00Z", "region": "us-east-1",
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/x"], "detail": {}}


def test_every_function_runs_as_its_own_role_with_exactly_its_policy_actions(runtime: LocalRuntime) -> None:
    iam = runtime.client("iam")
    assert set(runtime.function_identities) == set(policies.functions())
    for function, identity in runtime.function_identities.items():
        role = runtime.function_name(function)
        assert identity.name == function
        # A session of the function's execution role, named after the function, as Lambda signs with.
        caller = boto3.session.Session(aws_access_key_id=identity.access_key_id,
                                       aws_secret_access_key=identity.secret_access_key,
                                       aws_session_token=identity.session_token, region_name="us-east-1")
        arn = caller.client("sts", endpoint_url=runtime.endpoint).get_caller_identity()["Arn"]
        assert arn.endswith(f":assumed-role/{role}/{role}"), arn
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
        (attached,) = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
        granted = {a for s in document["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert granted == {a for a, _, _ in policies.grants(policies.load(function))}, function
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == [], "nothing else"


@pytest.fixture(scope="module")
def exercised(world: World, runtime: LocalRuntime) -> dict[str, set[str]]:
    """Every function run through the local AWS at least once, each with its own identity."""
    ok, failing, leaked_user = new_user_name("id"), new_user_name("id"), new_user_name("id")
    for name in (ok, failing, leaked_user):
        world.add_user(name, [f"acme/{name}"])
    assert world.rotate(ok)["status"] == "SUCCEEDED"          # Plan ... Report, the webhook route, the poller
    assert world.rotate(ok)["status"] == "SUCCEEDED"          # not an adoption: the escrow's CURRENT/PREVIOUS
    world.github.fail_next_builds(f"acme/{failing}", 1)
    assert world.rotate(failing)["status"] == "FAILED"        # Rollback, Alert
    exercise_undo(world, runtime)                              # UndoPlan ... UndoDeactivateNewKey, UndoRollback
    exercise_graduation(world)                                 # GraduatePlan ... GraduateReport, GraduateRollback
    (leaked,) = world.key_statuses(leaked_user)
    event = copy.deepcopy(HEALTH)
    event["detail"]["affectedEntities"] = [{"entityValue": leaked}]
    runtime._dispatch_event("exposure", event)                 # Exposure → DeactivateCompromisedKey
    runtime.enable_audit()
    try:
        runtime.client("iam").create_access_key(UserName=ok)        # a hand-made key for the audit Lambda
        runtime.bus.drain()
        runtime._dispatch_event("credential_report", SCHEDULED)
        runtime._dispatch_event("scheduler", SCHEDULED)
    finally:
        runtime.disable_audit()
    emergency = runtime.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + execution_name(
        leaked_user, f"exposure-{leaked}")
    assert runtime.wait(emergency)["status"] == "SUCCEEDED"
    return {f: set(calls) for f, calls in runtime.aws_calls.items()}


def test_every_function_ran_with_its_own_identity(exercised: dict) -> None:
    assert set(policies.functions()) <= set(exercised), sorted(set(policies.functions()) - set(exercised))


def test_what_each_function_called_is_in_its_policy(exercised: dict) -> None:
    for function in policies.functions():
        granted = {a.lower() for a, _, _ in policies.grants(policies.load(function))}
        called = {a for a in exercised.get(function, set()) if a not in analysis.NO_PERMISSION_NEEDED}
        assert {a for a in called if a.lower() not in granted} == set(), function


def test_what_each_function_called_was_found_by_the_static_analysis(exercised: dict) -> None:
    """The analysis that checks the policies must not miss a call the code really makes."""
    reach = analysis.function_actions()
    for function in policies.functions():
        called = {a for a in exercised.get(function, set()) if a not in analysis.NO_PERMISSION_NEEDED}
        assert called - reach[function].actions == set(), function


def test_a_permission_missing_from_a_policy_fails_the_rotation(clean_world: World, runtime: LocalRuntime) -> None:
    """DrainCheck without iam:GetAccessKeyLastUsed: AccessDenied, the rotation stops, the alert says so."""
    iam = runtime.client("iam")
    role = runtime.function_name("drain_check")
    (attached,) = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    policy = function_policy("drain_check")
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != "iam:GetAccessKeyLastUsed"] or ["logs:PutLogEvents"]
    reduced = iam.create_policy(PolicyName=f"{role}-reduced", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
    iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
    iam.attach_role_policy(RoleName=role, PolicyArn=reduced)
    try:
        name = new_user_name("id")
        clean_world.add_user(name, [f"acme/{name}"])
        result = clean_world.rotate(name)
    finally:
        iam.detach_role_policy(RoleName=role, PolicyArn=reduced)
        iam.attach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
    assert result["status"] == "FAILED"
    alert = alerts_for(clean_world, name)[-1]
    assert alert["severity"] == "HIGH"
    assert "AccessDenied" in json.dumps(alert["message"]), alert["message"]
    assert "DeactivateOldKey" not in [e["stateEnteredEventDetails"]["name"] for e in runtime.history(
        result["executionArn"]) if e["type"].endswith("StateEntered")], "the old key was never touched"
