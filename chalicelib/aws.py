"""boto3 clients shared by the handlers, signed by the identity of the Lambda that is running.

Endpoints come from the environment (``AWS_ENDPOINT_URL``), so the same code talks to real AWS or to the
embedded moto server. Clients are thread-safe and created once per container and identity.

**Identity.** In AWS each Lambda has its own role and the environment's credentials are that role's. The
local runtime runs every Lambda in one process, so it sets the *current identity* (``acting_as``) for
the duration of each handler: a session of that function's own moto execution role carrying exactly its
``.chalice/policy-<function>.json``. ``client()``, ``session()``, ``secrets_provider()`` and
``ssm_provider()`` sign with it, so a permission missing from a policy file fails locally as it would in
AWS. Outside a handler (tests' direct calls, the operator CLI) the current identity is None and the
environment's default credentials are used. The identity is a ``ContextVar``: each thread (a Map
iteration, a webhook request) has its own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib.errors import TransientError

_lock = threading.RLock()
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)

#: Error codes that mean "try again later", not "this is wrong".
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
    }
)


@dataclass(frozen=True)
class Identity:
    """Credentials a Lambda's AWS calls are signed with: a session of its execution role (locally too)."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


_current: ContextVar[Identity | None] = ContextVar("ci_key_rotator_identity", default=None)
_sessions: dict[Identity | None, boto3.session.Session] = {}
_clients: dict[tuple[Identity | None, str], Any] = {}
_resources: dict[tuple[Identity | None, str], Any] = {}
_providers: dict[tuple[Identity | None, str], Any] = {}
_observers: list[Callable[[Identity | None, str], None]] = []


@contextmanager
def acting_as(identity: Identity | None) -> Iterator[None]:
    """Sign every AWS call made in this context (this thread) with ``identity``; None = the default."""
    token = _current.set(identity)
    try:
        yield
    finally:
        _current.reset(token)


def current_identity() -> Identity | None:
    return _current.get()


def session() -> boto3.session.Session:
    """The boto3 session of the current identity (the environment's default chain when there is none)."""
    identity = _current.get()
    with _lock:  # boto3's session and client creation is not thread-safe; use is
        cached = _sessions.get(identity)
        if cached is None:
            # One model loader for every identity: each session would otherwise parse the service
            # models again (a few hundred ms per identity).
            core = botocore.session.get_session()
            core.register_component("data_loader", _loader())
            if identity is None:
                cached = boto3.session.Session(botocore_session=core)
            else:
                cached = boto3.session.Session(
                    botocore_session=core,
                    aws_access_key_id=identity.access_key_id,
                    aws_secret_access_key=identity.secret_access_key,
                    aws_session_token=identity.session_token,
                )
            paths = cached._loader.search_paths  # boto3 appends its data path to the shared loader
            paths[:] = list(dict.fromkeys(paths))
            if _observers:
                cached.events.register("before-call", functools.partial(_notify, identity))
            _sessions[identity] = cached
        return cached


_shared: dict[str, Any] = {}


def _loader() -> Any:
    if "loader" not in _shared:
        _shared["loader"] = botocore.session.get_session().get_component("data_loader")
    return _shared["loader"]


def observe_calls(callback: Callable[[Identity | None, str], None]) -> None:
    """Call ``callback(identity, "service:Operation")`` before every AWS call (the local runtime records
    what each function calls, for the least-privilege tests). Applies to sessions made from now on."""
    _observers.append(callback)
    reset_clients()


def _notify(identity: Identity | None, model: Any = None, **_: Any) -> None:
    if model is None:
        return
    action = f"{model.service_model.signing_name}:{model.name}"
    for callback in list(_observers):
        callback(identity, action)


def client(service: str) -> Any:
    identity = _current.get()
    with _lock:
        cached = _clients.get((identity, service))
        if cached is None:
            cached = session().client(service, config=_CONFIG)
            _clients[(identity, service)] = cached
        return cached


def resource(service: str) -> Any:
    """A boto3 resource (the ledger's DynamoDB table) of the current identity."""
    identity = _current.get()
    with _lock:
        cached = _resources.get((identity, service))
        if cached is None:
            cached = session().resource(service)
            _resources[(identity, service)] = cached
        return cached


def _provider(kind: str) -> Any:
    from aws_lambda_powertools.utilities import parameters

    identity = _current.get()
    with _lock:
        cached = _providers.get((identity, kind))
        if cached is None:
            if kind == "secretsmanager":
                cached = parameters.SecretsProvider(boto3_client=client("secretsmanager"))
            else:
                cached = parameters.SSMProvider(boto3_client=client("ssm"))
            _providers[(identity, kind)] = cached
        return cached


def secrets_provider() -> Any:
    """powertools' Secrets Manager provider for the current identity; its cache is per identity."""
    return _provider("secretsmanager")


def ssm_provider() -> Any:
    """powertools' SSM Parameter Store provider for the current identity; its cache is per identity."""
    return _provider("ssm")


def reset_clients() -> None:
    """Forget cached sessions, clients and parameter caches (after the environment changes)."""
    with _lock:
        _clients.clear()
        _resources.clear()
        _providers.clear()
        _sessions.clear()


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (EndpointConnectionError, ReadTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return False


def reraise_transient(exc: BaseException) -> None:
    """Turn a retryable AWS failure into TransientError so the state machine retries it."""
    if is_transient(exc):
        raise TransientError(f"AWS call failed transiently: {type(exc).__name__} {error_code(exc) if isinstance(exc, ClientError) else ''}".strip()) from exc
