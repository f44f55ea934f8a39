"""Graduation (issue 15) end to end for every provider that can federate, not only GitHub and GitLab
(tests/test_graduation.py): the real statemachine/graduate.asl.json on the embedded AWS, the provider's own
emulator and its real verification build, which runs the shipped OIDC file (templates/verify/<provider>/oidc/)
and trades the CI's ID token for the role's session with the local STS (local/sts_web_identity.py).

Which providers: every registered one whose target, as an operator configures it (with the ``oidc:`` block of
ids its CI's tokens name), ``federation_for`` lets graduate. A new provider that federates is covered here
without a change to this file; one that cannot is refused (tests/test_graduation.py, Travis CI).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

import boto3
import jwt
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.deps import get_deps
from chalicelib.federation import GRADUATED_ROLE_PATH, ROLE_ARN_VARIABLE, Federation, federation_for
from chalicelib.targets.registry import provider as provider_class
from chalicelib.targets.registry import providers
from local.emulators._server import OidcUnsupported
from local.emulators.base import emulators
from local.world import World, split, target_id
from tests.conftest import new_user_name
from tests.invariants import alerts_for, assert_lock_released

KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

#: The ``sub`` each provider documents for one project's builds, with the per-build part the trust leaves open
#: (docs/oidc.md cites the providers' pages). A provider that federates but is not listed fails the test: its
#: format must be checked against its own documentation, not against what federation.py happens to build.
DOCUMENTED_SUB = {
    # https://docs.github.com/en/actions/reference/security/oidc
    "github": ("StringEquals", r"repo:(?P<project>[\w.-]+/[\w.-]+):ref:refs/heads/main"),
    # https://docs.gitlab.com/ci/secrets/id_token_authentication/
    "gitlab": ("StringEquals", r"project_path:(?P<project>[\w.-]+/[\w.-]+):ref_type:branch:ref:main"),
    # https://circleci.com/docs/openid-connect-tokens/ : org/<org-id>/project/<project-id>/user/<user-id>
    "circleci": ("StringLike", r"org/(?P<organization_id>[0-9a-f-]{36})/project/(?P<project_id>[0-9a-f-]{36})/user/\*"),
    # https://support.atlassian.com/bitbucket-cloud/docs/integrate-pipelines-with-resource-servers-using-oidc/
    # : {<repository-uuid>}:{<step-uuid>}
    "bitbucket": ("StringLike", r"(?P<repository_uuid>\{[0-9a-f-]{36}\}):\*"),
}


def _graduable_providers() -> list[str]:
    """Every registered provider whose typical target federates: one throwaway emulator project each, its
    target config as the local world writes it plus the ``oidc:`` block its emulator's tokens need."""
    graduable = []
    for name in sorted(providers()):
        server = emulators()[name](token="t", aws_endpoint_url="http://127.0.0.1:9", webhook_url=None,
                                   webhook_secret="w").start()
        try:
            server.add_project("acme/typical")
            config = {"id": "typical", **server.target_config("acme/typical", "secretsmanager:x")}
            try:
                settings = server.oidc_settings("acme/typical")
            except OidcUnsupported:
                settings = {}
            if settings:
                config["oidc"] = settings
        finally:
            server.stop()
        if isinstance(federation_for(provider_class(name).config_model.model_validate(config)), Federation):
            graduable.append(name)
    return graduable


GRADUABLE = _graduable_providers()


def test_the_providers_that_federate_include_circleci_and_bitbucket() -> None:
    """The derived list is not empty by accident (an emulator or config change that blocks a provider)."""
    assert {"github", "gitlab", "circleci", "bitbucket"} <= set(GRADUABLE)
    assert "travis" not in GRADUABLE


# -- helpers ------------------------------------------------------------------------------------------


def _project(world: World, provider: str, *, timings: dict[str, str] | None = None) -> tuple[str, str, str]:
    """A user whose key the rotator created (escrowed: what a failed graduation restores), with one target on
    ``provider`` whose config carries its ``oidc:`` block; (user, world project, emulator project)."""
    user = new_user_name(f"gp{provider[:3]}")
    name = f"acme/{user}"
    project = name if provider == "github" else f"{provider}:{name}"
    world.add_user(user, [project], timings=timings)
    world.configure_oidc(project)
    assert world.rotate(user)["status"] == "SUCCEEDED"
    return user, project, name


def _federation(world: World, project: str) -> Federation:
    provider, _ = split(project)
    config = provider_class(provider).config_model.model_validate(world.target_config(project))
    federation = federation_for(config)
    assert isinstance(federation, Federation), federation
    return federation


