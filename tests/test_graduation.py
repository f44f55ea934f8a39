"""Graduation (issue 15): a target from the user's access key to OIDC federation, verified like a rotation,
reversible until its key is retired (statemachine/graduate.asl.json).

Every scenario runs the real definition on the embedded AWS with the GitHub emulator's real builds: the
shipped verification workflow is what proves (or fails to prove) the switch.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.deps import get_deps
from chalicelib.federation import ROLE_ARN_VARIABLE
from cli.__main__ import main as cli
from cli.errors import Exit
from local.world import World, target_id
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_lock_released

KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def rotated_user(world: World, repos: int = 1, **extra: Any) -> tuple[str, list[str]]:
    """A user whose key the rotator created (its secret is in the escrow): what graduation can restore."""
    user = new_user_name("grad")
    repositories = [f"acme/{user}-{i}" for i in range(repos)]
    world.add_user(user, repositories, **extra)
    assert world.rotate(user)["status"] == "SUCCEEDED"
    return user, repositories


def key_setup(world: World, user: str, repositories: list[str]) -> dict[str, Any]:
    """Everything "exactly as it was" covers: IAM keys, each CI's variables (digests: never the secret
    itself in an assertion message), the ledger's holdings and graduations, the role."""
    github = world.github

    def digest(value: str | None) -> str | None:
        return hashlib.sha256(value.encode()).hexdigest() if value is not None else None

    deps = get_deps()
    return {
        "keys": world.key_statuses(user),
        "variables": {repo: {name: digest(github.held_value(repo, name))
                             for name in (*KEY_VARIABLES, ROLE_ARN_VARIABLE)} for repo in repositories},
        "holdings": deps.ledger.holdings(user),
        "graduations": deps.ledger.graduations(user),
        "roles": _roles(world, user),
    }


def _roles(world: World, user: str) -> list[str]:
    roles = world.runtime.client("iam").list_roles(PathPrefix="/ci-key-rotator/graduated/")["Roles"]
    return sorted(r["RoleName"] for r in roles if r["RoleName"].startswith(user))


def start_graduation(world: World, payload: Any) -> dict[str, Any]:
    """As an operator would from the Step Functions console."""
    runtime = world.runtime
    sfn = runtime.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=runtime.graduate_state_machine_arn,
                              name=f"console-{secrets.token_hex(4)}", input=json.dumps(payload))["executionArn"]
    return runtime.wait(arn, 90)


def exercise_graduation(world: World) -> None:
    """One graduation that retires the user's key and one whose verification fails: every graduation function
    runs (used by tests/deploy/test_function_identities.py, which checks each function's calls against its
    policy)."""
    for fail in (False, True):
        user, repositories = rotated_user(world)
        if not fail:
            world.github.set_verify_variant(repositories[0], "oidc")
        result = start_graduation(world, {"user": user, "target": target_id(repositories[0])})
        assert result["status"] == ("FAILED" if fail else "SUCCEEDED")


