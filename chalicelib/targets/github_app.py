"""Authenticating the GitHub target as a GitHub App: an RS256 JWT, exchanged for short-lived installation tokens.

The App's private key comes from Secrets Manager (``app.private_key``, a SecretRef like ``token``); with it the
target signs a JWT (``iat`` 60 s in the past, ``exp`` 9 minutes ahead, ``iss`` the App's id) and trades it for
an installation token, narrowed to the repositories and permissions the target needs, through
``POST /app/installations/{installation_id}/access_tokens``. The token lives one hour; it is cached per warm
Lambda until shortly before ``expires_at`` and minted again when GitHub answers 401 (revoked, or expired
early). Neither the key, the JWT nor a token is ever logged; errors name the App id, the installation and the
call only.

- https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
- https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app
- https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.errors import TargetPushFailed
from chalicelib.secret_ref import SecretRef
from chalicelib.targets.http import DEFAULT_EXPECT, HttpClient, HttpError, Response

log = logging.getLogger(__name__)

#: GitHub recommends backdating ``iat`` by 60 s against clock drift.
JWT_BACKDATE_SECONDS = 60
#: GitHub refuses an ``exp`` more than 10 minutes ahead of its own clock; 9 leaves a minute for skew.
JWT_LIFETIME_SECONDS = 540
#: An installation token is replaced this long before its ``expires_at``: no call starts with a token that
#: could expire while it is in flight (a Lambda call lasts seconds to a minute).
TOKEN_REFRESH_MARGIN_SECONDS = 300.0

_APP_ID = r"^(?:[1-9][0-9]{0,19}|Iv[0-9A-Za-z._-]{1,64})$"


class GitHubAppAuth(BaseModel):
    """``app:`` of a GitHub target: authenticate as this App's installation instead of with a token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The App's id (numeric) or its client id (``Iv…``); GitHub accepts either as the JWT's ``iss``.
    app_id: str = Field(pattern=_APP_ID)
    #: Where the App's private key (PEM) is stored; never the key itself.
    private_key: SecretRef
    #: The installation on the repository's owner; looked up (and cached) when absent.
    installation_id: int | None = Field(None, ge=1)

    @field_validator("app_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # YAML reads `app_id: 123456` as a number; the JWT's iss is the same text either way.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def load_private_key(pem: str, where: str) -> Any:
    """The RSA private key from its PEM text; TargetPushFailed (naming where it is stored, never the text)
    when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        # The exception text may quote the input: only its class name goes out.
        raise TargetPushFailed(f"{where} is not an unencrypted PEM private key", changed=False) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TargetPushFailed(f"{where} is not an RSA private key (GitHub Apps sign with RS256)", changed=False)
    return key


def app_jwt(app_id: str, private_key: Any, now: float) -> str:
    """The App's JWT: RS256 over ``iat`` (60 s ago), ``exp`` (9 minutes ahead) and ``iss`` (the App id)."""
    import jwt

    issued = int(now) - JWT_BACKDATE_SECONDS
    return jwt.encode({"iat": issued, "exp": int(now) + JWT_LIFETIME_SECONDS, "iss": app_id}, private_key,
                      algorithm="RS256")


class AppAuthFailed(HttpError):
    """GitHub refused the App's JWT or the token exchange; callers map it like any refused call."""


@dataclass(frozen=True)
class _Token:
    value: str
    #: Epoch seconds (the client's clock).
    expires_at: float

    def __repr__(self) -> str:  # keeps the token out of tracebacks and debug output
        return f"_Token(expires_at={self.expires_at})"


#: (api_url, app_id, installation_id, repositories, permissions) -> the current token: shared by every target
#: of a warm Lambda, so a Map of targets on one installation mints once.
_tokens: dict[tuple[Any, ...], _Token] = {}
#: (api_url, app_id, "repos"/"orgs", name) -> installation id.
_installations: dict[tuple[str, str, str, str], int] = {}
_lock = threading.Lock()


def clear_caches() -> None:
    """Forget every cached installation token and installation id (tests; a key rotation of the App)."""
    with _lock:
        _tokens.clear()
        _installations.clear()


class InstallationTokens:
    """Mints and caches the installation token of one target's App installation. Thread-safe."""

    def __init__(self, auth: GitHubAppAuth, private_key: Any, http: HttpClient, *, owner: tuple[str, str],
                 repositories: Collection[str], permissions: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        self._auth = auth
        self._key = private_key
        self._http = http
        #: ("repos", "owner/repo") or ("orgs", "org"): where the installation is looked up.
        self._owner = owner
        self._repositories = sorted(set(repositories))
        self._permissions = dict(sorted(permissions.items()))
        self._clock = clock
        self._mint_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InstallationTokens(app_id={self._auth.app_id!r})"

    def _jwt_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {app_jwt(self._auth.app_id, self._key, self._clock())}"}

    def installation_id(self) -> int:
        if self._auth.installation_id is not None:
            return self._auth.installation_id
        kind, name = self._owner
        cache_key = (self._http.base_url, self._auth.app_id, kind, name.lower())
        with _lock:
            known = _installations.get(cache_key)
        if known is not None:
            return known
        path = f"/{kind}/{name}/installation"
        body = self._call("GET", path, (200,)).json or {}
        found = body.get("id") if isinstance(body, dict) else None
        if not isinstance(found, int) or isinstance(found, bool):
            raise AppAuthFailed(502, "GET", path, "no installation id in the answer")
        with _lock:
            _installations[cache_key] = found
        return found

    def _cache_key(self) -> tuple[Any, ...]:
        return (self._http.base_url, self._auth.app_id, self._auth.installation_id, self._owner,
                tuple(self._repositories), tuple(self._permissions.items()))

    def token(self) -> str:
        """A token valid for at least TOKEN_REFRESH_MARGIN_SECONDS more, minted only when needed."""
        key = self._cache_key()
        with _lock:
            cached = _tokens.get(key)
        if cached is not None and cached.expires_at - self._clock() > TOKEN_REFRESH_MARGIN_SECONDS:
            return cached.value
        with self._mint_lock:  # parallel calls of one target mint once
            with _lock:
                cached = _tokens.get(key)
            if cached is not None and cached.expires_at - self._clock() > TOKEN_REFRESH_MARGIN_SECONDS:
                return cached.value
            fresh = self._mint()
            with _lock:
                _tokens[key] = fresh
            return fresh.value

    def invalidate(self, value: str) -> None:
        """GitHub refused ``value`` (401): forget it, unless another call already replaced it."""
        key = self._cache_key()
        with _lock:
            cached = _tokens.get(key)
            if cached is not None and cached.value == value:
                del _tokens[key]

    def _mint(self) -> _Token:
        installation = self.installation_id()
        path = f"/app/installations/{installation}/access_tokens"
        body: dict[str, Any] = {"permissions": self._permissions}
        if self._repositories:
            body["repositories"] = self._repositories
        answer = self._call("POST", path, (201,), body).json or {}
        value, expires = answer.get("token"), answer.get("expires_at")
        if not isinstance(value, str) or not value or not isinstance(expires, str):
            raise AppAuthFailed(502, "POST", path, "no token or expires_at in the answer")
        try:
            expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise AppAuthFailed(502, "POST", path, "expires_at is not an ISO 8601 time") from None
        log.info("github app %s: minted an installation token for installation %s (valid %.0f min)",
                 self._auth.app_id, installation, (expires_at - self._clock()) / 60)
        return _Token(value, expires_at)

    def _call(self, method: str, path: str, expect: tuple[int, ...], json: Any = None) -> Response:
        try:
            # Minting twice after a gateway error is harmless: the POST may be retried like a read.
            return self._http.request(method, path, json=json, headers=self._jwt_headers(), expect=expect,
                                      idempotent=True)
        except AppAuthFailed:
            raise
        except HttpError as exc:
            raise AppAuthFailed(exc.status, method, path,
                                f"GitHub App {self._auth.app_id} refused" + (f": {exc.message}" if exc.message
                                                                              else "")) from None


class InstallationClient(HttpClient):
    """An HttpClient that authenticates each request with the current installation token and, when GitHub
    answers 401, mints a new token and sends the request once more (a 401 means it was not executed)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], tokens: Callable[[], InstallationTokens],
                 **options: Any) -> None:
        super().__init__(base_url, headers, **options)
        self._tokens = tokens

    def request(self, method: str, path: str, json: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, expect: Collection[int] = DEFAULT_EXPECT,
                idempotent: bool | None = None) -> Response:
        tokens = self._tokens()
        for attempt in (1, 2):
            token = tokens.token()
            try:
                return super().request(method, path, json=json, params=params,
                                       headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                                       expect=expect, idempotent=idempotent)
            except HttpError as exc:
                if exc.status != 401 or attempt == 2 or isinstance(exc, AppAuthFailed):
                    raise
                log.info("%s %s: installation token refused (401); minting a new one", method, path)
                tokens.invalidate(token)
        raise AssertionError("unreachable")