def _digest(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


def _key_setup(world: World, user: str, project: str) -> dict[str, Any]:
    """Everything "exactly as it was" covers: IAM keys, the CI's variables (digests, never a secret in an
    assertion message; Bitbucket's secured flags too), the ledger's holdings and graduations, the roles."""
    provider, name = split(project)
    emulator = world.emulator(provider)
    deps = get_deps()
    setup: dict[str, Any] = {
        "keys": world.key_statuses(user),
        "variables": {n: _digest(emulator.held_value(name, n)) for n in (*KEY_VARIABLES, ROLE_ARN_VARIABLE)},
        "holdings": deps.ledger.holdings(user),
        "graduations": deps.ledger.graduations(user),
        "roles": sorted(r["RoleName"] for r in world.runtime.client("iam").list_roles(
            PathPrefix=GRADUATED_ROLE_PATH)["Roles"] if r["RoleName"].startswith(user)),
    }
    listing = getattr(emulator, "variables", None)
    if callable(listing):  # Bitbucket: whether each variable is secured (masked, never shown by the API)
        setup["secured"] = sorted((v["key"], v["secured"]) for v in listing(name))
    return setup


def _graduate(world: World, user: str, project: str) -> tuple[dict[str, Any], list[str]]:
    """As an operator would from the Step Functions console; (the execution, the states it entered)."""
    runtime = world.runtime
    arn = runtime.client("stepfunctions").start_execution(
        stateMachineArn=runtime.graduate_state_machine_arn, name=f"console-{secrets.token_hex(4)}",
        input=json.dumps({"user": user, "target": target_id(project)}))["executionArn"]
    result = runtime.wait(arn, 120)
    entered = [e["stateEnteredEventDetails"]["name"] for e in runtime.history(arn) if "stateEnteredEventDetails" in e]
    return result, entered


def _build_logs(world: World, project: str) -> list[str]:
    """The masked logs of every build of ``project`` the emulator ran through its API, oldest first."""
    provider, name = split(project)
    emulator: Any = world.emulator(provider)
    records = emulator.runs(name) if provider == "github" else emulator.pipelines(name)
    logs = []
    for record in records:
        logs.extend(w["log"] for w in record.get("workflows", []))  # CircleCI: one log per workflow
        if "log" in record:
            logs.append(record["log"])
    return logs


def _assume(world: World, role_arn: str, token: str) -> dict[str, Any]:
    sts = boto3.client("sts", endpoint_url=world.runtime.endpoint, region_name="us-east-1",
                       config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))
    return dict(sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="trust-check",
                                                  WebIdentityToken=token,
                                                  DurationSeconds=900))


