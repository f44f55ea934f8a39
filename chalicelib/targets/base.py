"""The one interface every CI provider implements, and the values that cross it.

A provider is one module in this package that subclasses :class:`CITarget` and decorates it with
``@register``; nothing else changes when a provider is added (see ``registry.py``).
"""

from __future__ import annotations

import abc
import enum
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.errors import ConfigError, TargetPushFailed
from chalicelib.federation import OidcSettings
from chalicelib.secret_ref import SecretRef

if TYPE_CHECKING:  # urllib3 is loaded when a target is built, not when a config is validated (cold start)
    from chalicelib.pacing import RateBudget
    from chalicelib.targets.http import HttpClient


class RunState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class RunStatus:
    """A verification build's state, mapped from the provider's own vocabulary."""

    state: RunState
    #: The provider's words, e.g. ``completed/failure``; shown in alerts.
    detail: str
    url: str | None = None
    #: ``key_id_digest`` of the access key the build authenticated with, when the provider can report it
    #: (CI masks the id itself as a secret variable); None when it cannot tell.
    used_key_sha256: str | None = None
    #: The assumed-role session ARN a build reported authenticating with through OIDC (graduation's proof),
    #: when the provider can report it; None otherwise.
    used_role: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state is not RunState.PENDING


def key_id_digest(access_key_id: str) -> str:
    """What a verification build reports about the key it used: 16 hex digits of its id's SHA-256."""
    return hashlib.sha256(access_key_id.encode()).hexdigest()[:16]


#: What the verification files (templates/verify/) report about how they authenticated, one line each: the key
#: files ``::notice title=rotate-verify::access key sha256 <digest>``, the OIDC files ``... oidc role <assumed-role
#: ARN>``. GitHub shows them as check-run annotations; a CI without an annotations API carries the lines in a
#: step's log (Bitbucket), a job's log (GitLab) or a stored artifact (CircleCI).
IDENTITY_NOTICE = re.compile(r"^::notice title=rotate-verify::(.*?)\s*$", re.MULTILINE)
_KEY_REPORT = re.compile(r"access key sha256 ([0-9a-f]{16})")
_ROLE_REPORT = re.compile(r"oidc role (arn:[\w-]+:sts::\d{12}:assumed-role/[\w+=,.@-]+/[\w+=,.@-]+)")


def identity_in_log(text: str) -> tuple[str | None, str | None]:
    """(key digest, assumed-role session ARN) the first ``IDENTITY_NOTICE`` lines of a build's text report,
    None for what it does not report; any other line is ignored."""
    return identity_in_messages(IDENTITY_NOTICE.findall(text))


def identity_in_messages(messages: Iterable[str]) -> tuple[str | None, str | None]:
    """The same from the notices' messages alone (GitHub serves them as check-run annotations): the first
    ``access key sha256 <digest>`` and the first ``oidc role <ARN>``; other messages are ignored."""
    key: str | None = None
    role: str | None = None
    for message in messages:
        found, assumed = _KEY_REPORT.fullmatch(message), _ROLE_REPORT.fullmatch(message)
        key = key or (found.group(1) if found else None)
        role = role or (assumed.group(1) if assumed else None)
    return key, role


@dataclass(frozen=True)
class RunRef:
    """What triggering a verification build returns: the id to poll and to match webhooks on."""

    run_id: str
    url: str | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook delivery about a build."""

    delivery_id: str
    #: None for deliveries that concern no run (a ping, another event type).
    run_id: str | None
    #: None while the run is not finished.
    status: RunStatus | None


@dataclass(frozen=True)
class Credentials:
    """An access key pair in memory, on its way from the escrow to a target. Never log it."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # keeps the secret out of tracebacks and debug output
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"

    __str__ = __repr__


class SecretNames(BaseModel):
    """Names of the two CI variables that carry the key pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: str = Field("AWS_ACCESS_KEY_ID", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    secret_access_key: str = Field("AWS_SECRET_ACCESS_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

    @model_validator(mode="after")
    def _two_variables(self) -> SecretNames:
        # Some CIs compare names case-insensitively (GitHub stores them upper-case): one variable would end up
        # holding the secret where the pipeline reads the key id, or the other way round.
        if self.access_key_id.upper() == self.secret_access_key.upper():
            raise ValueError(f"access_key_id and secret_access_key name the same variable "
                             f"{self.access_key_id!r}: the pipeline needs two")
        return self


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def https_or_loopback(url: str) -> str:
    """A URL a CI token may be sent to: https, or plain http only on this machine (the emulators)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return url.rstrip("/")
    raise ValueError("must be an https:// URL (http:// only on 127.0.0.1/localhost): the token is sent there")


@dataclass(frozen=True)
class StoredCredential:
    """Which config field names the secret a target authenticates with, and where that secret is stored."""

    field: str
    ref: SecretRef


