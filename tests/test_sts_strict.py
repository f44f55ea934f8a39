"""The local STS refuses as AWS does (error code AND HTTP status), and GetFederationToken sessions behave as on
AWS: they act within the intersection of the IAM user's policies and the session policy, outlive the key that
minted them, and stop at the containment's ``aws:TokenIssueTime`` Deny on the user (docs/strict-aws.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import aws, clock
from chalicelib.deps import get_deps
from chalicelib.workflow import session_revocation
from local import iam_consistency, oidc, sim_clock, strict
from local.runtime import LocalRuntime
from local.world import World
from tests.aws_calls import client_for, outcome, sns_outcome
from tests.conftest import new_user_name
from tests.test_containment import _deactivate, _execution_of, _managed_user_with_key
from tests.test_exposure import health_event, states
from tests.test_oidc_federation import _assume, _federated, _project, _role, _unsigned_sts

#: The CI user's own permissions here: two read-only calls outside IAM and STS, and minting federation tokens.
USER_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["sns:ListTopics", "sns:ListSubscriptions", "sts:GetFederationToken"],
    "Resource": "*"}]}
#: Narrower than the user's in one action (ListSubscriptions), wider in another (ListPlatformApplications).
SESSION_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["sns:ListTopics", "sns:ListPlatformApplications"], "Resource": "*"}]}


def _refused(call: Callable[[], Any]) -> tuple[str, int]:
    """(error code, HTTP status) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def _user_with_policy(world: World) -> tuple[str, dict[str, str]]:
    user, key = _managed_user_with_key(world)
    world.runtime.client("iam").put_user_policy(UserName=user, PolicyName="federation",
                                                PolicyDocument=json.dumps(USER_POLICY))
    return user, key


