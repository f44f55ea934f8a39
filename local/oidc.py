"""The CI emulators as OpenID Connect issuers: keys, discovery, JWKS and RS256 ID tokens (docs/oidc.md).

Tokens carry the providers' REAL public issuer URLs (``https://token.actions.githubusercontent.com``, ...),
because that is what an IAM OIDC provider is registered with and what a trust policy's condition keys are
named after. Nothing may leave 127.0.0.1, so each issuer's discovery document and JWKS are served by one small
HTTP server here, and :func:`local_url` is the registry the local AWS (local/sts_web_identity.py) resolves an
issuer's URLs through: ``https://gitlab.com/oauth/discovery/keys`` -> ``http://127.0.0.1:<port>/gitlab.com/
oauth/discovery/keys``. That server is not the emulators' API server on purpose: ``/.well-known/...`` is in no
provider's API description, and the emulators refuse every request their description does not allow.

One key pair per issuer URL, shared by every emulator of that provider in the process, as every repository on
GitHub shares GitHub's issuer. Each provider's claim names and ``sub`` format are its documented ones
(:class:`Profile`); an emulator with no OIDC (Travis CI) has no profile.

GitHub hands a job its token on request: ``ACTIONS_ID_TOKEN_REQUEST_URL`` (+ ``&audience=``) with the bearer
``ACTIONS_ID_TOKEN_REQUEST_TOKEN``, answered ``{"value": "<jwt>"}``; that endpoint is served here too, each
request token bound to the job it was issued for.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

#: Stable ids the emulators' projects carry in their tokens: uuid5 of a name under this namespace.
_ID_NAMESPACE = uuid.UUID("5b0f3c2e-8a7d-4c6e-9f51-2d7e0b1a9c43")
#: GitHub's token request path (on GitHub it lives on the Actions service host, not the issuer's).
_GITHUB_REQUEST_PATH = "/_apis/distributedtask/idtoken"


def stable_uuid(name: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, name))


# -- issuers ------------------------------------------------------------------------------------------


@dataclass
class Issuer:
    """One OIDC issuer: an RSA key pair, its discovery document and JWKS, and RS256 minting."""

    url: str
    #: Where the JWKS lives, relative to ``url`` (each provider publishes it at its own path).
    jwks_path: str
    claims_supported: tuple[str, ...] = ()
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def jwks_uri(self) -> str:
        return self.url + self.jwks_path

    def discovery(self) -> dict[str, Any]:
        """The fields of OpenID Connect Discovery 1.0 a relying party (IAM) reads."""
        return {
            "issuer": self.url, "jwks_uri": self.jwks_uri, "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"], "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"], "claims_supported": sorted({"sub", "aud", "iss", "exp", "iat", "nbf",
                                                                        "jti", *self.claims_supported}),
        }

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(self, claims: Mapping[str, Any], *, lifetime: int = 300, now: float | None = None,
             signing_key: rsa.RSAPrivateKey | None = None) -> str:
        """An RS256 JWT with ``claims`` over iss/iat/nbf/exp/jti; ``signing_key`` forges one (tests)."""
        issued = int(time.time() if now is None else now)
        payload = {"iss": self.url, "jti": str(uuid.uuid4()), "iat": issued, "nbf": issued,
                   "exp": issued + lifetime, **claims}
        token = jwt.encode(payload, signing_key or self.key, algorithm="RS256",
                           headers={"kid": self.kid, "typ": "JWT"})
        _registry.record(token)
        return token


class _Registry:
    """Every issuer of this process by URL, served by one HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issuers: dict[str, Issuer] = {}
        #: GitHub request token -> the job's token factory (audience -> JWT).
        self.requests: dict[str, Callable[[str | None], str]] = {}
        self.server: ThreadingHTTPServer | None = None
        #: sha256 of every token minted in this process (the value never: the demo's leak scan needs only this).
        self.minted: set[str] = set()

    def record(self, token: str) -> None:
        with self.lock:
            self.minted.add(hashlib.sha256(token.encode()).hexdigest())

    def base(self) -> str:
        with self.lock:
            if self.server is None:
                server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
                server.daemon_threads = True
                threading.Thread(target=server.serve_forever, args=(0.05,), name="oidc-issuers",
                                 daemon=True).start()
                self.server = server
            host, port = self.server.server_address[:2]
            return f"http://{host}:{port}"


