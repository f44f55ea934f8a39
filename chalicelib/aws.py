"""boto3 clients shared by the handlers.

Endpoints come from the environment (``AWS_ENDPOINT_URL``), so the same code talks to real AWS or to the
embedded moto server. Clients are thread-safe and created once per container.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib.errors import TransientError

_lock = threading.Lock()
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


@cache
def _cached(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


def client(service: str) -> Any:
    with _lock:  # boto3's client creation is not thread-safe; use is
        return _cached(service)


def reset_clients() -> None:
    """Forget cached clients (after the environment's endpoint or credentials change)."""
    with _lock:
        _cached.cache_clear()


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