def _federate(runtime: LocalRuntime, creds: dict[str, str], policy: dict[str, Any] | None = SESSION_POLICY,
              **kwargs: Any) -> dict[str, str]:
    if policy is not None:
        kwargs["Policy"] = json.dumps(policy)
    answer = client_for(runtime, "sts", creds).get_federation_token(Name=kwargs.pop("Name", "ci-broker"), **kwargs)
    return {k: answer["Credentials"][k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}


# -- AssumeRoleWithWebIdentity: each refusal with AWS's code and status ----------------------------------------


def _other_repository(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    _, other = _project(world, "github")
    return str(world.github.mint_id_token(other, federation.audience))


def _wrong_audience(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    return str(world.github.mint_id_token(name))  # GitHub's default audience is no client id of the provider


def _expired(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    now = int(time.time())
    return str(world.github.mint_id_token(name, federation.audience, iat=now - 1000, nbf=now - 1000, exp=now - 400))


def _forged(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    claims = jwt.decode(world.github.mint_id_token(name, federation.audience), options={"verify_signature": False})
    issuer = oidc.issuer(federation.issuer, oidc.GITHUB.jwks_path)
    return str(issuer.mint({k: v for k, v in claims.items() if k not in ("iss", "iat", "nbf", "exp", "jti")},
                           signing_key=rsa.generate_private_key(65537, 2048)))


def _not_a_jwt(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    return "not-a-jwt"


def _unregistered_issuer(world: World, runtime: LocalRuntime, name: str, federation: Any, role_arn: str) -> str:
    return str(oidc.issuer("https://token.unregistered.invalid", "/jwks").mint({"sub": "s", "aud": federation.audience}))


@pytest.mark.parametrize(("token_of", "expected"), [
    (_other_repository, ("AccessDenied", 403)),
    (_wrong_audience, ("InvalidIdentityToken", 400)),
    (_expired, ("ExpiredTokenException", 400)),
    (_forged, ("InvalidIdentityToken", 400)),
    (_not_a_jwt, ("InvalidIdentityToken", 400)),
    (_unregistered_issuer, ("InvalidIdentityToken", 400)),
], ids=lambda v: getattr(v, "__name__", "").lstrip("_") or None)
def test_each_web_identity_token_refusal_has_awss_code_and_status(
        clean_world: World, runtime: LocalRuntime, token_of: Callable[..., str], expected: tuple[str, int]) -> None:
    _, name, federation, role_arn = _federated(clean_world, runtime, "github")
    token = token_of(clean_world, runtime, name, federation, role_arn)
    assert _refused(lambda: _assume(runtime, role_arn, token)) == expected


def test_each_web_identity_request_refusal_has_awss_code_and_status(clean_world: World, runtime: LocalRuntime) -> None:
    _, name, federation, role_arn = _federated(clean_world, runtime, "github")
    token = clean_world.github.mint_id_token(name, federation.audience)
    account = runtime.client("sts").get_caller_identity()["Account"]
    sts = _unsigned_sts(runtime)
    # A role that does not exist, and one whose trust names another provider: AccessDenied, not NoSuchEntity.
    assert _refused(lambda: _assume(runtime, f"arn:aws:iam::{account}:role/no-such-role", token)) == (
        "AccessDenied", 403)
    elsewhere = _role(runtime, federation.trust_policy(f"arn:aws:iam::{account}:oidc-provider/gitlab.com"))
    assert _refused(lambda: _assume(runtime, elsewhere, token)) == ("AccessDenied", 403)
    # Parameters out of their constraints: ValidationError (400).
    assert _refused(lambda: sts.assume_role_with_web_identity(
        RoleArn=role_arn, RoleSessionName="bad name", WebIdentityToken=token)) == ("ValidationError", 400)
    assert _refused(lambda: sts.assume_role_with_web_identity(
        RoleArn=role_arn, RoleSessionName="ok", WebIdentityToken=token, DurationSeconds=3601)) == (
        "ValidationError", 400)
    assert _assume(runtime, role_arn, token)["AssumedRoleUser"]["Arn"].endswith("/test-session")


@pytest.mark.parametrize(("code", "status"), [
    # AssumeRoleWithWebIdentity's "Errors" (https://docs.aws.amazon.com/STS/latest/APIReference/
    # API_AssumeRoleWithWebIdentity.html#API_AssumeRoleWithWebIdentity_Errors), and the authorization refusal.
    ("ExpiredTokenException", 400), ("IDPCommunicationError", 400), ("IDPRejectedClaim", 403),
    ("InvalidIdentityToken", 400), ("MalformedPolicyDocument", 400), ("PackedPolicyTooLarge", 400),
    ("RegionDisabledException", 403), ("ValidationError", 400), ("AccessDenied", 403),
])
def test_an_sts_error_is_serialised_with_the_status_aws_documents(runtime: LocalRuntime, code: str,
                                                                   status: int) -> None:
    """The codes the local patches do not raise today (IDP*, Packed*, RegionDisabled) would still answer
    AWS's status: the serialiser takes it from STS's model, AccessDenied's from the local class."""
    from moto.core import serialize
    from moto.core.exceptions import ServiceException
    from moto.core.utils import get_service_model

    from local import sts_sessions

    # Defined here, not in moto's package: the serialiser looks the code up in STS's model only.
    error = sts_sessions.error(code, "m") if code == "AccessDenied" else type(code, (ServiceException,), {
        "code": code})("m")
    shape = serialize.get_error_model(error, get_service_model("sts"))
    default = serialize.QuerySerializer.DEFAULT_ERROR_RESPONSE_CODE  # a code the model lacks (ValidationError)
    assert shape.metadata["error"].get("httpStatusCode", default) == status


# -- GetSessionToken, GetFederationToken, AssumeRole: refusals of the local patches ---------------------------


def test_get_session_token_refusals_have_awss_code_and_status(clean_world: World) -> None:
    runtime = clean_world.runtime
    _, key = _user_with_policy(clean_world)
    session = client_for(runtime, "sts", key).get_session_token()["Credentials"]
    assert _refused(lambda: client_for(runtime, "sts", session).get_session_token()) == ("AccessDenied", 403)
    assert _refused(lambda: client_for(runtime, "sts", key).get_session_token(DurationSeconds=899)) == (
        "ValidationError", 400)
    # An expired session is ExpiredToken (403), not an unknown key.
    short = client_for(runtime, "sts", key).get_session_token(DurationSeconds=900)["Credentials"]
    assert sns_outcome(runtime, short) == "ok"
    sim_clock.advance(900)
    assert _refused(lambda: client_for(runtime, "sns", short).list_topics()) == ("ExpiredToken", 403)


def test_get_federation_token_refusals_have_awss_code_and_status(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _user_with_policy(clean_world)
    sts = client_for(runtime, "sts", key)
    policy = json.dumps(SESSION_POLICY)
    assert _refused(lambda: sts.get_federation_token(Name="x", Policy=policy)) == ("ValidationError", 400)
    assert _refused(lambda: sts.get_federation_token(Name="ci-broker", Policy="{not json")) == (
        "MalformedPolicyDocument", 400)
    assert _refused(lambda: sts.get_federation_token(Name="ci-broker", Policy=" " * 2049)) == ("ValidationError", 400)
    assert _refused(lambda: sts.get_federation_token(Name="ci-broker", Policy=policy, DurationSeconds=129_601)) == (
        "ValidationError", 400)
    assert _refused(lambda: sts.get_federation_token(
        Name="ci-broker", PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}])) == ("ValidationError", 400)
    # Only an IAM user's long-term key mints one: not a session, not a user without sts:GetFederationToken.
    for session in (client_for(runtime, "sts", key).get_session_token()["Credentials"], _federate(runtime, key)):
        assert _refused(lambda s=session: client_for(runtime, "sts", s).get_federation_token(
            Name="again", Policy=policy)) == ("AccessDenied", 403)
    runtime.client("iam").delete_user_policy(UserName=user, PolicyName="federation")
    assert _refused(lambda: sts.get_federation_token(Name="ci-broker", Policy=policy)) == ("AccessDenied", 403)


def test_assume_role_refused_by_the_roles_trust_is_access_denied_403(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _managed_user_with_key(clean_world)
    iam = runtime.client("iam")
    iam.put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    account = runtime.client("sts").get_caller_identity()["Account"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": f"arn:aws:iam::{account}:user/someone"}}]}
    role = iam.create_role(RoleName=new_user_name("untrusting"), AssumeRolePolicyDocument=json.dumps(trust))
    assert _refused(lambda: client_for(runtime, "sts", key).assume_role(
        RoleArn=role["Role"]["Arn"], RoleSessionName="session")) == ("AccessDenied", 403)


# -- GetFederationToken sessions ----------------------------------------------------------------------------


def test_a_federation_session_acts_within_the_intersection_of_user_and_session_policy(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _user_with_policy(clean_world)
    answer = client_for(runtime, "sts", key).get_federation_token(Name="ci-broker", Policy=json.dumps(SESSION_POLICY),
                                                               DurationSeconds=129_600)
    session = {k: answer["Credentials"][k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    account = runtime.client("sts").get_caller_identity()["Account"]
    assert session["AccessKeyId"].startswith("ASIA")
    assert answer["FederatedUser"] == {"FederatedUserId": f"{account}:ci-broker",
                                       "Arn": f"arn:aws:sts::{account}:federated-user/ci-broker"}
    lifetime = answer["Credentials"]["Expiration"] - datetime.now(UTC)
    assert timedelta(hours=35, minutes=59) < lifetime <= timedelta(hours=36)  # up to 36 h, as AWS allows
    identity = client_for(runtime, "sts", session).get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{account}:federated-user/ci-broker"

    assert sns_outcome(runtime, session) == "ok"  # both allow it
    # The user allows it, the session policy omits it: refused.
    assert outcome(lambda: client_for(runtime, "sns", session).list_subscriptions()) == "AccessDenied"
    assert outcome(lambda: client_for(runtime, "sns", key).list_subscriptions()) == "ok"
    # The session policy allows it, the user does not: a session policy cannot grant more than the user has.
    assert outcome(lambda: client_for(runtime, "sns", session).list_platform_applications()) == "AccessDenied"
    # No IAM and no STS but GetCallerIdentity with a federation session, whatever the policies say.
    assert outcome(lambda: client_for(runtime, "iam", session).get_user(UserName=user)) == "InvalidClientTokenId"
    assert outcome(lambda: client_for(runtime, "iam", key).get_user(UserName=user)) == "ok"

    # Without a session policy the session has no permissions at all.
    bare = _federate(runtime, key, policy=None)
    assert sns_outcome(runtime, bare) == "AccessDenied"
    assert client_for(runtime, "sts", bare).get_caller_identity()["Arn"].endswith(":federated-user/ci-broker")


def test_a_federation_session_expires_after_its_duration(clean_world: World) -> None:
    runtime = clean_world.runtime
    _, key = _user_with_policy(clean_world)
    session = _federate(runtime, key, DurationSeconds=900)
    assert sns_outcome(runtime, session) == "ok"
    sim_clock.advance(900)
    assert _refused(lambda: client_for(runtime, "sns", session).list_topics()) == ("ExpiredToken", 403)


def test_a_federation_session_outlives_its_deactivated_key_and_stops_at_the_token_issue_time_deny(
        clean_world: World) -> None:
    runtime = clean_world.runtime
    user, leaked = _user_with_policy(clean_world)
    session = _federate(runtime, leaked)
    assert sns_outcome(runtime, session) == "ok"

    _deactivate(clean_world, user, leaked["AccessKeyId"])
    assert sns_outcome(runtime, leaked) == "InvalidClientTokenId"
    assert sns_outcome(runtime, session) == "ok", "on AWS a federation session outlives the key that minted it"

    # The Deny goes on the IAM user: a federation session's permissions are bounded by the user's.
    cutoff = clock.iso(clock.now())
    runtime.client("iam").put_user_policy(UserName=user, PolicyName=session_revocation.POLICY_NAME,
                                          PolicyDocument=json.dumps(session_revocation.document(cutoff)))
    assert sns_outcome(runtime, session) == "AccessDenied"
    assert client_for(runtime, "sts", session).get_caller_identity()["Arn"].endswith(":federated-user/ci-broker")

    # A fresh key, and a federation session it mints after the cut-off, are untouched by the Deny.
    fresh = runtime.client("iam").create_access_key(UserName=user)["AccessKey"]
    iam_consistency.settle()
    fresh_creds = {"AccessKeyId": fresh["AccessKeyId"], "SecretAccessKey": fresh["SecretAccessKey"]}
    assert sns_outcome(runtime, fresh_creds) == "ok"
    assert sns_outcome(runtime, _federate(runtime, fresh_creds)) == "ok"


def test_the_strict_switches_are_what_keeps_and_cuts_a_federation_session(clean_world: World) -> None:
    runtime = clean_world.runtime
    user, leaked = _user_with_policy(clean_world)
    session = _federate(runtime, leaked)
    with strict.override(session_credentials_outlive_parent_key=False):
        _deactivate(clean_world, user, leaked["AccessKeyId"])
        assert sns_outcome(runtime, session) == "InvalidClientTokenId"
    assert sns_outcome(runtime, session) == "ok"
    # moto's own GetFederationToken answer: a fixed example key that belongs to no one, refused on every call.
    moto_answer = {"AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
                   "SessionToken": "AQoDYXdzEPT//////////wEXAMPLE"}
    assert sns_outcome(runtime, moto_answer) == "InvalidClientTokenId"


def test_the_product_revoke_sessions_step_cuts_off_a_federation_session(clean_world: World) -> None:
    """RevokeSessions, run with its own deployed identity, on a user whose leaked key minted a federation
    session: the Deny it writes on the user stops the session."""
    runtime = clean_world.runtime
    user, leaked = _user_with_policy(clean_world)
    session = _federate(runtime, leaked)
    _deactivate(clean_world, user, leaked["AccessKeyId"])
    deps, rid = get_deps(), f"exposure-{leaked['AccessKeyId']}-fed"
    deps.ledger.update_rotation(user, rid, compromised_deactivated_at=clock.iso(clock.now()))
    state = {"user": user, "rotation_id": rid, "emergency": True, "compromised_key_id": leaked["AccessKeyId"],
             "old_key_id": leaked["AccessKeyId"]}
    assert sns_outcome(runtime, session) == "ok"
    with aws.acting_as(runtime.identity_of("revoke_sessions")):
        session_revocation.revoke(state, deps)
    assert sns_outcome(runtime, session) == "AccessDenied"


def test_an_exposure_contains_a_federation_session_minted_with_the_leaked_key(audited: World) -> None:
    runtime = audited.runtime
    user, leaked = _managed_user_with_key(audited, repositories=[f"acme/{new_user_name('repo')}"])
    runtime.client("iam").put_user_policy(UserName=user, PolicyName="federation",
                                          PolicyDocument=json.dumps(USER_POLICY))
    session = _federate(runtime, leaked)
    runtime.bus.drain()
    seen: dict[str, str] = {}
    runtime.inject_fault("revoke_sessions", lambda _event: seen.setdefault("after_deactivation",
                                                                           sns_outcome(runtime, session)))
    runtime.inject_fault("verify_build", lambda _event: seen.setdefault("after_containment", sns_outcome(runtime, session)))

    assert runtime.emit(health_event(leaked["AccessKeyId"]))
    runtime.bus.drain()
    arn = _execution_of(runtime, user, f"exposure-{leaked['AccessKeyId']}")
    assert runtime.wait(arn)["status"] == "SUCCEEDED"
    assert seen == {"after_deactivation": "ok", "after_containment": "AccessDenied"}
    entered = states(audited, arn)
    assert entered.index("DeactivateCompromisedKey") < entered.index("RevokeSessions") < entered.index("VerifyBuilds")
    page = next(a for a in runtime.alerts() if a["message"].get("kind") == "exposed-key-contained"
                and a["message"].get("access_key_id") == leaked["AccessKeyId"])
    assert page["message"]["leaked_key_activity"]["sessions_minted"] == [session["AccessKeyId"]]