def test_a_failed_oidc_verification_leaves_the_key_setup_exactly_as_it_was(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The repository still runs the key workflow: with the key variables gone its build fails closed, so
    the switch is not verified and everything goes back, the role this execution created included."""
    user, repositories = rotated_user(clean_world)
    before = key_setup(clean_world, user, repositories)
    capsys.readouterr()

    assert cli(["graduate", user, target_id(repositories[0]), "--wait", "--timeout", "90"]) == Exit.FAILED

    out = capsys.readouterr().out
    entered = [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]
    assert entered[:5] == ["GraduatePlan", "EnsureOidcProvider", "EnsureRole", "SwitchTarget", "VerifyBuild"]
    assert entered[-3:] == ["GraduateRollback", "GraduateAlert", "GraduateFailed"]
    assert key_setup(clean_world, user, repositories) == before
    assert clean_world.run_build(repositories[0]), "the pipeline builds with its key again"
    (alert,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduation-failed"]
    assert alert["severity"] == "HIGH" and alert["message"]["error"] == "VerificationFailed"
    assert alert["message"]["rollback"]["key_restored"] is True and alert["message"]["rollback"]["role_deleted"]
    assert_lock_released(user)
    # The next rotation still reaches the target: it holds a key again.
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"


def test_a_blocked_target_is_refused_with_the_reason_and_nothing_changes(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # A key made by hand and never rotated: the escrow could not restore it if graduation failed.
    user = new_user_name("grad")
    repo = f"acme/{user}"
    clean_world.add_user(user, [repo])
    before = key_setup(clean_world, user, [repo])
    capsys.readouterr()

    assert cli(["plan", user]) == 0
    assert f"graduation: {target_id(repo)} blocked" in (out := capsys.readouterr().out)
    assert "the escrow holds no secret" in out
    assert cli(["graduate", user, target_id(repo)]) == Exit.REFUSED
    assert "cannot graduate: the escrow holds no secret" in capsys.readouterr().err
    assert start_graduation(clean_world, {"user": user, "target": target_id(repo)})["status"] == "FAILED"
    (refusal,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduation-refused"]
    assert refusal["severity"] == "LOW" and refusal["message"]["error"] == "GraduationRefused"
    assert "rotate the user once first" in refusal["message"]["cause"]
    assert key_setup(clean_world, user, [repo]) == before
    assert get_deps().ledger.rotations(user) == [] and get_deps().ledger.lock_holder(user) is None

    # Input that is not the documented shape; a target the user does not have.
    assert start_graduation(clean_world, {"user": user, "targets": "x"})["status"] == "FAILED"
    assert start_graduation(clean_world, {"user": user, "target": "nope"})["status"] == "FAILED"
    errors = [(a["message"]["error"], a["severity"]) for a in alerts_for(clean_world, user)
              if a["message"]["kind"] == "graduation-refused"]
    assert errors[1:] == [("InvalidExecutionInput", "LOW"), ("GraduationRefused", "LOW")]
    assert key_setup(clean_world, user, [repo]) == before


def test_travis_issues_no_token_so_its_target_is_blocked_by_provider() -> None:
    from chalicelib.federation import Blocked, federation_for
    from chalicelib.targets.travis import TravisTargetConfig

    target = TravisTargetConfig.model_validate({"provider": "travis", "id": "t", "token": "ssm:/ci-key-rotator/x/t",
                                                "api_url": "http://127.0.0.1:1", "repository": "acme/app"})
    verdict = federation_for(target)
    assert isinstance(verdict, Blocked) and "issues no OIDC ID token" in verdict.reason


def _oidc_world_ready(world: World) -> bool:
    try:
        world.github.set_verify_variant  # noqa: B018 - the OIDC-capable emulator (local/oidc.py)
        import local.sts_web_identity  # noqa: F401
    except (AttributeError, ImportError):
        return False
    return True


def test_graduating_every_target_leaves_the_user_with_zero_keys_and_rotations_skip_graduated_targets(
        clean_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    if not _oidc_world_ready(clean_world):
        pytest.skip("the local OIDC issuers (local/oidc.py, local/sts_web_identity.py) are not there yet")
    user, repositories = rotated_user(clean_world, repos=2)
    first, second = repositories
    clean_world.github.set_verify_variant(first, "oidc")  # the repository committed the OIDC workflow
    capsys.readouterr()

    assert cli(["graduate", user, target_id(first), "--wait", "--timeout", "90"]) == 0
    assert f"{user} now holds 1 access key" in capsys.readouterr().out
    github = clean_world.github
    role_arn = github.held_value(first, ROLE_ARN_VARIABLE)
    assert role_arn and role_arn.startswith("arn:aws:iam::") and "/ci-key-rotator/graduated/" in role_arn
    assert [github.held_value(first, n) is None for n in KEY_VARIABLES] == [True, True]
    assert get_deps().ledger.graduations(user)[target_id(first)]["role_arn"] == role_arn
    (active,) = [k for k, s in clean_world.key_statuses(user).items() if s == "Active"]
    assert clean_world.held_key(second) == active, "the other target keeps the key"
    assert clean_world.run_build(first), "the graduated pipeline builds through OIDC"

    # A later rotation pushes to the remaining target only; the graduated one is left alone.
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    (rotated,) = [k for k, s in clean_world.key_statuses(user).items() if s == "Active"]
    assert rotated != active and clean_world.held_key(second) == rotated
    assert [github.held_value(first, n) is None for n in KEY_VARIABLES] == [True, True]
    assert github.held_value(first, ROLE_ARN_VARIABLE) == role_arn

    # The last target's graduation retires the key: deactivated, recovery window, deleted.
    clean_world.github.set_verify_variant(second, "oidc")
    assert cli(["graduate", user, "--wait", "--timeout", "90"]) == 0
    out = capsys.readouterr().out
    assert "DrainCheck" in out and "GraduateRetireKey" in out and "DeleteOldKey" in out
    assert f"{user} reached zero access keys" in out
    assert clean_world.key_statuses(user) == {}
    (last,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduated"
               and a["message"]["target_id"] == target_id(second)]
    assert last["message"]["zero_keys"] is True and "reached zero keys" in last["message"]["graduated"]
    assert_lock_released(user)

    # No more rotations: the scheduler skips the user, a manual start is refused (LOW, nothing made).
    from chalicelib import clock
    from chalicelib.scheduler import due_users

    assert user not in due_users(get_deps(), clock.now())
    assert clean_world.rotate(user)["status"] == "FAILED"
    assert clean_world.key_statuses(user) == {}
    (refused,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "rotation-refused"]
    assert refused["severity"] == "LOW" and refused["message"]["error"] == "UserGraduated"
    assert cli(["status", user]) == 0
    assert "graduated to OIDC: 2 of 2 targets; 0 access key(s) left (zero keys)" in capsys.readouterr().out


def test_each_step_is_idempotent(clean_world: World) -> None:
    """Every graduation task run twice on the same state ends where running it once does."""
    from chalicelib.workflow import (
        graduate_ensure_provider,
        graduate_ensure_role,
        graduate_plan,
        graduate_rollback,
        graduate_switch_target,
    )

    user, repositories = rotated_user(clean_world)
    before = key_setup(clean_world, user, repositories)
    deps, runtime = get_deps(), clean_world.runtime

    def twice(name: str, step: Any, event: dict[str, Any]) -> dict[str, Any]:
        with aws.acting_as(runtime.identity_of(name)):  # each under its own function's policy
            once = step.run(event, deps)
            assert step.run(event, deps) == once, name
        return dict(once)

    execution = f"arn:aws:states:us-east-1:123456789012:execution:x:{user}-grad-idem"
    wrapper = {"input": {"user": user, "target": target_id(repositories[0])},
               "execution_name": f"{user}-grad-idem", "execution_arn": execution}
    state = twice("graduate_plan", graduate_plan, wrapper)
    for name, step in (("graduate_ensure_provider", graduate_ensure_provider),
                       ("graduate_ensure_role", graduate_ensure_role),
                       ("graduate_switch_target", graduate_switch_target)):
        twice(name, step, state)
    iam = clean_world.runtime.client("iam")
    role = iam.get_role(RoleName=state["role_name"])["Role"]
    trust = role["AssumeRolePolicyDocument"]
    statement = trust["Statement"][0]
    assert statement["Principal"]["Federated"] == state["provider_arn"]
    assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == \
        f"repo:{repositories[0]}:ref:refs/heads/main"
    assert iam.get_role_policy(RoleName=state["role_name"], PolicyName="ci")["PolicyDocument"]
    assert clean_world.github.held_value(repositories[0], "AWS_ACCESS_KEY_ID") is None
    with aws.acting_as(runtime.identity_of("graduate_rollback")):
        first = graduate_rollback.run(state, deps)
        again = graduate_rollback.run(state, deps)
    assert first["rollback"]["role_deleted"] is True and first["rollback"]["key_restored"] is True
    assert again["rollback"]["key_restored"] is True and again["rollback"]["role_deleted"] is False
    with pytest.raises(ClientError):
        iam.get_role(RoleName=state["role_name"])
    assert key_setup(clean_world, user, repositories) == before
    assert deps.ledger.lock_holder(user) is None


def test_a_passed_build_that_did_not_authenticate_through_oidc_does_not_graduate(clean_world: World) -> None:
    """GraduateRecord's proof, on its own: GitHub reports what a build authenticated with (check-run
    annotations); a build that reports a key, no OIDC session or another role's session is refused, and the
    target is not recorded as graduated."""
    from chalicelib.workflow import graduate_plan, graduate_record
    from chalicelib.workflow.graduate_state import NotFederated

    user, repositories = rotated_user(clean_world)
    deps, runtime = get_deps(), clean_world.runtime
    tid = target_id(repositories[0])
    wrapper = {"input": {"user": user, "target": tid}, "execution_name": f"{user}-grad-proof",
               "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:x:{user}-grad-proof"}
    with aws.acting_as(runtime.identity_of("graduate_plan")):
        state = graduate_plan.run(wrapper, deps)
    gid, role = state["rotation_id"], state["role_name"]
    reports = [
        ({"used_key_sha256": "0123456789abcdef"}, "passed with an access key"),
        ({}, "without reporting an OIDC role session"),
        ({"used_role": "arn:aws:sts::123456789012:assumed-role/someone-else/s"}, "authenticated as"),
    ]
    try:
        for report, refusal in reports:
            deps.ledger.set_target(user, gid, tid, status="verified", verified=True, **report)
            with aws.acting_as(runtime.identity_of("graduate_record")), pytest.raises(NotFederated, match=refusal):
                graduate_record.run(state, deps)
            assert deps.ledger.graduations(user) == {}
            deps.ledger.set_target(user, gid, tid, used_key_sha256="", used_role="")
        deps.ledger.set_target(user, gid, tid, used_role=f"arn:aws:sts::123456789012:assumed-role/{role}/s")
        with aws.acting_as(runtime.identity_of("graduate_record")):
            assert graduate_record.run(state, deps)["retire"] is True
        assert deps.ledger.graduations(user)[tid]["role_arn"] == state["role_arn"]
    finally:
        deps.ledger.clear_graduation(user, tid)
        deps.ledger.set_holding(user, tid, state["key_id"], gid)
        deps.ledger.release_lock(user, gid)


def test_a_gitlab_project_graduates_through_its_own_issuer(clean_world: World) -> None:
    """GitLab: the issuer is the instance (gitlab.com), the audience the one the pipeline's id_tokens asks
    for, the sub pins project path and branch; its only target graduates and the key is gone."""
    if not _oidc_world_ready(clean_world):
        pytest.skip("the local OIDC issuers (local/oidc.py, local/sts_web_identity.py) are not there yet")
    user = new_user_name("grad")
    project = f"gitlab:acme/{user}"
    clean_world.add_user(user, [project])
    assert clean_world.rotate(user)["status"] == "SUCCEEDED"
    clean_world.emulator("gitlab").set_verify_variant(f"acme/{user}", "oidc")

    assert start_graduation(clean_world, {"user": user, "target": target_id(project)})["status"] == "SUCCEEDED"

    gitlab = clean_world.emulator("gitlab")
    role_arn = gitlab.held_value(f"acme/{user}", ROLE_ARN_VARIABLE)
    assert role_arn and "/ci-key-rotator/graduated/" in role_arn
    assert gitlab.held_value(f"acme/{user}", "AWS_ACCESS_KEY_ID") is None
    assert clean_world.key_statuses(user) == {}
    trust = clean_world.runtime.client("iam").get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]
    condition = trust["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    assert condition["gitlab.com:sub"] == f"project_path:acme/{user}:ref_type:branch:ref:main"
    assert clean_world.run_build(project)


def test_an_existing_oidc_provider_gains_the_audience_and_loses_nothing(clean_world: World) -> None:
    """EnsureOidcProvider on a provider that exists (other targets, other teams): the target's audience is
    added as a client id, once; nothing it had is removed."""
    from chalicelib.workflow import graduate_ensure_provider, graduate_plan

    user, repositories = rotated_user(clean_world)
    deps, runtime = get_deps(), clean_world.runtime
    wrapper = {"input": {"user": user, "target": target_id(repositories[0])},
               "execution_name": f"{user}-grad-aud",
               "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:x:{user}-grad-aud"}
    iam = runtime.client("iam")
    try:
        with aws.acting_as(runtime.identity_of("graduate_plan")):
            state = graduate_plan.run(wrapper, deps)
        with aws.acting_as(runtime.identity_of("graduate_ensure_provider")):
            graduate_ensure_provider.run(state, deps)  # creates it, or finds it (an earlier test's)
            before = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=state["provider_arn"])["ClientIDList"]
            extra = {**state, "audience": f"aud-{secrets.token_hex(4)}"}
            graduate_ensure_provider.run(extra, deps)
            graduate_ensure_provider.run(extra, deps)
        after = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=state["provider_arn"])["ClientIDList"]
        assert after == [*before, extra["audience"]]
    finally:
        deps.ledger.release_lock(user, "grad-aud")


def test_a_graduation_is_the_rotators_own_change_and_raises_no_audit_finding(clean_world: World) -> None:
    """Each role change of a graduation (created, permissions copied, emptied and deleted by the rollback) is
    made by a rotator function after it announced it: the audit (CloudTrail → EventBridge → audit Lambda) tells
    it from the same change to a graduated role by anyone else, which is HIGH."""
    runtime = clean_world.runtime
    user, repositories = rotated_user(clean_world)
    runtime.enable_audit()
    try:
        runtime.bus.drain()
        since = len(runtime.alerts())
        assert start_graduation(clean_world, {"user": user, "target": target_id(repositories[0])})["status"] == \
            "FAILED"  # the key workflow cannot pass without the key: rolled back, role deleted
        runtime.bus.drain()
    finally:
        runtime.disable_audit()
    calls = {e["detail"].get("eventName") for name, e in runtime.bus.delivered if name == "audit"
             and (e["detail"].get("requestParameters") or {}).get("roleName", "").startswith(user)}
    assert {"CreateRole", "PutRolePolicy", "DeleteRolePolicy", "DeleteRole"} <= calls, calls
    findings = [a for a in runtime.alerts()[since:] if user in a["message"].get("summary", "")
                and str(a["message"].get("detection", "")).startswith(("self-protection.", "persistence."))]
    assert findings == []
