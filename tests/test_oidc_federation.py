"""The local world federates for real (docs/oidc.md): each OIDC-capable CI emulator is an issuer, the local AWS
checks the ID token (issuer's IAM OIDC provider, signature against the issuer's JWKS, audience, expiry) and the
role's trust conditions on its claims, and an "oidc" project's build authenticates only that way."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.federation import GRADUATED_ROLE_PATH, ROLE_ARN_VARIABLE, Federation, federation_for
from chalicelib.targets.registry import provider as provider_class
from local import build_job, oidc, strict
from local.bin import verify_templates
from local.emulators._server import OidcUnsupported
from local.emulators.github import _annotations
from local.runtime import LocalRuntime
from local.sts_web_identity import conditions_hold, trust_admits
from local.world import World, split
from tests.conftest import new_user_name
from tests.emulator_fixtures import moto_auth

PROVIDERS = ["github", "gitlab", "circleci", "bitbucket"]
ROLE_POLICY = {"Version": "2012-10-17",
               "Statement": [{"Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*"}]}


# -- the trust policy's conditions (unit) ------------------------------------------------------------------

PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
CONTEXT = {"token.actions.githubusercontent.com:aud": ["sts.amazonaws.com"],
           "token.actions.githubusercontent.com:sub": ["repo:acme/web:ref:refs/heads/main"]}


def _trust(condition: dict[str, Any], *, principal: Any = None, effect: str = "Allow") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": effect, "Principal": principal or {"Federated": PROVIDER_ARN},
        "Action": "sts:AssumeRoleWithWebIdentity", "Condition": condition}]}


@pytest.mark.parametrize(("condition", "admitted"), [
    ({"StringEquals": {"token.actions.githubusercontent.com:sub": "repo:acme/web:ref:refs/heads/main"}}, True),
    ({"StringEquals": {"token.actions.githubusercontent.com:sub": "repo:acme/other:ref:refs/heads/main"}}, False),
    ({"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/web:*"}}, True),
    ({"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/we?:ref:refs/heads/main"}}, True),
    ({"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/we?:ref:refs/heads/mai"}}, False),
    # A key absent from the request context fails a positive operator, satisfies a negated one.
    ({"StringEquals": {"token.actions.githubusercontent.com:job_workflow_ref": "x"}}, False),
    ({"StringNotEquals": {"token.actions.githubusercontent.com:job_workflow_ref": "x"}}, True),
    ({"StringEqualsIfExists": {"token.actions.githubusercontent.com:job_workflow_ref": "x"}}, True),
    ({"StringNotEquals": {"token.actions.githubusercontent.com:sub": "repo:acme/web:ref:refs/heads/main"}}, False),
    ({"ForAnyValue:StringLike": {"token.actions.githubusercontent.com:aud": ["nope", "sts.*"]}}, True),
    ({"ForAllValues:StringEquals": {"token.actions.githubusercontent.com:aud": ["other"]}}, False),
    ({"Null": {"token.actions.githubusercontent.com:sub": "false"}}, True),
    # Condition key names ignore case; values do not.
    ({"StringEquals": {"Token.Actions.GithubUserContent.com:SUB": "repo:acme/web:ref:refs/heads/main"}}, True),
    ({"StringEquals": {"token.actions.githubusercontent.com:sub": "REPO:acme/web:ref:refs/heads/main"}}, False),
    # An operator the local AWS does not know fails closed.
    ({"NumericLessThan": {"token.actions.githubusercontent.com:sub": "1"}}, False),
])
def test_trust_conditions_on_token_claims(condition: dict[str, Any], admitted: bool) -> None:
    assert trust_admits(_trust(condition), PROVIDER_ARN, CONTEXT) is admitted


def test_trust_needs_the_providers_principal_and_the_action_and_a_deny_wins() -> None:
    ok = {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}}
    assert trust_admits(_trust(ok), PROVIDER_ARN, CONTEXT)
    other = {"Federated": "arn:aws:iam::123456789012:oidc-provider/gitlab.com"}
    assert not trust_admits(_trust(ok, principal=other), PROVIDER_ARN, CONTEXT)
    assert not trust_admits(_trust(ok, principal={"AWS": "arn:aws:iam::123456789012:root"}), PROVIDER_ARN, CONTEXT)
    wrong_action = _trust(ok)
    wrong_action["Statement"][0]["Action"] = "sts:AssumeRole"
    assert not trust_admits(wrong_action, PROVIDER_ARN, CONTEXT)
    deny = _trust(ok)
    deny["Statement"].append({**deny["Statement"][0], "Effect": "Deny",
                              "Condition": {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/*"}}})
    assert not trust_admits(deny, PROVIDER_ARN, CONTEXT)
    assert conditions_hold({"StringEquals": "not a mapping"}, CONTEXT) is None


# -- issuers (integration: a local HTTP server) ----------------------------------------------------------

def test_an_issuer_publishes_discovery_and_jwks_under_its_real_url_resolved_locally() -> None:
    import urllib3

    issuer = oidc.issuer("https://issuer.test.invalid/org/1", "/keys")
    discovery = json.loads(urllib3.request("GET", oidc.local_url(oidc.discovery_url(issuer.url)) or "").data)
    assert discovery["issuer"] == "https://issuer.test.invalid/org/1"
    assert discovery["jwks_uri"] == "https://issuer.test.invalid/org/1/keys"
    assert discovery["id_token_signing_alg_values_supported"] == ["RS256"]
    local_jwks = oidc.local_url(discovery["jwks_uri"])
    assert local_jwks is not None and local_jwks.startswith("http://127.0.0.1:")
    token = issuer.mint({"sub": "s", "aud": "a"})
    key = jwt.PyJWKClient(local_jwks).get_signing_key_from_jwt(token).key
    assert jwt.decode(token, key, algorithms=["RS256"], audience="a")["iss"] == issuer.url
    assert oidc.local_url("https://elsewhere.invalid/keys") is None  # nothing else is reachable
    assert oidc.issuer("https://issuer.test.invalid/org/1", "/keys") is issuer  # one key per issuer


# -- the local AWS (e2e: the embedded runtime, strict) -------------------------------------------------------

def _unsigned_sts(runtime: LocalRuntime) -> Any:
    return boto3.client("sts", endpoint_url=runtime.endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))


def _project(world: World, provider: str, *, initial_key: bool = True) -> tuple[str, str]:
    """A new CI user with one project on ``provider``; (world project, emulator project name)."""
    name = new_user_name(f"oi{provider[:3]}")
    project = f"acme/{name}" if provider == "github" else f"{provider}:acme/{name}"
    world.add_user(name, [project], initial_key=initial_key)
    return project, split(project)[1]


def _federation(world: World, project: str) -> Federation:
    provider, name = split(project)
    config = world.target_config(project)
    settings = world.emulator(provider).oidc_settings(name)
    if settings:
        config["oidc"] = settings
    target = provider_class(provider).config_model.model_validate(config)
    federation = federation_for(target)
    assert isinstance(federation, Federation), federation
    return federation


def _register(runtime: LocalRuntime, federation: Federation) -> str:
    """The IAM OIDC provider of the federation's issuer, with its audience; its ARN."""
    iam = runtime.client("iam")
    account = runtime.client("sts").get_caller_identity()["Account"]
    arn = federation.provider_arn(account)
    try:
        iam.create_open_id_connect_provider(Url=federation.issuer, ClientIDList=[federation.audience],
                                            ThumbprintList=["0" * 40])
    except iam.exceptions.EntityAlreadyExistsException:
        # An earlier test registered the issuer (moto has no AddClientIDToOpenIDConnectProvider).
        clients = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"]
        assert federation.audience in clients
    return arn


