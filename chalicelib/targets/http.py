"""A small JSON HTTP client shared by the CI providers: bounded retries, rate-limit aware, leak-free.

Errors and logs name the method, the path (never the query string), the status and at most the
provider's own ``message``; never a header value, the token or a request body (bodies carry secrets).
"""

from __future__ import annotations

import contextlib
import email.utils
import json as jsonlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from chalicelib.errors import RateLimited, TransientError

log = logging.getLogger(__name__)

#: Statuses that mean "not now": retried within the call's budget.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: A retried request never risks doing something twice for these; POST may (a trigger).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Gateway errors: the request may have reached the service and taken effect before the gateway gave up.
AMBIGUOUS_STATUSES = frozenset({502, 503, 504})
#: GitHub's answer when a secondary limit is hit, sometimes without retry-after; the docs then ask for
#: "at least one minute" before the next try.
#: https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
_SECONDARY_LIMIT = re.compile(r"secondary rate limit", re.IGNORECASE)
SECONDARY_LIMIT_WAIT_SECONDS = 60.0
DEFAULT_EXPECT = (200, 201, 202, 204)
MAX_PER_HOST = 4
_MESSAGE_LIMIT = 200
_SENSITIVE_HEADER = re.compile(r"authorization|token|key|secret|cookie", re.IGNORECASE)

