"""GitHub Apps for the local GitHub (local/emulators/github.py): App JWTs, installations, installation tokens.

What GitHub documents and this implements:

- An App authenticates with a JWT signed RS256 by its private key; ``iss`` is the App id (or client id),
  ``exp`` at most 10 minutes ahead, ``iat`` not in the future. A JWT that fails any of that gets 401.
  https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
- With the JWT: ``GET /repos/{owner}/{repo}/installation``, ``GET /orgs/{org}/installation`` and
  ``POST /app/installations/{installation_id}/access_tokens``, which issues a ``ghs_`` token that expires one
  hour later. ``repositories``/``repository_ids`` narrow it to some of the installation's repositories and
  ``permissions`` to some of its permissions; asking for more than the installation has is a 422.
  https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app
- An installation token is accepted wherever a token is; an expired one gets 401. Outside its repositories
  GitHub answers 404 (it does not reveal a private repository), and a call its permissions do not cover gets
  403 "Resource not accessible by integration".
  https://docs.github.com/rest/authentication/permissions-required-for-github-apps

The emulator keeps each App's *public* key only; ``add_app`` hands the private PEM to the caller, who stores
it where the rotator reads it (Secrets Manager). ``clock`` (epoch seconds) is what JWT windows and token
expiry are measured against: tests share a fake clock with the client instead of sleeping.
"""

from __future__ import annotations

import itertools
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from local.emulators._server import ApiError, Reply, Request

if TYPE_CHECKING:
    from local.emulators.github import GitHubEmulator

#: GitHub's limit on how far ahead a JWT's ``exp`` may be.
MAX_JWT_SECONDS = 600
#: Tolerated drift of an ``iat`` ahead of the server's clock (the emulator's choice; GitHub asks clients to
#: backdate by 60 s and does not publish its own tolerance).
IAT_SKEW_SECONDS = 60
TOKEN_SECONDS = 3600
#: What an App gets by default: what the GitHub target needs in every scope.
DEFAULT_PERMISSIONS = {"actions": "write", "checks": "read", "metadata": "read", "secrets": "write",
                       "environments": "write", "organization_secrets": "write"}
_DOCS = "https://docs.github.com/rest"
_JWT_PATHS = (re.compile(r"/app(/.*)?"), re.compile(r"/repos/[^/]+/[^/]+/installation"),
              re.compile(r"/orgs/[^/]+/installation"))
#: The permission each call needs (GET reads, anything else writes), first match wins. Paths not listed here
#: (routes added later) are only scoped to the token's repositories.
_NEEDS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"/repos/[^/]+/[^/]+/environments/[^/]+/secrets(/.*)?"), ("secrets", "environments")),
    (re.compile(r"/repos/[^/]+/[^/]+/actions/secrets(/.*)?"), ("secrets",)),
    (re.compile(r"/orgs/[^/]+/actions/secrets(/.*)?"), ("organization_secrets",)),
    (re.compile(r"/repos/[^/]+/[^/]+/actions/(workflows|runs)(/.*)?"), ("actions",)),
    (re.compile(r"/repos/[^/]+/[^/]+/check-runs(/.*)?"), ("checks",)),
    (re.compile(r"/repos/[^/]+/[^/]+"), ("metadata",)),
]
_REPO_PATH = re.compile(r"/repos/([^/]+)/([^/]+)(/.*)?")
_ORG_PATH = re.compile(r"/orgs/([^/]+)(/.*)?")
_LEVELS = {"read": 1, "write": 2, "admin": 3}
_ALPHABET = string.ascii_letters + string.digits


@dataclass
class _App:
    app_id: int
    client_id: str
    public_key: rsa.RSAPublicKey


@dataclass
class _Installation:
    id: int
    app: _App
    #: The user or organization login it is installed on.
    account: str
    #: Lower-case repository names in the account; None: all of the account's repositories.
    repositories: frozenset[str] | None
    permissions: dict[str, str]


@dataclass
class _InstallationToken:
    installation: _Installation
    #: Lower-case repository names; None: every repository of the installation.
    repositories: frozenset[str] | None
    permissions: dict[str, str]
    expires_at: float
    revoked: bool = False