def _role(runtime: LocalRuntime, trust: dict[str, Any]) -> str:
    iam = runtime.client("iam")
    name = f"oidc-{uuid.uuid4().hex[:10]}"
    arn = iam.create_role(RoleName=name, Path=GRADUATED_ROLE_PATH,
                          AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="verify", PolicyDocument=json.dumps(ROLE_POLICY))
    return str(arn)


def _federated(world: World, runtime: LocalRuntime, provider: str) -> tuple[str, str, Federation, str]:
    project, name = _project(world, provider)
    federation = _federation(world, project)
    role_arn = _role(runtime, federation.trust_policy(_register(runtime, federation)))
    return project, name, federation, role_arn


def _assume(runtime: LocalRuntime, role_arn: str, token: str) -> dict[str, Any]:
    return dict(_unsigned_sts(runtime).assume_role_with_web_identity(
        RoleArn=role_arn, RoleSessionName="test-session", WebIdentityToken=token, DurationSeconds=900))


def _refusal(runtime: LocalRuntime, role_arn: str, token: str) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        _assume(runtime, role_arn, token)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_token_of_the_pipeline_assumes_its_role_and_acts_with_the_roles_policies(
        clean_world: World, runtime: LocalRuntime, provider: str) -> None:
    _, name, federation, role_arn = _federated(clean_world, runtime, provider)
    emulator = clean_world.emulator(provider)
    assert emulator.oidc_issuer(name) == federation.issuer  # the emulator's tokens are what federation expects
    token = emulator.mint_id_token(name, federation.audience)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == federation.issuer and claims["aud"] == federation.audience
    answer = _assume(runtime, role_arn, token)
    assert answer["SubjectFromWebIdentityToken"] == claims["sub"]
    credentials = answer["Credentials"]
    session = boto3.session.Session(aws_access_key_id=credentials["AccessKeyId"],
                                    aws_secret_access_key=credentials["SecretAccessKey"],
                                    aws_session_token=credentials["SessionToken"], region_name="us-east-1")
    caller = session.client("sts", endpoint_url=runtime.endpoint).get_caller_identity()["Arn"]
    assert re.fullmatch(rf"arn:aws:sts::\d{{12}}:assumed-role/{role_arn.rsplit('/', 1)[1]}/test-session", caller)
    # The strict authorizer holds the session to the role's permission policies (GetCallerIdentity only).
    with pytest.raises(ClientError) as denied:
        session.client("iam", endpoint_url=runtime.endpoint).list_users()
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_each_refusal_has_the_error_aws_gives(clean_world: World, runtime: LocalRuntime) -> None:
    _, name, federation, role_arn = _federated(clean_world, runtime, "github")
    github = clean_world.github
    _, other_name = _project(clean_world, "github")

    # Another repository's token: same issuer and audience, another sub.
    assert _refusal(runtime, role_arn, github.mint_id_token(other_name, federation.audience)) == (
        "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    # The default GitHub audience (https://github.com/<owner>) is not a client id of the provider.
    assert _refusal(runtime, role_arn, github.mint_id_token(name)) == ("InvalidIdentityToken", "Incorrect token audience")
    # Expired beyond IAM's five minutes of skew; within them it is still accepted.
    now = int(time.time())
    expired = github.mint_id_token(name, federation.audience, iat=now - 1000, nbf=now - 1000, exp=now - 400)
    code, message = _refusal(runtime, role_arn, expired)
    assert code == "ExpiredTokenException" and message.startswith("Token expired: current date/time ")
    _assume(runtime, role_arn, github.mint_id_token(name, federation.audience, iat=now - 600, nbf=now - 600,
                                                    exp=now - 60))
    # Signed by a key the issuer's JWKS does not hold (same kid): the signature does not verify.
    issuer = oidc.issuer(federation.issuer, oidc.GITHUB.jwks_path)
    claims = jwt.decode(github.mint_id_token(name, federation.audience), options={"verify_signature": False})
    forged = issuer.mint({k: v for k, v in claims.items() if k not in ("iss", "iat", "nbf", "exp", "jti")},
                         signing_key=rsa.generate_private_key(65537, 2048))
    assert _refusal(runtime, role_arn, forged)[0] == "InvalidIdentityToken"
    assert _refusal(runtime, role_arn, "not-a-jwt")[0] == "InvalidIdentityToken"
    # No IAM OIDC provider for the token's issuer.
    stranger = oidc.issuer("https://token.unregistered.invalid", "/jwks").mint({"sub": claims["sub"],
                                                                              "aud": federation.audience})
    assert _refusal(runtime, role_arn, stranger) == (
        "InvalidIdentityToken", "No OpenIDConnect provider found in your account for https://token.unregistered.invalid")
    # A trust whose principal is another provider, and a role that does not exist.
    account = runtime.client("sts").get_caller_identity()["Account"]
    elsewhere = _role(runtime, federation.trust_policy(f"arn:aws:iam::{account}:oidc-provider/gitlab.com"))
    good = github.mint_id_token(name, federation.audience)
    assert _refusal(runtime, elsewhere, good)[0] == "AccessDenied"
    assert _refusal(runtime, f"arn:aws:iam::{account}:role/no-such-role", good)[0] == "AccessDenied"
    assert _assume(runtime, role_arn, good)["AssumedRoleUser"]["Arn"].endswith("/test-session")


def test_the_refusals_come_from_the_local_patch_not_from_moto(clean_world: World, runtime: LocalRuntime) -> None:
    """With the patch switched off, moto hands the role to another repository's token (and to garbage)."""
    _, _, federation, role_arn = _federated(clean_world, runtime, "github")
    _, other_name = _project(clean_world, "github")
    other = clean_world.github.mint_id_token(other_name, federation.audience)
    assert _refusal(runtime, role_arn, other)[0] == "AccessDenied"
    # moto cannot serve the unsigned call with authentication on (it answers 500), so switch that off too.
    with strict.override(web_identity_tokens_validated=False), moto_auth(False):
        sts = _unsigned_sts(runtime)
        assert sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="unchecked",
                                                 WebIdentityToken=other)["Credentials"]["AccessKeyId"]
        assert sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="unchecked",
                                                 WebIdentityToken="garbage")["Credentials"]["AccessKeyId"]


