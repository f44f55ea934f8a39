"""Containment on exposure: sessions minted from a leaked key outlive its deactivation (as on AWS) and are
revoked by the emergency rotation; the exposure page says what the key did (CloudTrail LookupEvents)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws, clock
from chalicelib.deps import get_deps
from chalicelib.errors import InterlockViolation
from chalicelib.targets.base import Credentials
from chalicelib.workflow import session_revocation
from chalicelib.workflow.state import execution_name
from deploy import policies
from local import iam_consistency, strict
from local.runtime import LocalRuntime
from local.world import World
from tests.aws_calls import client_for, sns_outcome
from tests.conftest import new_user_name
from tests.test_exposure import health_event, states

#: What the CI user may do itself here (besides GetCallerIdentity, which no Deny can stop): read itself, and list
#: SNS topics, the call the probes make: a GetSessionToken session without MFA cannot call IAM at all
#: (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html), whatever the Deny says.
SELF_READ = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["iam:GetUser", "sns:ListTopics"], "Resource": "*"}]}


def _managed_user_with_key(world: World, *, repositories: list[str] | None = None) -> tuple[str, dict[str, str]]:
    """A managed CI user whose key (with its secret) the test holds, as an attacker would after a leak."""
    name = new_user_name("leak")
    iam = world.runtime.client("iam")
    if repositories is None:
        iam.create_user(UserName=name, Path=world.runtime.names.managed_path)
    else:
        world.add_user(name, repositories, initial_key=False)
    iam.put_user_policy(UserName=name, PolicyName="self-read", PolicyDocument=json.dumps(SELF_READ))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    iam_consistency.settle()
    for project in repositories or []:
        world.target(project).push(Credentials(key["AccessKeyId"], key["SecretAccessKey"]))
    return name, {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def _mint(runtime: LocalRuntime, creds: dict[str, str]) -> dict[str, str]:
    minted = client_for(runtime, "sts", creds).get_session_token()["Credentials"]
    return {k: minted[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}


def _execution_of(runtime: LocalRuntime, user: str, rotation_id: str) -> str:
    arn = runtime.state_machine_arn.replace(":stateMachine:", ":execution:")
    return f"{arn}:{execution_name(user, rotation_id)}"


def _deactivate(world: World, user: str, key_id: str) -> None:
    world.runtime.client("iam").update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    iam_consistency.settle()  # past the revocation window: the key itself is refused from here on


# -- strict local mode: sessions as AWS honours them --------------------------------------------------------


def test_a_session_outlives_its_deactivated_key_and_stops_at_the_token_issue_time_deny(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, leaked = _managed_user_with_key(clean_world)
    session = _mint(runtime, leaked)
    assert session["AccessKeyId"].startswith("ASIA") and sns_outcome(runtime, session) == "ok"

    _deactivate(clean_world, user, leaked["AccessKeyId"])
    assert sns_outcome(runtime, leaked) == "InvalidClientTokenId"
    assert sns_outcome(runtime, session) == "ok", "on AWS a session outlives its parent key"

    cutoff = clock.iso(clock.now())
    runtime.client("iam").put_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME,
                                          PolicyDocument=json.dumps(session_revocation.document(cutoff)))
    assert sns_outcome(runtime, session) == "AccessDenied"

    # The Deny never reaches a long-term key (no aws:TokenIssueTime) nor a session minted after the cut-off.
    fresh = runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()
    fresh_creds = {"AccessKeyId": fresh["AccessKeyId"], "SecretAccessKey": fresh["SecretAccessKey"]}
    assert sns_outcome(runtime, fresh_creds) == "ok"
    assert sns_outcome(runtime, _mint(runtime, fresh_creds)) == "ok"


def test_the_strict_switches_are_what_enforces_it(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, leaked = _managed_user_with_key(clean_world)
    session = _mint(runtime, leaked)
    with strict.override(session_credentials_outlive_parent_key=False):
        _deactivate(clean_world, user, leaked["AccessKeyId"])
        assert sns_outcome(runtime, session) != "ok"
    assert sns_outcome(runtime, session) == "ok"

    fresh = runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()
    fresh_creds = {"AccessKeyId": fresh["AccessKeyId"], "SecretAccessKey": fresh["SecretAccessKey"]}
    runtime.client("iam").put_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME,
                                          PolicyDocument=json.dumps(session_revocation.document(clock.iso(clock.now()))))
    with strict.override(token_issue_time_condition=False):  # moto's own evaluation: the Deny hits everything
        assert sns_outcome(runtime, fresh_creds) == "AccessDenied"
    assert sns_outcome(runtime, fresh_creds) == "ok"


def test_get_session_token_is_refused_with_session_credentials_and_out_of_range_durations(
        clean_world: World) -> None:
    runtime = clean_world.runtime
    _, leaked = _managed_user_with_key(clean_world)
    session = _mint(runtime, leaked)
    with pytest.raises(ClientError) as refused:
        client_for(runtime, "sts", session).get_session_token()
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as too_long:
        client_for(runtime, "sts", leaked).get_session_token(DurationSeconds=129_601)
    assert too_long.value.response["Error"]["Code"] == "ValidationError"


def test_lookup_events_serves_the_recorded_calls_by_access_key_id(audited: World) -> None:
    runtime = audited.runtime
    user, leaked = _managed_user_with_key(audited)
    iam = client_for(runtime, "iam", leaked)
    for _ in range(3):
        iam.get_user(UserName=user)
    with pytest.raises(ClientError):
        iam.list_users()
    _mint(runtime, leaked)
    trail = runtime.client("cloudtrail")
    by_key = [{"AttributeKey": "AccessKeyId", "AttributeValue": leaked["AccessKeyId"]}]

    first = trail.lookup_events(LookupAttributes=by_key, MaxResults=2)
    rest = trail.lookup_events(LookupAttributes=by_key, MaxResults=50, NextToken=first["NextToken"])
    events = first["Events"] + rest["Events"]
    assert [e["EventName"] for e in events] == ["GetSessionToken", "ListUsers", "GetUser", "GetUser", "GetUser"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    assert records[1]["errorCode"] == "AccessDenied"
    assert records[0]["eventSource"] == "sts.amazonaws.com"
    assert records[0]["responseElements"]["credentials"]["accessKeyId"].startswith("ASIA")
    assert leaked["SecretAccessKey"] not in json.dumps(records)
    future = datetime.now(UTC) + timedelta(days=1)
    assert trail.lookup_events(LookupAttributes=by_key, StartTime=future)["Events"] == []
    with pytest.raises(ClientError):
        trail.lookup_events(LookupAttributes=by_key * 2)


# -- the product: RevokeSessions and LiftSessionRevocation in the emergency rotation ---------------------------


def test_an_exposure_revokes_the_leaked_keys_sessions_and_pages_with_what_the_key_did(audited: World) -> None:
    runtime = audited.runtime
    user, leaked = _managed_user_with_key(audited, repositories=[f"acme/{new_user_name('repo')}"])
    client_for(runtime, "iam", leaked).get_user(UserName=user)
    session = _mint(runtime, leaked)
    runtime.bus.drain()
    seen: dict[str, str] = {}
    # Probes between the states: after DeactivateCompromisedKey, and once RevokeSessions has run.
    runtime.inject_fault("revoke_sessions", lambda _event: seen.setdefault("after_deactivation",
                                                                           sns_outcome(runtime, session)))
    runtime.inject_fault("verify_build", lambda _event: seen.setdefault("after_containment",
                                                                        sns_outcome(runtime, session)))

    # Through the bus, so the exposure function runs with its own identity (and policy).
    assert runtime.emit(health_event(leaked["AccessKeyId"]))
    runtime.bus.drain()
    rid = f"exposure-{leaked['AccessKeyId']}"
    outcome = {"execution_arn": _execution_of(runtime, user, rid)}
    assert runtime.wait(outcome["execution_arn"])["status"] == "SUCCEEDED"

    assert seen == {"after_deactivation": "ok", "after_containment": "AccessDenied"}
    entered = states(audited, outcome["execution_arn"])
    assert entered.index("DeactivateCompromisedKey") < entered.index("RevokeSessions") < entered.index("VerifyBuilds")
    assert entered.index("Report") < entered.index("SessionRevocationWindow") < entered.index("LiftSessionRevocation")
    with pytest.raises(ClientError):  # lifted once every session minted before the cut-off has expired
        runtime.client("iam").get_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME)
    record = get_deps().ledger.rotation(user, rid) or {}
    assert record["sessions_revoked_before"] and record["session_revocation"] == "lifted"

    page = next(a for a in runtime.alerts() if a["message"].get("kind") == "exposed-key-contained"
                and a["message"].get("access_key_id") == leaked["AccessKeyId"])
    activity = page["message"]["leaked_key_activity"]
    assert page["severity"] == "CRITICAL" and "error" not in activity, activity
    assert activity["by_event"] == {"iam:GetUser": 1, "sts:GetSessionToken": 1}
    assert activity["sessions_minted"] == [session["AccessKeyId"]]
    assert any(f["action"] == "sts:GetSessionToken" and f["severity"] in ("HIGH", "CRITICAL")
               for f in activity["findings"])


def test_a_normal_rotation_neither_revokes_nor_lifts(clean_world: World, user: str) -> None:
    result = clean_world.rotate(user)
    entered = [e["stateEnteredEventDetails"]["name"] for e in clean_world.runtime.history(result["executionArn"])
               if e["type"].endswith("StateEntered")]
    assert result["status"] == "SUCCEEDED"
    assert not {"RevokeSessions", "SessionRevocationWindow", "LiftSessionRevocation"} & set(entered)


def test_lift_leaves_a_later_containment_alone_and_is_idempotent(clean_world: World) -> None:
    user, leaked = _managed_user_with_key(clean_world)
    deps, rid, iam = get_deps(), "exposure-test-lift", clean_world.runtime.client("iam")
    state = {"user": user, "rotation_id": rid, "emergency": True, "compromised_key_id": leaked["AccessKeyId"],
             "old_key_id": leaked["AccessKeyId"]}
    deps.ledger.update_rotation(user, rid, sessions_revoked_before="2026-01-01T00:00:00.000Z")
    later = clock.iso(clock.now())
    iam.put_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME,
                        PolicyDocument=json.dumps(session_revocation.document(later)))

    with aws.acting_as(clean_world.runtime.identity_of("lift_session_revocation")):  # its own policy
        session_revocation.lift(state, deps)
    assert (deps.ledger.rotation(user, rid) or {})["session_revocation"] == "superseded"
    assert iam.get_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME)

    deps.ledger.update_rotation(user, rid, sessions_revoked_before=later)
    with aws.acting_as(clean_world.runtime.identity_of("lift_session_revocation")):
        session_revocation.lift(state, deps)
        session_revocation.lift(state, deps)  # a retried step: the policy is gone already
    assert (deps.ledger.rotation(user, rid) or {})["session_revocation"] == "lifted"
    assert "ci-key-rotator-revoke-older-sessions" not in iam.list_user_policies(UserName=user)["PolicyNames"]


def test_revocation_steps_refuse_a_rotation_that_is_not_an_emergency(runtime: LocalRuntime) -> None:
    state = {"user": "ci-nobody", "rotation_id": "manual-1", "emergency": False}
    with pytest.raises(InterlockViolation):
        session_revocation.revoke(state, get_deps())
    with pytest.raises(InterlockViolation):
        session_revocation.lift(state, get_deps())


def test_only_the_revocation_functions_may_write_a_user_policy_and_only_on_managed_users() -> None:
    user_policy = {(f, a) for f, a in policies.FORBIDDEN_EXCEPTIONS if "User" in a}
    assert user_policy == {("revoke_sessions", "iam:PutUserPolicy"),
                           ("lift_session_revocation", "iam:DeleteUserPolicy")}
    # The others are graduation's (issue 15): roles under the graduated path only, never a user.
    assert all(f.startswith("graduate_") and "Role" in a for f, a in set(policies.FORBIDDEN_EXCEPTIONS) - user_policy)
    for function in policies.functions():
        grants = [(a, r) for a, r, _ in policies.grants(policies.load(function))
                  if policies.FORBIDDEN.match(a)]
        allowed = {a for f, a in policies.FORBIDDEN_EXCEPTIONS if f == function}
        assert {a for a, _ in grants} <= allowed, function
        assert all(r == ("arn:aws:iam::*:user/ci/prod/*" if "User" in a else policies.GRADUATED_ROLE_PATTERN)
                   for a, r in grants), function  # the prod rendering
