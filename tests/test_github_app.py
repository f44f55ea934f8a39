"""The GitHub target authenticated as a GitHub App, against the local GitHub's App endpoints over real HTTP.

JWTs are signed with a real RSA key and verified by the emulator with the App's public key; token expiry is
driven by one fake clock shared by the client and the emulator (no sleeps). The end-to-end test runs a whole
rotation in the embedded runtime with the App's private key in (moto's) Secrets Manager.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
import urllib3
from cryptography.hazmat.primitives import serialization

from chalicelib.config import parse_config
from chalicelib.errors import ConfigError, TargetPushFailed, VerificationTriggerFailed
from chalicelib.targets import github_app
from chalicelib.targets.base import RunState
from chalicelib.targets.github import GitHubTarget, GitHubTargetConfig
from chalicelib.targets.github_app import app_jwt, load_private_key
from local.emulators.github import GitHubEmulator
from local.world import World
from tests.conftest import new_user_name
from tests.emulator_fixtures import Receiver, moto_with_ci_user, receiving
from tests.invariants import assert_no_pipeline_holds_a_dead_key, assert_one_active_key_everywhere
from tests.leak_scan import corpus, known_secrets, leaks

TOKEN = "ghp_patThatTheAppTestsNeverUse000000001"
REPO = "acme/app"
APP_ID = 31337

pytestmark = pytest.mark.timeout(90)


class FakeClock:
    """Epoch seconds that move only when told: the client's and the emulator's clock."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    with moto_with_ci_user("ci-app") as env:
        yield env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/webhooks/github", timeout=10) as r:
        yield r


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github(aws: SimpleNamespace, receiver: Receiver, clock: FakeClock) -> Iterator[GitHubEmulator]:
    github_app.clear_caches()  # tokens are cached per process, as in a warm Lambda
    emulator = GitHubEmulator(token=TOKEN, aws_endpoint_url=aws.endpoint, webhook_url=receiver.url,
                              webhook_secret="hook-secret", build_timeout=20)
    emulator.apps.clock = clock
    with emulator:
        emulator.add_organization("acme")
        emulator.add_repository(REPO)
        emulator.add_repository("acme/other")
        emulator.add_repository("umbrella/elsewhere")
        yield emulator
    github_app.clear_caches()


@pytest.fixture
def pem(github: GitHubEmulator) -> str:
    key = github.apps.add_app(APP_ID)
    github.apps.install(APP_ID, "acme")
    return key


def target(gh: GitHubEmulator, pem: str, clock: FakeClock, app: dict[str, Any] | None = None,
           **fields: Any) -> GitHubTarget:
    config = GitHubTargetConfig(provider="github", id="gh-app", api_url=gh.url, repository=REPO,
                                app={"app_id": APP_ID, "private_key": "secretsmanager:ci/app-key", **(app or {})},
                                **fields)
    return GitHubTarget(config, pem, sleep=lambda _: None, timeout=5, find_run_attempts=3, clock=clock)


def call(gh: GitHubEmulator, method: str, path: str, bearer: str, body: Any = None) -> tuple[int, Any]:
    response = urllib3.request(method, gh.url + path, headers={"Authorization": f"Bearer {bearer}"},
                               body=None if body is None else json.dumps(body).encode(), retries=False)
    return response.status, json.loads(response.data) if response.data else None


# -- the JWT --------------------------------------------------------------------------------------------


def test_the_jwt_carries_githubs_claims_and_a_signature_the_emulator_verifies(
    github: GitHubEmulator, pem: str, clock: FakeClock
) -> None:
    token = app_jwt(str(APP_ID), load_private_key(pem, "test key"), clock())

    public = serialization.load_pem_private_key(pem.encode(), password=None).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims == {"iss": str(APP_ID), "iat": int(clock()) - 60, "exp": int(clock()) + 540}
    status, body = call(github, "GET", f"/repos/{REPO}/installation", token)
    assert status == 200 and body["app_id"] == APP_ID and body["account"]["login"] == "acme"
    # GitHub also accepts the App's client id as iss.
    by_client_id = app_jwt(github.apps.client_id(APP_ID), load_private_key(pem, "test key"), clock())
    assert call(github, "GET", "/orgs/acme/installation", by_client_id)[0] == 200