def test_travis_has_no_issuer(clean_world: World) -> None:
    travis = clean_world.emulator("travis")
    assert travis.oidc_profile is None
    _, name = _project(clean_world, "travis")
    with pytest.raises(OidcUnsupported):
        travis.oidc_issuer(name)
    with pytest.raises(OidcUnsupported):
        travis.set_verify_variant(name, "oidc")


# -- builds of an "oidc" project --------------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_oidc_build_passes_only_through_its_role(clean_world: World, runtime: LocalRuntime, provider: str) -> None:
    project, name, federation, role_arn = _federated(clean_world, runtime, provider)
    emulator = clean_world.emulator(provider)
    emulator.set_verify_variant(name, "oidc")
    # The project still holds a working key (add_user pushed one): the OIDC file must not fall back to it.
    assert not clean_world.run_build(project)
    clean_world.target(project).set_variables({ROLE_ARN_VARIABLE: role_arn})
    assert clean_world.run_build(project)

    grant = oidc.grant(emulator.oidc_profile, emulator, name)
    variables = {ROLE_ARN_VARIABLE: role_arn, "ROTATION_NONCE": "n-7"}  # Bitbucket: a pipeline variable
    passed, _, log = build_job.run_template(provider, variables, _base_env(runtime), {"nonce": "n-7"}, 60,
                                            variant="oidc", grant=grant)
    assert passed, log
    role_name = role_arn.rsplit("/", 1)[1]
    caller = re.search(rf"verify: caller (arn:aws:sts::\d{{12}}:assumed-role/{role_name}/rotate-verify-n-7)\n", log)
    assert caller, log
    assert f"::notice title=rotate-verify::oidc role {caller.group(1)}\n" in log
    (note,) = [a for a in _annotations(log) if a["title"] == "rotate-verify"]
    assert note["message"] == f"oidc role {caller.group(1)}"
    assert grant.handed and not any(value in log for value in grant.handed)  # no token in the log
    assert "SessionToken" not in log and "ASIA" not in log  # no session credential either

    # A role that trusts another project of the same CI: the exchange is refused, the build fails.
    other_project, _ = _project(clean_world, provider)
    other_role = _role(runtime, _federation(clean_world, other_project).trust_policy(_register(runtime, federation)))
    clean_world.target(project).set_variables({ROLE_ARN_VARIABLE: other_role})
    assert not clean_world.run_build(project)
    emulator.set_verify_variant(name, "keys")
    assert clean_world.run_build(project)  # the key file still works for the key the project holds