@dataclass
class GitHubApps:
    """The Apps of one GitHubEmulator; it routes the App endpoints here and asks ``owns``/``refuse`` first."""

    server: GitHubEmulator
    #: Epoch seconds for JWT windows and token expiry.
    clock: Callable[[], float] = time.time
    _apps: dict[int, _App] = field(default_factory=dict)
    _installations: dict[int, _Installation] = field(default_factory=dict)
    _tokens: dict[str, _InstallationToken] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(40_000_001))

    def register_routes(self) -> None:
        self.server.route("GET", r"/repos/([^/]+)/([^/]+)/installation", self._repo_installation)
        self.server.route("GET", r"/orgs/([^/]+)/installation", self._org_installation)
        self.server.route("POST", r"/app/installations/(\d+)/access_tokens", self._create_token)

    # -- setup (Python side) -------------------------------------------------------------------------

    def add_app(self, app_id: int | None = None) -> str:
        """Register an App with a fresh RSA key; its private key as PEM (the emulator keeps the public half)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self.server._lock:
            app_id = app_id if app_id is not None else next(self._ids)
            client_id = "Iv23" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
            self._apps[app_id] = _App(app_id, client_id, key.public_key())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    def client_id(self, app_id: int) -> str:
        with self.server._lock:
            return self._apps[app_id].client_id

    def install(self, app_id: int, account: str, repositories: Iterable[str] | None = None,
                permissions: Mapping[str, str] | None = None) -> int:
        """Install the App on ``account`` (all its repositories, or only these owner/repo names); its id."""
        with self.server._lock:
            selected = None if repositories is None else frozenset(_repo_name(account, r) for r in repositories)
            installation = _Installation(next(self._ids), self._apps[app_id], account, selected,
                                         dict(DEFAULT_PERMISSIONS if permissions is None else permissions))
            self._installations[installation.id] = installation
            return installation.id

    def expire_tokens(self) -> None:
        """Every installation token issued so far is refused from now on (as after its hour)."""
        with self.server._lock:
            for token in self._tokens.values():
                token.revoked = True

    def issued_tokens(self) -> list[str]:
        """Every installation token issued: for the tests' leak scan, never printed."""
        with self.server._lock:
            return list(self._tokens)

    # -- authentication ------------------------------------------------------------------------------

    def owns(self, request: Request, given: str) -> bool:
        """Whether this request authenticates as an App: an App endpoint, or an installation token."""
        return given.startswith("ghs_") or any(p.fullmatch(request.path) for p in _JWT_PATHS)

    def refuse(self, request: Request, given: str) -> Reply | None:
        """GitHub's answer to an App credential that does not allow this request; None lets it through."""
        if any(p.fullmatch(request.path) for p in _JWT_PATHS):
            app = self._app_of_jwt(given)
            if isinstance(app, Reply):
                return app
            return None
        with self.server._lock:
            token = self._tokens.get(given)
            if token is None or token.revoked or self.clock() >= token.expires_at:
                return Reply(401, {"message": "Bad credentials", "documentation_url": _DOCS})
            return self._token_refusal(request, token)

    def _app_of_jwt(self, given: str) -> _App | Reply:
        bad = Reply(401, {"message": "A JSON web token could not be decoded", "documentation_url": _DOCS})
        try:
            claims = jwt.decode(given, options={"verify_signature": False})
            iss = str(claims.get("iss", ""))
        except jwt.PyJWTError:
            return bad
        with self.server._lock:
            app = next((a for a in self._apps.values() if iss in (str(a.app_id), a.client_id)), None)
        if app is None:
            return bad
        try:
            # Times are checked below against the emulator's clock, by GitHub's rules.
            claims = jwt.decode(given, app.public_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.PyJWTError:
            return bad
        now, exp, iat = self.clock(), claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or exp <= now:
            return Reply(401, {"message": "'Expiration time' claim ('exp') must be a numeric value representing "
                                          "the future time at which the assertion expires.",
                               "documentation_url": _DOCS})
        if exp > now + MAX_JWT_SECONDS:
            return Reply(401, {"message": "'Expiration time' claim ('exp') is too far in the future",
                               "documentation_url": _DOCS})
        if not isinstance(iat, int) or iat > now + IAT_SKEW_SECONDS:
            return Reply(401, {"message": "'Issued at' claim ('iat') must be an Integer representing the time "
                                          "that the assertion was issued", "documentation_url": _DOCS})
        return app

    def _token_refusal(self, request: Request, token: _InstallationToken) -> Reply | None:
        installation = token.installation
        repo_match, org_match = _REPO_PATH.fullmatch(request.path), _ORG_PATH.fullmatch(request.path)
        if repo_match:
            owner, name = repo_match.group(1), repo_match.group(2)
            if owner.lower() != installation.account.lower() or not self._reaches(token, name.lower()):
                return Reply(404, {"message": "Not Found", "documentation_url": _DOCS})
        elif org_match and org_match.group(1).lower() != installation.account.lower():
            return Reply(404, {"message": "Not Found", "documentation_url": _DOCS})
        needed = "read" if request.method == "GET" else "write"
        for pattern, permissions in _NEEDS:
            if pattern.fullmatch(request.path):
                if not all(_LEVELS.get(token.permissions.get(p, ""), 0) >= _LEVELS[needed] for p in permissions):
                    return Reply(403, {"message": "Resource not accessible by integration",
                                       "documentation_url": _DOCS})
                break
        return None

    @staticmethod
    def _reaches(token: _InstallationToken, name: str) -> bool:
        for allowed in (token.installation.repositories, token.repositories):
            if allowed is not None and name not in allowed:
                return False
        return True

    # -- route handlers ------------------------------------------------------------------------------

    def _calling_app(self, request: Request) -> _App:
        """The App whose JWT ``refuse`` accepted for this request."""
        given = (request.headers.get("Authorization") or "").partition(" ")[2]
        app = self._app_of_jwt(given)
        if isinstance(app, Reply):  # refuse() let it through a moment ago; the clock may have moved since
            raise ApiError(app.status, app.body["message"])
        return app

    def _repo_installation(self, request: Request, owner: str, name: str) -> Reply:
        with self.server._lock:
            app = self._calling_app(request)
            self.server._repo(f"{owner}/{name}")  # 404 for an unknown repository
            for installation in self._installations.values():
                if (installation.app is app and installation.account.lower() == owner.lower()
                        and (installation.repositories is None or name.lower() in installation.repositories)):
                    return Reply(200, self._installation_api(installation))
        raise ApiError(404, "Not Found")

    def _org_installation(self, request: Request, org: str) -> Reply:
        with self.server._lock:
            app = self._calling_app(request)
            for installation in self._installations.values():
                if installation.app is app and installation.account.lower() == org.lower():
                    return Reply(200, self._installation_api(installation))
        raise ApiError(404, "Not Found")

    def _create_token(self, request: Request, installation_id: str) -> Reply:
        body = request.json_object()
        with self.server._lock:
            app = self._calling_app(request)
            installation = self._installations.get(int(installation_id))
            if installation is None or installation.app is not app:
                raise ApiError(404, "Not Found")
            repositories = self._narrowed_repositories(installation, body)
            asked = body.get("permissions")
            permissions = dict(installation.permissions) if asked is None else dict(asked)
            if any(_LEVELS[level] > _LEVELS.get(installation.permissions.get(name, ""), 0)
                   for name, level in permissions.items()):
                raise ApiError(422, "The permissions requested are not granted to this installation.")
            value = "ghs_" + "".join(secrets.choice(_ALPHABET) for _ in range(36))
            expires_at = self.clock() + TOKEN_SECONDS
            self._tokens[value] = _InstallationToken(installation, repositories, permissions, expires_at)
        reply: dict[str, Any] = {
            "token": value, "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
            "permissions": permissions,
            "repository_selection": "all" if repositories is None and installation.repositories is None
            else "selected",
        }
        if repositories is not None:
            reply["repositories"] = [self.server._repo(f"{installation.account}/{name}").api()
                                     for name in sorted(repositories)]
        return Reply(201, reply)

    def _narrowed_repositories(self, installation: _Installation, body: Mapping[str, Any]) -> frozenset[str] | None:
        names: set[str] = {str(n).lower() for n in body.get("repositories") or []}
        ids = body.get("repository_ids") or []
        by_id = {repo.id: repo for repo in self.server._repos.values()}
        for repo_id in ids:
            repo = by_id.get(repo_id)
            if repo is None:
                names.add(f"#{repo_id}")  # refused below
            else:
                names.add(repo.full_name.split("/")[1].lower() if repo.owner.lower() == installation.account.lower()
                          else f"#{repo_id}")
        if not names:
            return None
        for name in names:
            known = self.server._repos.get(f"{installation.account.lower()}/{name}")
            if known is None or (installation.repositories is not None and name not in installation.repositories):
                raise ApiError(422, "There is at least one repository that does not exist or is not accessible "
                                    "to the parent installation.")
        return frozenset(names)

    def _installation_api(self, installation: _Installation) -> dict[str, Any]:
        base = self.server.url
        return {
            "id": installation.id, "app_id": installation.app.app_id, "client_id": installation.app.client_id,
            "account": {"login": installation.account, "type": "Organization"},
            "target_type": "Organization",
            "repository_selection": "all" if installation.repositories is None else "selected",
            "access_tokens_url": f"{base}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{base}/installation/repositories",
            "permissions": dict(installation.permissions), "events": [],
        }


def _repo_name(account: str, full_name: str) -> str:
    owner, _, name = full_name.partition("/")
    if owner.lower() != account.lower() or not name:
        raise ValueError(f"{full_name!r} is not a repository of {account!r}")
    return name.lower()