_POOL = urllib3.PoolManager(num_pools=16, maxsize=MAX_PER_HOST, retries=False)
_host_slots: dict[str, threading.BoundedSemaphore] = {}
_host_slots_lock = threading.Lock()
#: ``time.monotonic()`` by which every request of the current block must have ended (``time_budget``).
_deadline: ContextVar[float | None] = ContextVar("ci_http_deadline", default=None)


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Every request made in the block, its retries, waits and host slot included, ends within ``seconds``
    (a nested budget never extends an outer one). For callers that must answer in time, like the webhook
    route: a CI API that hangs or keeps answering 503 costs at most the budget, then TransientError."""
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


def _remaining(method: str, path: str) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TransientError(f"{method} {path}: time budget spent")
    return left


def host_semaphore(host: str, limit: int = MAX_PER_HOST) -> threading.BoundedSemaphore:
    """The process-wide limiter for ``host``: Map iterations share it, so one API is not flooded."""
    with _host_slots_lock:
        if host not in _host_slots:
            _host_slots[host] = threading.BoundedSemaphore(limit)
        return _host_slots[host]


@dataclass(frozen=True)
class Response:
    status: int
    #: Case-insensitive (urllib3's HTTPHeaderDict).
    headers: Mapping[str, str]
    #: The decoded JSON body; None when empty or not JSON.
    json: Any
    #: The body as received (a build log is not JSON).
    data: bytes = b""


class HttpError(Exception):
    """A final answer the caller did not expect (4xx, or a 5xx not worth retrying); map it yourself."""

    def __init__(self, status: int, method: str, path: str, message: str | None = None) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        text = f"{method} {path}: HTTP {status}"
        super().__init__(f"{text}: {message}" if message else text)


class OutcomeUnknown(TransientError):
    """A non-idempotent request (a POST that starts a build) got a gateway error: it may have taken effect.

    Never re-sent blindly: the caller first looks for what it would have created (a run carrying the
    nonce), see :func:`send_once`.
    """


def is_rate_limited(status: int, headers: Mapping[str, str], message: str | None = None) -> bool:
    """429, or GitHub's way of saying the same: 403 with no requests left, with a Retry-After, or naming a
    secondary rate limit (which may come without either header)."""
    if status == 429:
        return True
    return status == 403 and (headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
                              or bool(message and _SECONDARY_LIMIT.search(message)))


def send_once(post: Callable[[], Any], lookup: Callable[[], Any], what: str, attempts: int = 2) -> Any:
    """``post()`` a non-idempotent request; after a gateway error, ``lookup()`` what it would have created
    (None: nothing was created) and only then send again, at most ``attempts`` sends in all."""
    for attempt in range(1, attempts + 1):
        try:
            return post()
        except OutcomeUnknown as exc:
            found = lookup()
            if found is not None:
                log.info("%s: the request took effect despite its gateway error; not sent again", what)
                return found
            if attempt == attempts:
                # A plain TransientError: the state machine's retry, whose new nonce cannot match this one.
                raise TransientError(f"{what}: {exc}; nothing was created") from None
            log.info("%s: gateway error and nothing was created; sending once more", what)
    raise AssertionError("unreachable")


def server_wait(headers: Mapping[str, str], now: float, status: int = 429) -> float | None:
    """Seconds the server asked us to wait, from Retry-After or a reset time; None if it did not say.

    A reset time only counts when the limit is spent (remaining 0, or a 429): GitLab sends
    ``RateLimit-ResetTime`` on every response, and a 503 must not wait for a window that is not closed.
    """
    retry_after = headers.get("retry-after")
    if retry_after:
        seconds = _seconds_or_date(retry_after, now)
        if seconds is not None:
            return seconds
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        return _reset_wait(headers["x-ratelimit-reset"], now)
    if headers.get("ratelimit-remaining") == "0" and headers.get("ratelimit-reset"):
        return _reset_wait(headers["ratelimit-reset"], now)
    if headers.get("ratelimit-resettime") and (status == 429 or headers.get("ratelimit-remaining") == "0"):
        return _seconds_or_date(headers["ratelimit-resettime"], now)
    return None


#: A reset below this is a number of seconds, not a time: as a Unix time it would be in 2001.
_LATEST_DELTA_RESET = 1_000_000_000.0


def _reset_wait(value: str, now: float) -> float | None:
    """The same header names carry two meanings: GitHub's ``x-ratelimit-reset`` and GitLab's
    ``RateLimit-Reset`` are Unix times (docs/ci-providers/github.md, gitlab.md), CircleCI's ``X-RateLimit-Reset``
    and ``RateLimit-Reset`` the seconds until the window resets (docs/ci-providers/circleci.md). No window
    lasts 30 years, so the size of the number tells which it is."""
    try:
        reset = float(value)
    except ValueError:
        return None
    return max(0.0, reset if reset < _LATEST_DELTA_RESET else reset - now)


def _seconds_or_date(value: str, now: float) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class HttpClient:
    """JSON over HTTPS to one API. Thread-safe; share one per provider instance."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_wait_seconds: float = 20.0,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rate_limit_wait_seconds: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "ci-key-rotator", **(headers or {})}
        self._timeout = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
        self._max_attempts = max(1, max_attempts)
        self._max_wait = max_wait_seconds
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._clock = clock
        #: What a rate-limit answer without a reset time means (Bitbucket's rolling hour); None: back off.
        self._rate_limit_wait = rate_limit_wait_seconds
        self._slots = host_semaphore(urlsplit(self.base_url).netloc)
        #: When the server last asked, on an answer it did serve, for a pause before the next request.
        self._not_before = 0.0

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Collection[int] = DEFAULT_EXPECT,
        idempotent: bool | None = None,
    ) -> Response:
        """Send one logical request; retries throttling and 502/503/504 within the budget.

        A gateway error on a non-idempotent request (POST, unless ``idempotent=True`` says the provider's
        POST is an upsert or refuses duplicates) is not retried: OutcomeUnknown. A rate limit that asks
        for longer than this client may sleep raises RateLimited with the provider's wait.
        """
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        url = self.base_url + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        body = None if json is None else jsonlib.dumps(json).encode()
        all_headers = {**self._headers, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        scrub = _Scrubber(all_headers, json)
        waited = self._pause(method, path)
        for attempt in range(1, self._max_attempts + 1):
            response = self._send(method, url, path, body, all_headers)
            if response.status in expect:
                self._note_pause(response)
                return response
            message = scrub(_provider_message(response.json))
            limited = is_rate_limited(response.status, response.headers, message)
            if not limited and response.status in AMBIGUOUS_STATUSES and not safe:
                raise OutcomeUnknown(f"{method} {path}: HTTP {response.status}" + _suffix(message))
            if not limited and response.status not in RETRY_STATUSES:
                if response.status >= 500:
                    raise TransientError(f"{method} {path}: HTTP {response.status}" + _suffix(message))
                raise HttpError(response.status, method, path, message)
            delay = self._delay(response, attempt, message)
            left = _remaining(method, path)
            gives_up = attempt == self._max_attempts or waited + delay > self._max_wait
            if limited and gives_up and (left is None or delay < left):
                # Not a Lambda's job to sleep through a long window: the state machine waits instead.
                raise RateLimited(
                    f"{method} {path}: HTTP {response.status}, rate limited; the provider asks to wait "
                    f"{delay:.0f}s" + _suffix(message), retry_after_seconds=delay)
            if gives_up or (left is not None and delay >= left):
                raise TransientError(
                    f"{method} {path}: HTTP {response.status}, gave up after {attempt} attempt(s) and "
                    f"{waited:.1f}s of waiting (server or backoff asks {delay:.1f}s more)" + _suffix(message)
                )
            log.info("%s %s: HTTP %s, retrying in %.1fs (attempt %d)", method, path, response.status,
                     delay, attempt)
            self._sleep(delay)
            waited += delay
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _note_pause(self, response: Response) -> None:
        """Azure DevOps delays the requests of an identity over its limit and still serves them, with a
        ``Retry-After``: "If you detect a Retry-After header in any response, wait until that amount of time
        has passed before sending another request" (docs/ci-providers/azure_devops.md); ignoring it leads on
        to 429s."""
        retry_after = response.headers.get("retry-after")
        now = self._clock()
        seconds = _seconds_or_date(retry_after, now) if retry_after else None
        if seconds:
            self._not_before = max(self._not_before, now + seconds)

    def _pause(self, method: str, path: str) -> float:
        """Sleep out a pause a served answer asked for (seconds slept); one longer than this client may sleep
        is the state machine's to wait: RateLimited, with nothing sent."""
        pause = self._not_before - self._clock()
        if pause <= 0:
            return 0.0
        left = _remaining(method, path)
        if pause > self._max_wait or (left is not None and pause >= left):
            raise RateLimited(f"{method} {path}: not sent, the provider asked for a pause of {pause:.0f}s",
                              retry_after_seconds=pause)
        log.info("%s %s: pausing %.1fs as the provider's last answer asked", method, path, pause)
        self._sleep(pause)
        return pause

    def _send(self, method: str, url: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        left = _remaining(method, path)
        timeout = self._timeout
        if left is not None:
            connect, read = self._timeout.connect_timeout, self._timeout.read_timeout
            timeout = urllib3.Timeout(total=left,
                                      connect=min(left, connect) if isinstance(connect, int | float) else left,
                                      read=min(left, read) if isinstance(read, int | float) else left)
        if not self._slots.acquire(timeout=-1 if left is None else left):
            raise TransientError(f"{method} {path}: time budget spent waiting for a connection slot")
        try:
            raw = _POOL.request(method, url, body=body, headers=headers, timeout=timeout,
                                retries=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            # The exception text can embed the URL with its query; keep to the class name.
            raise TransientError(f"{method} {path}: {type(exc).__name__}") from None
        finally:
            self._slots.release()
        return Response(raw.status, raw.headers, _decode(raw.data), raw.data)

    def _delay(self, response: Response, attempt: int, message: str | None) -> float:
        asked = server_wait(response.headers, self._clock(), response.status)
        if asked is not None:
            return asked
        if response.status == 403 and message and _SECONDARY_LIMIT.search(message):
            return SECONDARY_LIMIT_WAIT_SECONDS
        if response.status == 429 and self._rate_limit_wait is not None:
            return float(self._rate_limit_wait)
        # Full jitter keeps parallel Map iterations from retrying in lock step.
        return float(self._backoff) * (2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


class _Scrubber:
    """Removes credentials and body strings from a provider message: some APIs echo what they refuse."""

    def __init__(self, headers: Mapping[str, str], body: Any) -> None:
        secrets = [v for k, v in headers.items() if _SENSITIVE_HEADER.search(k)]
        self._needles = sorted(
            {v for v in _strings(body) if len(v) >= 6}
            | {part for v in secrets for part in (v, v.split(" ")[-1]) if len(part) >= 6},
            key=len,
            reverse=True,
        )

    def __call__(self, message: str | None) -> str | None:
        if not message:
            return message
        for needle in self._needles:
            message = message.replace(needle, "***")
        return message


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return jsonlib.loads(data)
    except ValueError:
        return None


def _provider_message(body: Any) -> str | None:
    if not isinstance(body, Mapping):
        return None
    for key in ("message", "error", "error_message"):  # GitHub/GitLab, Bitbucket, Travis
        value = body.get(key)
        if isinstance(value, Mapping):
            value = value.get("message")
        if isinstance(value, str) and value:
            return value[:_MESSAGE_LIMIT]
    return None


def _suffix(message: str | None) -> str:
    return f": {message}" if message else ""