def test_the_emulator_refuses_jwts_github_would_refuse(github: GitHubEmulator, pem: str, clock: FakeClock) -> None:
    key = load_private_key(pem, "test key")
    now = int(clock())
    other_key = serialization.load_pem_private_key(github.apps.add_app(APP_ID + 1).encode(), password=None)

    def refused(claims: dict[str, Any], signer: Any = key) -> str:
        status, body = call(github, "GET", f"/repos/{REPO}/installation", jwt.encode(claims, signer, "RS256"))
        assert status == 401
        return str(body["message"])

    assert "too far in the future" in refused({"iat": now - 60, "exp": now + 601, "iss": str(APP_ID)})
    assert "'exp'" in refused({"iat": now - 700, "exp": now - 1, "iss": str(APP_ID)})
    assert "'iat'" in refused({"iat": now + 120, "exp": now + 300, "iss": str(APP_ID)})
    assert "could not be decoded" in refused({"iat": now, "exp": now + 300, "iss": "999"})
    assert "could not be decoded" in refused({"iat": now, "exp": now + 300, "iss": str(APP_ID)}, other_key)
    assert call(github, "GET", f"/repos/{REPO}/installation", TOKEN)[0] == 401  # a PAT is not an App
    assert call(github, "POST", "/app/installations/1/access_tokens", "not-a-jwt", {})[0] == 401


# -- installation tokens --------------------------------------------------------------------------------


