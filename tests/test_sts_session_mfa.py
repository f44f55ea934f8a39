"""A GetSessionToken session minted without MFA is refused as AWS refuses it: no IAM call at all, no STS call but
AssumeRole and GetCallerIdentity (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html).
The containment probes therefore use SNS ListTopics, which such a session really can call and which the
containment's ``aws:TokenIssueTime`` Deny really stops (docs/strict-aws.md)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib import exposure
from chalicelib.deps import get_deps
from local import demo
from local.world import World
from tests.aws_calls import client_for, outcome
from tests.conftest import new_user_name
from tests.test_containment import _managed_user_with_key, _mint
from tests.test_exposure import health_event
from tests.test_sts_strict import _refused

#: Everything the probes below call, so that a refusal can only come from the kind of credentials.
USER_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
    "iam:GetUser", "iam:ListUsers", "sns:ListTopics", "sts:AssumeRole", "sts:GetFederationToken",
    "sts:GetAccessKeyInfo"], "Resource": "*"}]}
SESSION_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "sns:ListTopics", "Resource": "*"}]})


def _user(world: World) -> tuple[str, dict[str, str]]:
    user, key = _managed_user_with_key(world)
    world.runtime.client("iam").put_user_policy(UserName=user, PolicyName="probes",
                                                PolicyDocument=json.dumps(USER_POLICY))
    return user, key


def test_a_session_without_mfa_cannot_call_iam_whatever_the_users_policy_allows(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _user(clean_world)
    session = _mint(runtime, key)
    iam_by_key, iam_by_session = client_for(runtime, "iam", key), client_for(runtime, "iam", session)
    assert outcome(lambda: iam_by_key.get_user(UserName=user)) == "ok"
    assert outcome(lambda: iam_by_key.list_users()) == "ok"

    # What AWS answers (aws-sdk-js#460, aws-vault#15): the token is "invalid" to IAM, 403.
    assert _refused(lambda: iam_by_session.get_user(UserName=user)) == ("InvalidClientTokenId", 403)
    assert _refused(lambda: iam_by_session.list_users()) == ("InvalidClientTokenId", 403)
    # The same session outside IAM acts with the user's policies.
    assert outcome(lambda: client_for(runtime, "sns", session).list_topics()) == "ok"


def test_a_session_without_mfa_calls_no_sts_action_but_assume_role_and_get_caller_identity(
        clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _user(clean_world)
    session = _mint(runtime, key)
    sts_by_key, sts_by_session = client_for(runtime, "sts", key), client_for(runtime, "sts", session)

    assert _refused(lambda: sts_by_session.get_session_token()) == ("AccessDenied", 403)
    assert _refused(lambda: sts_by_session.get_federation_token(Name="ci-broker", Policy=SESSION_POLICY)) == (
        "AccessDenied", 403)
    assert _refused(lambda: sts_by_session.get_access_key_info(AccessKeyId=key["AccessKeyId"])) == (
        "AccessDenied", 403)
    # The user's own key may make each of those calls: the refusals are the session's.
    assert outcome(lambda: sts_by_key.get_federation_token(Name="ci-broker", Policy=SESSION_POLICY)) == "ok"
    assert outcome(lambda: sts_by_key.get_access_key_info(AccessKeyId=key["AccessKeyId"])) == "ok"

    user_arn = runtime.client("iam").get_user(UserName=user)["User"]["Arn"]
    assert sts_by_session.get_caller_identity()["Arn"] == user_arn
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": user_arn}}]}
    role = runtime.client("iam").create_role(RoleName=new_user_name("trusting"),
                                             AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    assumed = sts_by_session.assume_role(RoleArn=role, RoleSessionName="from-session")
    assert assumed["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert assumed["AssumedRoleUser"]["Arn"].endswith("/from-session")
    # AssumeRole is still decided by the user's policies.
    runtime.client("iam").delete_user_policy(UserName=user, PolicyName="probes")
    assert _refused(lambda: sts_by_session.assume_role(RoleArn=role, RoleSessionName="again")) == (
        "AccessDenied", 403)


def test_mfa_parameters_are_refused_as_not_emulated(clean_world: World) -> None:
    """No MFA device exists locally to check a code against; accepting the parameters unchecked would mint a
    session that may call IAM without a second factor."""
    runtime = clean_world.runtime
    _, key = _user(clean_world)
    sts = client_for(runtime, "sts", key)
    serial = "arn:aws:iam::123456789012:mfa/ci"
    for params in ({"SerialNumber": serial, "TokenCode": "123456"}, {"SerialNumber": serial},
                   {"TokenCode": "123456"}):
        assert _refused(lambda p=params: sts.get_session_token(**p)) == ("ValidationError", 400), params


def test_the_demos_attacker_session_outlives_the_deactivation_and_stops_at_containment(
        clean_world: World, user: str, capsys: Any) -> None:
    """The exposure scenario's attacker (local/demo.py), on the product's emergency rotation: the probe the
    report's ``session_works_after_deactivation``/``session_refused_after_containment`` come from."""
    (leaked,) = clean_world.key_statuses(user)
    name = f"exposure-{user}"
    demo._attacker(clean_world, leaked, name, user=user, repo=f"acme/{user}")

    (outcome,) = exposure.respond(get_deps(), health_event(leaked))

    assert clean_world.runtime.wait(outcome["execution_arn"])["status"] == "SUCCEEDED"
    probes = demo._SESSION_PROBES[name]
    assert probes["after_deactivation"] == "works", probes
    assert probes["after_containment"] == "refused (AccessDenied)", probes
    assert "SNS ListTopics" in capsys.readouterr().out