_registry = _Registry()


def issuer(url: str, jwks_path: str, claims_supported: tuple[str, ...] = ()) -> Issuer:
    """The process's issuer for ``url`` (https, no trailing slash), created with its key on first use."""
    url = url.rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"an OIDC issuer URL is https: {url!r}")
    _registry.base()
    with _registry.lock:
        found = _registry.issuers.get(url)
        if found is None:
            found = _registry.issuers[url] = Issuer(url, jwks_path, claims_supported)
        return found


def minted_token_sha256s() -> set[str]:
    """The sha256 of every ID token minted in this process (builds', tests', the demo's): what a leak scan of
    the demo's output looks for, since a token is a bearer credential until it expires."""
    with _registry.lock:
        return set(_registry.minted)


def local_url(url: str) -> str | None:
    """Where the local world serves ``url`` (an issuer's discovery document or JWKS), or None when no
    registered issuer is its prefix: the local AWS then cannot reach the provider, as AWS could not."""
    with _registry.lock:
        matches = [u for u in _registry.issuers if url == u or url.startswith(u + "/")]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return f"{_registry.base()}/{_path_key(prefix)}{url[len(prefix):]}"


def discovery_url(issuer_url: str) -> str:
    """OpenID Connect Discovery 1.0: ``<issuer>/.well-known/openid-configuration``."""
    return issuer_url.rstrip("/") + "/.well-known/openid-configuration"


def _path_key(issuer_url: str) -> str:
    return quote(issuer_url.removeprefix("https://"), safe="/")


def github_request(mint: Callable[[str | None], str]) -> dict[str, str]:
    """The two variables GitHub gives a job with ``id-token: write``: the URL to request a token from and
    the bearer that authorises it (only this job's tokens)."""
    token = secrets.token_urlsafe(32)
    with _registry.lock:
        _registry.requests[token] = mint
    return {"ACTIONS_ID_TOKEN_REQUEST_URL": f"{_registry.base()}{_GITHUB_REQUEST_PATH}?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": token}