# -- the graduation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", GRADUABLE)
def test_a_users_only_target_graduates_and_the_user_holds_zero_keys(clean_world: World, provider: str) -> None:
    user, project, name = _project(clean_world, provider, timings={"recovery_window": "2h"})
    emulator = clean_world.emulator(provider)
    (key_id,) = clean_world.key_statuses(user)
    federation = _federation(clean_world, project)
    emulator.set_verify_variant(name, "oidc")  # the repository committed the OIDC verification file
    builds_before = len(_build_logs(clean_world, project))

    result, entered = _graduate(clean_world, user, project)

    assert result["status"] == "SUCCEEDED", entered
    # The trust admits this project's builds only: the provider's issuer, audience and documented sub.
    role_arn = emulator.held_value(name, ROLE_ARN_VARIABLE)
    assert role_arn and role_arn.startswith("arn:aws:iam::") and GRADUATED_ROLE_PATH in role_arn
    iam = clean_world.runtime.client("iam")
    role = iam.get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{federation.condition_prefix}")
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]
    assert conditions["StringEquals"][f"{federation.condition_prefix}:aud"] == federation.audience
    operator, documented = DOCUMENTED_SUB[provider]
    sub = conditions[operator][f"{federation.condition_prefix}:sub"]
    pinned = re.fullmatch(documented, sub)
    assert pinned is not None, sub
    ids = {"project": name, **emulator.oidc_settings(name)}  # this project's, as its CI shows them
    assert {field: ids[field] for field in pinned.groupdict()} == pinned.groupdict()
    own = jwt.decode(emulator.mint_id_token(name, federation.audience), options={"verify_signature": False})
    assert own["iss"] == federation.issuer and fnmatch.fnmatchcase(own["sub"], sub)
    # The CI holds the role ARN and no key variable.
    assert [emulator.held_value(name, n) for n in KEY_VARIABLES] == [None, None]
    assert get_deps().ledger.graduations(user)[target_id(project)]["role_arn"] == role_arn
    # The verification build authenticated through OIDC, as the role (its own report in the log).
    logs = _build_logs(clean_world, project)[builds_before:]
    assert logs, "the graduation ran a verification build through the CI's API"
    session = rf"oidc role arn:aws:sts::\d{{12}}:assumed-role/{re.escape(role['RoleName'])}/rotate-verify-"
    assert re.search(session, logs[-1]), logs[-1]
    # The key: deactivated, kept through the recovery window, then deleted; the user holds none.
    order = ["GraduateRecord", "DrainCheck", "GraduateRetireKey", "RecoveryWindow", "DeleteOldKey", "GraduateReport"]
    assert [s for s in entered if s in order] == order, entered
    record = get_deps().ledger.key(user, key_id) or {}
    assert record.get("status") == "deleted" and record.get("retired_at") and record.get("recovery_until")
    assert clean_world.key_statuses(user) == {}
    (done,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduated"]
    assert done["message"]["zero_keys"] is True
    assert_lock_released(user)
    # The pipeline keeps building through OIDC with no key anywhere.
    assert clean_world.run_build(project)


@pytest.mark.parametrize("failure", ["build-fails", "key-file-still-in-place"])
@pytest.mark.parametrize("provider", GRADUABLE)
def test_a_failed_oidc_verification_leaves_the_key_setup_exactly_as_it_was(
        clean_world: World, provider: str, failure: str) -> None:
    user, project, name = _project(clean_world, provider)
    emulator = clean_world.emulator(provider)
    if failure == "build-fails":
        emulator.set_verify_variant(name, "oidc")
        emulator.fail_next_builds(name)
    # else: the repository still runs the key file, whose build cannot pass once the key variables are gone.
    before = _key_setup(clean_world, user, project)
    assert before["variables"][ROLE_ARN_VARIABLE] is None and None not in [before["variables"][n]
                                                                            for n in KEY_VARIABLES]

    result, entered = _graduate(clean_world, user, project)

    assert result["status"] == "FAILED"
    assert entered[:5] == ["GraduatePlan", "EnsureOidcProvider", "EnsureRole", "SwitchTarget", "VerifyBuild"]
    assert entered[-3:] == ["GraduateRollback", "GraduateAlert", "GraduateFailed"], entered
    assert _key_setup(clean_world, user, project) == before
    (alert,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduation-failed"]
    assert alert["message"]["rollback"]["key_restored"] is True and alert["message"]["rollback"]["role_deleted"]
    assert_lock_released(user)
    emulator.set_verify_variant(name, "keys")
    assert clean_world.run_build(project), "the pipeline builds with its key again"


@pytest.mark.parametrize("provider", GRADUABLE)
def test_a_token_of_another_project_of_the_same_ci_is_refused_by_the_roles_trust(
        clean_world: World, provider: str) -> None:
    user, project, name = _project(clean_world, provider)
    emulator = clean_world.emulator(provider)
    federation = _federation(clean_world, project)
    emulator.set_verify_variant(name, "oidc")
    assert _graduate(clean_world, user, project)[0]["status"] == "SUCCEEDED"
    role_arn = emulator.held_value(name, ROLE_ARN_VARIABLE)
    assert role_arn

    # Another project in the same organization/workspace: same issuer, same audience, another sub.
    other = f"acme/{new_user_name(f'gpx{provider[:3]}')}"
    emulator.add_project(other)
    stranger = emulator.mint_id_token(other, federation.audience)
    claims = jwt.decode(stranger, options={"verify_signature": False})
    assert claims["iss"] == federation.issuer and claims["aud"] == federation.audience
    with pytest.raises(ClientError) as refused:
        _assume(clean_world, role_arn, stranger)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert _assume(clean_world, role_arn, emulator.mint_id_token(name, federation.audience))["Credentials"]


# -- a build that passed with a key from elsewhere ----------------------------------------------------------


def _share_key_in_workspace(world: World, project: str) -> Callable[[], None]:
    """Bitbucket: the same key pair also in a workspace variable (shared by the workspace's repositories), as
    an operator would set it by hand; the repository's own variables shadow it until graduation removes them.
    Returns what removes the copy again (every repository of the session's workspace would inherit it)."""
    from chalicelib.targets.base import Credentials

    _, name = split(project)
    emulator = world.emulator("bitbucket")
    config = {k: v for k, v in world.target_config(project).items() if k != "oidc"}
    cls = provider_class("bitbucket")
    shared = cls(cls.config_model.model_validate({**config, "id": "workspace-copy", "scope": "workspace"}),
                 world._tokens["bitbucket"])
    shared.push(Credentials(*(str(emulator.held_value(name, n)) for n in KEY_VARIABLES)))
    return lambda: shared.delete_variables(KEY_VARIABLES)


def _share_key_in_context(world: World, project: str) -> None:
    """CircleCI: the same key pair also in a context only this project's workflows use (``used_by``)."""
    from chalicelib.targets.base import Credentials

    _, name = split(project)
    emulator: Any = world.emulator("circleci")
    context_id = emulator.add_context(f"shared-{name.replace('/', '-')}", used_by=[name])
    config = {k: v for k, v in world.target_config(project).items() if k != "oidc"}
    cls = provider_class("circleci")
    shared = cls(cls.config_model.model_validate({**config, "id": "context-copy", "scope": "context",
                                                  "context_id": context_id}), world._tokens["circleci"])
    shared.push(Credentials(*(str(emulator.held_value(name, n)) for n in KEY_VARIABLES)))


def _share_key_in_group(world: World, project: str) -> Callable[[], None]:
    """GitLab: the same key pair also in a CI/CD variable of the project's group "acme" (inherited by every
    project under it); the project's own variables take precedence until graduation removes them
    (https://docs.gitlab.com/ci/variables/#cicd-variable-precedence). Returns what removes the copy again."""
    from chalicelib.targets.base import Credentials

    _, name = split(project)
    emulator: Any = world.emulator("gitlab")
    group = name.split("/")[0]
    try:
        emulator.variable_flags(group, "AWS_ACCESS_KEY_ID")
    except KeyError:
        emulator.add_group(group)
    config = {k: v for k, v in world.target_config(project).items() if k != "oidc"}
    cls = provider_class("gitlab")
    shared = cls(cls.config_model.model_validate({**config, "id": "group-copy", "scope": "group", "group": group}),
                 world._tokens["gitlab"])
    shared.push(Credentials(*(str(emulator.held_value(name, n)) for n in KEY_VARIABLES)))
    return lambda: shared.delete_variables(KEY_VARIABLES)


#: How the key can reach a project's builds from a place its target does not manage, per provider.
SHARED_KEY = [
    pytest.param("bitbucket", _share_key_in_workspace, id="bitbucket"),
    pytest.param("gitlab", _share_key_in_group, id="gitlab"),
    pytest.param("circleci", _share_key_in_context, id="circleci"),
]


@pytest.mark.parametrize(("provider", "share"), SHARED_KEY)
def test_a_build_that_passed_with_a_key_from_elsewhere_does_not_graduate(
        clean_world: World, provider: str, share: Any) -> None:
    """The repository still runs the key file and a variable its target does not manage holds the same key:
    with the target's key variables gone the build still passes, with the key. Retiring the key would break the
    pipeline, so the switch is not verified and everything goes back."""
    user, project, _ = _project(clean_world, provider)
    undo = share(clean_world, project)
    try:
        before = _key_setup(clean_world, user, project)

        result, entered = _graduate(clean_world, user, project)

        assert result["status"] == "FAILED", entered
        assert "GraduateRetireKey" not in entered and entered[-3:] == ["GraduateRollback", "GraduateAlert",
                                                                       "GraduateFailed"]
        (alert,) = [a for a in alerts_for(clean_world, user) if a["message"]["kind"] == "graduation-failed"]
        assert alert["message"]["error"] == "NotFederated", alert["message"]
        assert _key_setup(clean_world, user, project) == before
        assert clean_world.run_build(project)
    finally:
        if callable(undo):  # a copy other projects of the shared world would inherit
            undo()


def test_bitbucket_reads_the_step_log_where_bitbucket_redirects_to_it_without_its_credentials() -> None:
    """Bitbucket may answer a step log request with a redirect to where the log is stored: the target follows it
    once, without the API token, and only to https or the API's own origin."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from chalicelib.targets.bitbucket import BitbucketTarget, BitbucketTargetConfig

    step = "{6f9c1a2b-1111-2222-3333-444455556666}"
    role = "arn:aws:sts::123456789012:assumed-role/ci-app/rotate-verify-n-1"
    seen: list[tuple[str, str | None]] = []
    elsewhere = {"to": ""}

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.endswith("/steps/"):
                self._send(200, json.dumps({"values": [{"type": "pipeline_step", "uuid": step}]}).encode())
            elif self.path.endswith("/log"):
                self.send_response(307)
                self.send_header("Location", elsewhere["to"] or f"http://127.0.0.1:{port}/storage/log?sig=x")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, f"verify: caller {role}\n::notice title=rotate-verify::oidc role {role}\n".encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = BitbucketTargetConfig.model_validate({
            "provider": "bitbucket", "id": "bb", "token": "secretsmanager:x", "api_url": f"http://127.0.0.1:{port}/2.0",
            "workspace": "acme", "repository": "app"})
        target = BitbucketTarget(config, "bitbucket-api-token", timeout=5)
        assert target._used_identity("{11d87b82-13c6-47a3-8e28-73a2bc378675}") == (None, role)
        assert [path.split("?")[0].rsplit("/", 1)[-1] for path, _ in seen] == ["", "log", "log"]
        assert seen[-1][1] is None and seen[0][1] == "Bearer bitbucket-api-token"
        # A redirect to a plain-http host that is not the API's: not followed, nothing reported.
        elsewhere["to"] = "http://storage.invalid/log"
        assert target._used_identity("{11d87b82-13c6-47a3-8e28-73a2bc378675}") == (None, None)
    finally:
        server.shutdown()
