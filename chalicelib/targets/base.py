"""The one interface every CI provider implements, and the values that cross it.

A provider is one module in this package that subclasses :class:`CITarget` and decorates it with
``@register``; nothing else changes when a provider is added (see ``registry.py``).
"""

from __future__ import annotations

import abc
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.secret_ref import SecretRef


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

    @property
    def terminal(self) -> bool:
        return self.state is not RunState.PENDING


def key_id_digest(access_key_id: str) -> str:
    """What a verification build reports about the key it used: 16 hex digits of its id's SHA-256."""
    return hashlib.sha256(access_key_id.encode()).hexdigest()[:16]


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


class TargetConfig(BaseModel):
    """Fields every target has; a provider's config model subclasses this with ``provider: Literal[...]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Each provider's model narrows it to its own name (``Literal["github"]``): the union's discriminator.
    provider: str
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    #: Where the CI API token lives (never the token itself).
    token: SecretRef
    secret_names: SecretNames = SecretNames()
    #: Base URL of the provider's API: a self-hosted instance or the local emulator.
    api_url: str

    @field_validator("api_url")
    @classmethod
    def _safe_api_url(cls, value: str) -> str:
        return https_or_loopback(value)

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


class CITarget(abc.ABC):
    """One place in one CI system that holds the key pair and can run a verification build."""

    provider: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]

    def __init__(self, config: TargetConfig, token: str) -> None:
        self.config = config
        self._token = token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.config.id!r})"

    @abc.abstractmethod
    def push(self, credentials: Credentials) -> None:
        """Create or update both CI variables with the provider's secrecy flags. Idempotent."""

    @abc.abstractmethod
    def trigger_verification(self, nonce: str) -> RunRef:
        """Start one verification build that uses the pushed variables; ``nonce`` is unique per try."""

    @abc.abstractmethod
    def run_status(self, run_id: str) -> RunStatus:
        """The authoritative state of a verification build."""

    @classmethod
    @abc.abstractmethod
    def parse_webhook(cls, headers: Mapping[str, str], raw_body: bytes, secret: str) -> WebhookEvent:
        """Verify a delivery over its raw body in constant time, then parse it; else WebhookRejected."""