def test_push_and_verification_run_on_one_cached_installation_token(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    gh_target = target(github, pem, clock)
    gh_target.push(aws.new)
    ref = gh_target.trigger_verification("app-1")
    github.wait_for_run(ref.run_id, timeout=20)
    status = target(github, pem, clock).run_status(ref.run_id)  # another instance, same warm process

    assert status.state is RunState.SUCCEEDED and status.used_key_sha256 is not None
    assert github.secret_value(REPO, "AWS_SECRET_ACCESS_KEY") == aws.new.secret_access_key
    assert len(github.apps.issued_tokens()) == 1


def test_the_token_is_minted_again_before_it_expires_and_after_github_refuses_it(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    gh_target = target(github, pem, clock)
    gh_target.push(aws.old)
    clock.advance(3000)  # 10 minutes left: still valid
    gh_target.push(aws.old)
    assert len(github.apps.issued_tokens()) == 1

    clock.advance(400)  # under the refresh margin: a new token before the old one can expire mid-call
    gh_target.push(aws.old)
    assert len(github.apps.issued_tokens()) == 2

    github.apps.expire_tokens()  # GitHub refuses the cached token (revoked, or expired early): 401
    gh_target.push(aws.new)
    assert len(github.apps.issued_tokens()) == 3
    assert github.secret_value(REPO, "AWS_ACCESS_KEY_ID") == aws.new.access_key_id


def test_the_token_is_narrowed_to_the_repository_and_the_permissions_it_needs(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    target(github, pem, clock).push(aws.new)
    (token,) = github.apps.issued_tokens()

    assert call(github, "GET", f"/repos/{REPO}", token)[0] == 200
    assert call(github, "GET", "/repos/acme/other", token)[0] == 404  # outside its repositories
    assert call(github, "GET", "/repos/acme/other/actions/secrets/public-key", token)[0] == 404
    status, body = call(github, "GET", "/orgs/acme/actions/secrets/public-key", token)
    assert (status, body["message"]) == (403, "Resource not accessible by integration")  # not requested
    assert call(github, "GET", f"/repos/{REPO}", TOKEN + "x")[0] == 401


def test_organization_scope_asks_for_the_selected_repositories_and_organization_secrets(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    target(github, pem, clock, scope="organization", selected_repositories=["acme/other"]).push(aws.new)

    assert github.secret_value("acme/other", "AWS_ACCESS_KEY_ID") == aws.new.access_key_id
    (token,) = github.apps.issued_tokens()
    assert call(github, "GET", "/repos/acme/other", token)[0] == 200
    assert call(github, "GET", f"/repos/{REPO}/actions/secrets/public-key", token)[0] == 403


def test_the_installation_is_looked_up_once_and_an_explicit_id_needs_no_lookup(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    target(github, pem, clock).push(aws.new)
    github_app._tokens.clear()
    github.inject("GET", r"/installation$", statuses=[404])  # a second lookup would now fail
    target(github, pem, clock).push(aws.new)
    assert len(github.apps.issued_tokens()) == 2

    github.reset_faults()  # the injected 404 is still pending: no second lookup consumed it
    github_app.clear_caches()
    installation = call(github, "GET", "/orgs/acme/installation",
                        app_jwt(str(APP_ID), load_private_key(pem, "k"), clock()))[1]["id"]
    github.inject("GET", r"/installation$", statuses=[404])
    target(github, pem, clock, app={"installation_id": installation}).push(aws.new)
    assert len(github.apps.issued_tokens()) == 3


# -- refusals: clear errors, never a traceback or a credential ------------------------------------------


def test_a_bad_private_key_is_a_clear_push_failure(github: GitHubEmulator, pem: str, clock: FakeClock) -> None:
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    for bad in ("ghp_pastedTheTokenInstead0000000000000", garbage):
        with pytest.raises(TargetPushFailed, match="secretsmanager:ci/app-key is not an unencrypted PEM") as caught:
            target(github, pem=bad, clock=clock)
        assert "bm90IGEga2V5" not in str(caught.value) and "ghp_" not in str(caught.value)
        assert caught.value.__suppress_context__  # nothing of the parser's exception (it may quote the input)


def test_a_wrong_app_id_or_a_key_of_another_app_is_refused_by_github(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace
) -> None:
    with pytest.raises(TargetPushFailed, match=r"GitHub App 999 refused: A JSON web token could not be decoded"):
        target(github, pem, clock, app={"app_id": 999}).push(aws.new)
    other = github.apps.add_app(APP_ID + 2)
    with pytest.raises(TargetPushFailed, match="HTTP 401") as caught:
        target(github, other, clock).push(aws.new)
    assert caught.value.changed is False
    with pytest.raises(VerificationTriggerFailed, match="HTTP 401"):
        target(github, other, clock).trigger_verification("nonce-x")


def test_an_app_without_the_needed_permissions_is_refused_with_githubs_reason(
    github: GitHubEmulator, clock: FakeClock, aws: SimpleNamespace
) -> None:
    pem = github.apps.add_app(APP_ID)
    github.apps.install(APP_ID, "acme", permissions={"actions": "write", "metadata": "read"})
    with pytest.raises(TargetPushFailed, match="permissions requested are not granted"):
        target(github, pem, clock).push(aws.new)


def test_an_installation_on_other_repositories_is_refused(
    github: GitHubEmulator, clock: FakeClock, aws: SimpleNamespace
) -> None:
    pem = github.apps.add_app(APP_ID)
    installation = github.apps.install(APP_ID, "acme", repositories=["acme/other"])
    with pytest.raises(TargetPushFailed, match="HTTP 404"):  # no installation on acme/app
        target(github, pem, clock).push(aws.new)
    with pytest.raises(TargetPushFailed, match="HTTP 422"):  # the token cannot reach acme/app
        target(github, pem, clock, app={"installation_id": installation}).push(aws.new)


def test_the_key_and_tokens_never_reach_logs_or_errors(
    github: GitHubEmulator, pem: str, clock: FakeClock, aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = []
    gh_target = target(github, pem, clock)
    gh_target.push(aws.new)
    github.apps.expire_tokens()
    gh_target.push(aws.new)
    for broken in ({"app_id": 999}, {"installation_id": 12345}):
        try:
            target(github, pem, clock, app=broken).push(aws.new)
        except TargetPushFailed as exc:
            errors.append(f"{exc!r} {exc}")
    assert len(errors) == 2 and "minted" in caplog.text
    text = caplog.text + "\n".join(errors) + repr(gh_target) + repr(gh_target._app_tokens)
    secrets = {*github.apps.issued_tokens(), *(line for line in pem.splitlines() if len(line) >= 40)}
    assert len(secrets) > 10
    assert [s for s in secrets if s in text] == []


# -- configuration ---------------------------------------------------------------------------------------


def test_exactly_one_of_token_and_app(tmp_path: Any) -> None:
    target_entry = {"provider": "github", "id": "web", "repository": REPO}
    app = {"app_id": 12, "private_key": "secretsmanager:ci-key-rotator/app-key"}

    def problems(**fields: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            parse_config({"users": [{"name": "ci", "targets": [{**target_entry, **fields}]}]}, "rotation.yaml")
        return str(caught.value)

    assert "exactly one of token" in problems()
    assert "exactly one of token" in problems(token="secretsmanager:ci-key-rotator/t", app=app)
    assert "looks like a secret value" in problems(app={**app, "private_key": "ghp_" + "a" * 36})
    assert "app_id" in problems(app={**app, "app_id": "not an id"})
    config = parse_config({"users": [{"name": "ci", "targets": [{**target_entry, "app": app}]}]})
    target_config = config.users[0].targets[0]
    assert target_config.token is None
    assert target_config.credential().field == "app.private_key"
    assert target_config.credential().ref == target_config.app.private_key  # type: ignore[union-attr]
    # Other providers still require their token, with the same message as before.
    with pytest.raises(ConfigError, match=r"targets\[0\]\.gitlab\.token: Field required|token: Field required"):
        parse_config({"users": [{"name": "ci", "targets": [{"provider": "gitlab", "id": "g",
                                                              "project": "acme/app"}]}]})


def test_deploy_refuses_an_app_key_the_functions_could_not_read() -> None:
    from deploy.preflight import Refused, validate_config_text

    text = ("users:\n  - name: ci\n    targets:\n      - {id: web, provider: github, repository: acme/app,\n"
            "         app: {app_id: 12, private_key: 'secretsmanager:elsewhere/app-key'}}\n")
    with pytest.raises(Refused, match=r"users\[0\]\.targets\[0\]\.app\.private_key: secretsmanager:elsewhere"):
        validate_config_text(text, "rotation.yaml", stage="prod")
    ok = text.replace("elsewhere/app-key", "ci-key-rotator/prod/app-key")
    assert validate_config_text(ok, "rotation.yaml", stage="prod").users[0].targets[0].token is None


# -- end to end -----------------------------------------------------------------------------------------


def test_a_full_rotation_with_github_app_authentication(clean_world: World) -> None:
    name = new_user_name("app")
    repository = f"acme/{name}"
    clean_world.use_github_app(repository)
    hand_made = clean_world.add_user(name, [repository])
    config = clean_world.target_config(repository)
    assert "token" not in config and config["app"]["private_key"].startswith("secretsmanager:")

    result = clean_world.rotate(name)

    assert result["status"] == "SUCCEEDED"
    new_key = assert_one_active_key_everywhere(clean_world, name)
    assert new_key != hand_made and clean_world.held_key(repository) == new_key
    assert_no_pipeline_holds_a_dead_key(clean_world, name)
    assert clean_world.github.apps.issued_tokens(), "the rotation authenticated as the App"
    hashes, literals = known_secrets(clean_world.runtime, set(clean_world.received_secret_sha256s()),
                                     clean_world.credential_literals())
    assert leaks(corpus(clean_world.runtime), hashes, literals) == []
    # The scan would see the key even JSON-escaped (a history, a log line), and any installation token.
    assert clean_world._app is not None
    planted = {"history": json.dumps({"cause": clean_world._app[1]}),
               "logs": f"Authorization: Bearer {clean_world.github.apps.issued_tokens()[0]}"}
    assert set(leaks(planted, hashes, literals)) == {"CI credential in history", "CI credential in logs"}