def _base_env(runtime: LocalRuntime) -> dict[str, str]:
    import os

    return {"PATH": os.environ.get("PATH", os.defpath), "AWS_ENDPOINT_URL": runtime.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


def test_github_hands_a_token_only_to_a_job_with_id_token_write(
        clean_world: World, runtime: LocalRuntime, tmp_path: Path) -> None:
    _, name, _, role_arn = _federated(clean_world, runtime, "github")
    github = clean_world.github
    copy = tmp_path / "verify"
    shutil.copytree(verify_templates.TEMPLATE_DIR, copy)
    path = copy / verify_templates.file_for("github", "oidc")
    text = path.read_text()
    assert text.count("      id-token: write\n") == 1
    path.write_text(text.replace("      id-token: write\n", ""))
    assert verify_templates.load("github", {}, {"nonce": "n"}, copy, "oidc").steps[0].id_tokens == ()
    grant = oidc.grant(github.oidc_profile, github, name)
    passed, _, log = build_job.run_template("github", {ROLE_ARN_VARIABLE: role_arn}, _base_env(runtime),
                                            {"nonce": "n"}, 60, copy, variant="oidc", grant=grant)
    assert not passed and "the job needs permissions: id-token: write" in log
    # The request endpoint itself refuses a bearer it did not issue, and one whose job ended.
    import urllib3

    handed = oidc.github_request(lambda aud: "unused")
    oidc.revoke_github_request(handed["ACTIONS_ID_TOKEN_REQUEST_TOKEN"])
    answer = urllib3.request("GET", handed["ACTIONS_ID_TOKEN_REQUEST_URL"] + "&audience=sts.amazonaws.com",
                             headers={"Authorization": f"bearer {handed['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}"})
    assert answer.status == 401


def test_a_dispatched_github_run_reports_the_assumed_role_to_the_rotator(
        clean_world: World, runtime: LocalRuntime) -> None:
    """The annotation path the rotator reads (chalicelib/targets/github.py): dispatch, run, check-run notice."""
    project, name, _, role_arn = _federated(clean_world, runtime, "github")
    clean_world.github.set_verify_variant(name, "oidc")
    target = clean_world.target(project)
    target.set_variables({ROLE_ARN_VARIABLE: role_arn})
    run = target.trigger_verification("n-9")
    finished = clean_world.github.wait_for_run(run.run_id, 60)
    assert finished["conclusion"] == "success", finished["log"]
    status = target.run_status(run.run_id)
    assert status.used_role is not None and status.used_key_sha256 is None
    assert re.fullmatch(rf"arn:aws:sts::\d{{12}}:assumed-role/{role_arn.rsplit('/', 1)[1]}/rotate-verify-n-9",
                        status.used_role)