class TargetConfig(BaseModel):
    """Fields every target has; a provider's config model subclasses this with ``provider: Literal[...]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Each provider's model narrows it to its own name (``Literal["github"]``): the union's discriminator.
    provider: str
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    #: Where the CI API token lives (never the token itself). Required (no default) unless a provider's model
    #: offers another credential and says so with ``token_optional`` (GitHub's ``app``).
    token: SecretRef | None
    secret_names: SecretNames = SecretNames()
    #: Base URL of the provider's API: a self-hosted instance or the local emulator.
    api_url: str
    #: What graduating this target to OIDC federation needs beyond its key config (chalicelib/federation.py).
    oidc: OidcSettings | None = None

    #: True in a provider model that validates its own alternative to ``token`` (and overrides ``credential``).
    token_optional: ClassVar[bool] = False

    @field_validator("api_url")
    @classmethod
    def _safe_api_url(cls, value: str) -> str:
        return https_or_loopback(value)

    @model_validator(mode="after")
    def _token_given(self) -> TargetConfig:
        if self.token is None and not self.token_optional:
            raise ValueError("token must name where the CI API token is stored ('secretsmanager:<name>' or "
                             "'ssm:<parameter name>')")
        return self

    def credential(self) -> StoredCredential:
        """The stored secret this target authenticates with (chalicelib.deps resolves it and hands the value
        to the provider's constructor)."""
        if self.token is None:  # _token_given refuses this for providers without an alternative
            raise ConfigError(f"target {self.id!r} has no token")
        return StoredCredential("token", self.token)

    def variable_store(self) -> tuple[str, ...]:
        """Where this target's variables live, as far as another target could write the same ones: two
        targets with the same store and a common variable name overwrite each other's key."""
        return (self.id,)

    def variables_written(self) -> list[tuple[str, ...]]:
        """One entry per CI variable this target writes: provider, API, store, variable name."""
        store = (self.provider, self.api_url.lower(), *self.variable_store())
        return [(*store, name.upper()) for name in (self.secret_names.access_key_id,
                                                    self.secret_names.secret_access_key)]


class WebhookRejected(Exception):
    """A webhook whose signature or shape is wrong; the route answers 401/400 and changes nothing."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ProviderSummary:
    """How a provider does each job, in a sentence each: the README's provider table row
    (deploy/readme_tables.py renders it; the fields column comes from ``config_model``)."""

    secret_store: str
    verification: str
    webhook: str


class HttpOptions(TypedDict, total=False):
    """The retry policy every provider's API client shares; tests shorten it."""

    #: Injected so tests do not wait out backoffs and Retry-After.
    sleep: Callable[[float], None]
    #: Longest a single call may spend retrying (429/5xx backoff, Retry-After) before it gives up.
    max_wait_seconds: float
    #: Per-request socket timeout.
    timeout: float


class CITarget(abc.ABC):
    """One place in one CI system that holds the key pair and can run a verification build.

    A template: the push loop with its rollback rule, the webhook preamble, the config type check and the
    API client's retry policy are here, once. A provider supplies its API mapping: ``_api_headers``,
    ``_write_variable`` and ``_delete_variable`` (and ``_prepare_push`` when it lists before writing),
    ``trigger_verification``, ``run_status``, ``_verify_signature`` and ``_parse_event``.
    """

    provider: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]
    summary: ClassVar[ProviderSummary]
    #: What the webhook config holds for this provider, in "no webhook <it> configured" errors.
    webhook_secret_kind: ClassVar[str] = "secret"
    #: False where the provider offers no signature over the body, only a shared credential on each delivery
    #: (Azure DevOps service hooks: Basic auth): a delivery then proves who sent it, not what the body says,
    #: which is why every verdict is confirmed through ``run_status`` before it counts (chalicelib/webhooks.py).
    webhook_signs_body: ClassVar[bool] = True
    #: Headers that carry the delivery id, first present wins; empty when the id comes from the body.
    delivery_headers: ClassVar[tuple[str, ...]] = ()
    #: Its ``run_status`` reports what a passed build authenticated with (``used_key_sha256``/``used_role``):
    #: graduation then requires the OIDC report, not only a passed build without the key variables.
    reports_identity: ClassVar[bool] = False
    #: Longest Retry-After the client waits in-line; longer waits are parked (None: the client's default).
    rate_limit_wait_seconds: ClassVar[float | None] = None
    #: The provider's documented per-token limits and what one rotation spends against them; the scheduler
    #: spreads a fleet sharing a token with it (chalicelib/pacing.py). None: no documented limit, no pacing.
    rate_budget: ClassVar[RateBudget | None] = None

    def __init__(self, config: TargetConfig, token: str, *, sleep: Callable[[float], None] = time.sleep,
                 max_wait_seconds: float = 20.0, timeout: float = 10.0) -> None:
        # A config of another provider would send this provider's calls to the wrong API shape.
        if not isinstance(config, self.config_model):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_model.__name__}, "
                              f"not {type(config).__name__}")
        self.config = config
        self._token = token
        self._sleep = sleep
        self._http = self._client(timeout=timeout, max_wait_seconds=max_wait_seconds)

    def _client(self, *, timeout: float, max_wait_seconds: float) -> HttpClient:
        from chalicelib.targets.http import HttpClient

        return HttpClient(self.config.api_url, self._api_headers(), timeout=timeout,
                          max_wait_seconds=max_wait_seconds, sleep=self._sleep,
                          rate_limit_wait_seconds=self.rate_limit_wait_seconds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.config.id!r})"

    @abc.abstractmethod
    def _api_headers(self) -> dict[str, str]:
        """How this provider's API authenticates the token (and which API version it speaks)."""

    # -- push ---------------------------------------------------------------------------------------

    def push(self, credentials: Credentials) -> None:
        """Create or update both CI variables with the provider's secrecy flags. Idempotent.

        On failure ``TargetPushFailed.changed`` says whether the target may differ from before: a refused
        first write (or a refused listing) leaves it as it was, and rollback then has nothing to restore
        there; once one variable is written, it must.
        """
        names = self.config.secret_names
        self.set_variables({names.access_key_id: credentials.access_key_id,
                            names.secret_access_key: credentials.secret_access_key})

    def set_variables(self, values: Mapping[str, str]) -> None:
        """Create or update these variables in order, with the same secrecy flags and ``changed`` rule as
        ``push`` (graduation writes the role ARN this way)."""
        written = False
        try:
            prepared = self._prepare_push()
            for name, value in values.items():
                self._write_variable(name, value, prepared)
                written = True
        except TargetPushFailed as exc:
            exc.changed = written
            raise

    def delete_variables(self, names: Iterable[str]) -> None:
        """Remove these variables; one that is already absent is not an error (idempotent). On failure
        ``TargetPushFailed.changed`` says whether one was removed before it."""
        removed = False
        try:
            prepared = self._prepare_push()
            for name in names:
                self._delete_variable(name, prepared)
                removed = True
        except TargetPushFailed as exc:
            exc.changed = removed
            raise

    @abc.abstractmethod
    def _delete_variable(self, name: str, prepared: Any) -> None:
        """Delete one variable, treating "not found" as done; TargetPushFailed if the provider refuses.

        "Not found" must mean the variable, not a project or store the token cannot see (several APIs answer
        404 for both): a delete that cannot tell is a refusal."""

    def _prepare_push(self) -> Any:
        """Read what both writes need (existing variables, org fields) before the first; passed to each."""
        return None

    @abc.abstractmethod
    def _write_variable(self, name: str, value: str, prepared: Any) -> None:
        """Create or update one variable; TargetPushFailed if the provider refuses."""

    # -- verification -------------------------------------------------------------------------------

    @abc.abstractmethod
    def trigger_verification(self, nonce: str) -> RunRef:
        """Start one verification build that uses the pushed variables; ``nonce`` is unique per try."""

    @abc.abstractmethod
    def run_status(self, run_id: str) -> RunStatus:
        """The authoritative state of a verification build."""

    # -- webhook ------------------------------------------------------------------------------------

    @classmethod
    def parse_webhook(cls, headers: Mapping[str, str], raw_body: bytes, secret: str) -> WebhookEvent:
        """Verify a delivery over its raw body in constant time, then parse it; else WebhookRejected.

        Nothing from the body is read before its signature is checked; a delivery without an id is refused
        (the id is what makes a redelivery harmless).
        """
        lower = {k.lower(): v for k, v in headers.items()}
        if not secret:
            raise WebhookRejected(f"no webhook {cls.webhook_secret_kind} configured for {cls.provider}", 401)
        delivery = cls._verify_signature(lower, raw_body, secret)
        if delivery is None and cls.delivery_headers:
            delivery = next((lower[h.lower()] for h in cls.delivery_headers if lower.get(h.lower())), None)
            if not delivery:
                raise WebhookRejected("missing " + " / ".join(cls.delivery_headers), 400)
        return cls._parse_event(lower, raw_body, delivery)

    @classmethod
    @abc.abstractmethod
    def _verify_signature(cls, lower_headers: Mapping[str, str], raw_body: bytes, secret: str) -> str | None:
        """WebhookRejected (401) unless the delivery is signed with ``secret``; the delivery id when the
        signature scheme itself carries one, else None."""

    @classmethod
    @abc.abstractmethod
    def _parse_event(cls, lower_headers: Mapping[str, str], raw_body: bytes, delivery: str | None) -> WebhookEvent:
        """The verified delivery as an event; ``delivery`` is None only for providers whose id is in the body."""