def revoke_github_request(token: str) -> None:
    """The job ended: its request token no longer mints."""
    with _registry.lock:
        _registry.requests.pop(token, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalOIDC/1"

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == _GITHUB_REQUEST_PATH:
            self._github_token(parse_qs(query))
            return
        with _registry.lock:
            issuers = list(_registry.issuers.values())
        for candidate in sorted(issuers, key=lambda i: len(i.url), reverse=True):
            prefix = "/" + _path_key(candidate.url)
            if path == prefix + "/.well-known/openid-configuration":
                self._reply(200, candidate.discovery())
                return
            if path == prefix + candidate.jwks_path:
                self._reply(200, candidate.jwks())
                return
        self._reply(404, {"message": "Not Found"})

    def _github_token(self, query: dict[str, list[str]]) -> None:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        with _registry.lock:
            mint = _registry.requests.get(given) if scheme.lower() == "bearer" else None
        if mint is None:
            # The job has no id-token permission, or the token belongs to a job that ended.
            self._reply(401, {"message": "Unauthorized"})
            return
        audience = query.get("audience", [None])[-1]
        self._reply(200, {"count": 1, "value": mint(audience)})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line of a token request carries no token (it is in a header); keep stderr quiet anyway.
        pass


# -- the providers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What a provider's token says about one project of an emulator (ids as the provider shows them)."""

    provider: str
    issuer: str
    #: The audience a token gets when the job does not choose one.
    default_audience: str
    #: The target config's ``oidc:`` block federation needs (chalicelib/federation.py).
    settings: dict[str, str]
    #: claims(audience, flavour) -> the token's claims besides iss/iat/nbf/exp/jti.
    claims: Callable[[str, str], dict[str, Any]]
    lifetime: int


@dataclass(frozen=True)
class Profile:
    """How one CI issues ID tokens: its issuer's JWKS path and claim names, and a project's claims."""

    provider: str
    jwks_path: str
    claims_supported: tuple[str, ...]
    subject: Callable[[Any, str], Subject]

    def issuer_for(self, subject: Subject) -> Issuer:
        return issuer(subject.issuer, self.jwks_path, self.claims_supported)


def _known(emulator: Any, project: str) -> Any:
    """The emulator's own record of ``project`` (every emulator keeps one behind ``_known``)."""
    with emulator._lock:
        return emulator._known(project)


def _github_subject(emulator: Any, project: str) -> Subject:
    # https://docs.github.com/en/actions/reference/security/oidc
    repo = _known(emulator, project)
    owner = repo.full_name.split("/")[0]
    environment = repo.workflows.get("rotate-verify.yml")

    def claims(audience: str, flavour: str) -> dict[str, Any]:
        run_id = str(secrets.randbelow(10**10))
        ref = "refs/heads/main"
        sub = f"repo:{repo.full_name}:environment:{environment}" if environment else f"repo:{repo.full_name}:ref:{ref}"
        workflow_ref = f"{repo.full_name}/.github/workflows/rotate-verify.yml@{ref}"
        sha = hashlib.sha1(ref.encode(), usedforsecurity=False).hexdigest()
        claims = {
            "sub": sub, "aud": audience, "ref": ref, "sha": sha, "repository": repo.full_name,
            "repository_owner": owner, "repository_owner_id": str(_numeric(owner)),
            "repository_id": str(repo.id), "repository_visibility": "private" if repo.private else "public",
            "run_id": run_id, "run_number": "1", "run_attempt": "1", "runner_environment": "github-hosted",
            "actor": "rotator", "actor_id": str(_numeric("rotator")), "workflow": "rotate-verify",
            "head_ref": "", "base_ref": "", "event_name": "workflow_dispatch", "ref_type": "branch",
            "ref_protected": "true", "workflow_ref": workflow_ref, "workflow_sha": sha,
            "job_workflow_ref": workflow_ref, "job_workflow_sha": sha,
        }
        if environment:
            claims["environment"] = environment
        return claims

    return Subject("github", "https://token.actions.githubusercontent.com", f"https://github.com/{owner}", {},
                   claims, lifetime=300)


def _gitlab_subject(emulator: Any, project: str) -> Subject:
    # https://docs.gitlab.com/ci/secrets/id_token_authentication/ (token payload)
    known = _known(emulator, project)
    namespace = known.path.rsplit("/", 1)[0]

    def claims(audience: str, flavour: str) -> dict[str, Any]:
        ref = "main"
        return {
            "sub": f"project_path:{known.path}:ref_type:branch:ref:{ref}", "aud": audience,
            "namespace_id": str(_numeric(namespace)), "namespace_path": namespace,
            "project_id": str(known.id), "project_path": known.path, "user_id": "1", "user_login": "rotator",
            "user_email": "rotator@example.com", "user_access_level": "maintainer",
            "pipeline_id": str(secrets.randbelow(10**9)), "pipeline_source": "api",
            "job_id": str(secrets.randbelow(10**9)), "ref": ref, "ref_type": "branch",
            "ref_path": f"refs/heads/{ref}", "ref_protected": "true", "runner_id": 1,
            "runner_environment": "gitlab-hosted", "sha": hashlib.sha1(ref.encode(), usedforsecurity=False).hexdigest(),
            "project_visibility": "private", "ci_config_ref_uri": f"gitlab.com/{known.path}//.gitlab-ci.yml@refs/heads/{ref}",
        }

    # A local GitLab has no https origin: its tokens name gitlab.com, as federation_for does for it.
    return Subject("gitlab", "https://gitlab.com", "https://gitlab.com", {}, claims, lifetime=3600)


def _circleci_subject(emulator: Any, project: str) -> Subject:
    # https://circleci.com/docs/openid-connect-tokens/
    known = _known(emulator, project)
    vcs, org_name, repo_name = known.slug.split("/")
    org_id, project_id = stable_uuid(f"circleci-org:{vcs}/{org_name}"), known.id
    user_id = stable_uuid("circleci-user:rotator")
    host = {"gh": "github.com", "bb": "bitbucket.org"}.get(vcs, "circleci.com")
    origin, vcs_ref = f"{host}/{org_name}/{repo_name}", "refs/heads/main"

    def claims(audience: str, flavour: str) -> dict[str, Any]:
        sub = f"org/{org_id}/project/{project_id}/user/{user_id}"
        if flavour == "v2":
            sub += f"/vcs-origin/{origin}/vcs-ref/{vcs_ref}"
        return {"sub": sub, "aud": audience, "oidc.circleci.com/project-id": project_id,
                "oidc.circleci.com/context-ids": list(getattr(known, "contexts", [])),
                "oidc.circleci.com/vcs-origin": origin, "oidc.circleci.com/vcs-ref": vcs_ref,
                "oidc.circleci.com/ssh-rerun": False}

    return Subject("circleci", f"https://oidc.circleci.com/org/{org_id}", org_id,
                   {"organization_id": org_id, "project_id": project_id}, claims, lifetime=3600)


def _bitbucket_subject(emulator: Any, project: str) -> Subject:
    # https://support.atlassian.com/bitbucket-cloud/docs/integrate-pipelines-with-resource-servers-using-oidc/
    repo = _known(emulator, project)
    workspace_uuid = "{" + stable_uuid(f"bitbucket-workspace:{repo.workspace}") + "}"

    def claims(audience: str, flavour: str) -> dict[str, Any]:
        step = "{" + str(uuid.uuid4()) + "}"
        return {"sub": f"{repo.uuid}:{step}", "aud": audience, "stepUuid": step,
                "pipelineUuid": "{" + str(uuid.uuid4()) + "}", "repositoryUuid": repo.uuid,
                "workspaceUuid": workspace_uuid, "branchName": "main"}

    return Subject("bitbucket",
                   f"https://api.bitbucket.org/2.0/workspaces/{repo.workspace}/pipelines-config/identity/oidc",
                   f"ari:cloud:bitbucket::workspace/{workspace_uuid.strip('{}')}",
                   {"workspace_uuid": workspace_uuid, "repository_uuid": repo.uuid}, claims, lifetime=3600)


def _numeric(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


GITHUB = Profile("github", "/.well-known/jwks",
                 ("repository", "repository_owner", "repository_id", "ref", "environment", "job_workflow_ref",
                  "workflow_ref", "event_name", "actor", "run_id", "runner_environment"), _github_subject)
GITLAB = Profile("gitlab", "/oauth/discovery/keys",
                 ("project_path", "namespace_path", "project_id", "ref", "ref_type", "ref_protected",
                  "pipeline_source", "user_login"), _gitlab_subject)
CIRCLECI = Profile("circleci", "/.well-known/jwks-pub.json",
                   ("oidc.circleci.com/project-id", "oidc.circleci.com/context-ids",
                    "oidc.circleci.com/vcs-origin", "oidc.circleci.com/vcs-ref"), _circleci_subject)
BITBUCKET = Profile("bitbucket", "/keys.json",
                    ("repositoryUuid", "workspaceUuid", "stepUuid", "pipelineUuid", "branchName"),
                    _bitbucket_subject)


# -- what a build of an emulator's project is handed ---------------------------------------------------


@dataclass
class Grant:
    """The ID tokens one build of one project may obtain, the way its CI hands them over."""

    profile: Profile
    subject: Subject
    #: Every value handed to the job (tokens, GitHub's request token): the build masks them.
    handed: list[str] = field(default_factory=list)

    def mint(self, audience: str | None = None, flavour: str = "v1", **overrides: Any) -> str:
        claims = {**self.subject.claims(audience or self.subject.default_audience, flavour), **overrides}
        token = self.profile.issuer_for(self.subject).mint(claims, lifetime=self.subject.lifetime)
        self.handed.append(token)
        return token

    def handover(self, variable: str, audience: str | None) -> dict[str, str]:
        """The job's environment for one token its file asks for (``variable`` names how: see
        local/bin/verify_templates.py)."""
        if variable == "ACTIONS_ID_TOKEN_REQUEST_URL":
            env = github_request(lambda aud: self.mint(aud))
            self.handed.append(env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"])
            return env
        token = self.mint(audience, "v2" if variable == "CIRCLE_OIDC_TOKEN_V2" else "v1")
        return {variable: token}

    def close(self) -> None:
        for value in self.handed:
            revoke_github_request(value)


def grant(profile: Profile, emulator: Any, project: str) -> Grant:
    return Grant(profile, profile.subject(emulator, project))


def token_issuer(token: str) -> str | None:
    """The unverified ``iss`` of a JWT, or None when it is not one (what the local AWS looks up first)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    value = claims.get("iss")
    return value if isinstance(value, str) else None
