"""``POST /webhooks/{provider}``: bounded input, authenticate, de-duplicate, then a bounded confirmation.

The CI waits for the answer (GitHub gives up after 10 s and disables hooks that keep failing; API Gateway
cuts the integration at 29 s), so the route does a fixed amount of work: limits, signature, one conditional
write, and at most ``CONFIRM_BUDGET_SECONDS`` asking the CI's status API. If the status API is slow or
down, the delivery is acknowledged (202) and the poller confirms the run later: a webhook is only ever a
hint, and a verification is resolved only by what the status API says.

Input rules (each refusal is a 4xx and changes nothing):

- body at most ``MAX_BODY_BYTES`` (413), each header value at most ``MAX_HEADER_VALUE_BYTES`` (431);
- JSON nested at most ``MAX_JSON_DEPTH`` deep, counted without parsing (400), so no parser recurses
  on hostile nesting (a form-encoded body, Travis's, is checked field by field);
- **duplicated headers**: API Gateway's REST ``headers`` keeps the last value of a repeated header, some
  servers the first; to behave the same everywhere, a request that repeats any header a provider reads
  (``WEBHOOK_HEADERS``) is refused (400). The route gets every value from ``multiValueHeaders``, which
  API Gateway and the local runtime's server both provide;
- an unknown provider and a provider with no webhook secret configured get the same 404.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from chalicelib import log_safety
from chalicelib.deps import Deps
from chalicelib.errors import ConfigError, RotatorError
from chalicelib.observability import logger
from chalicelib.targets.base import WebhookRejected
from chalicelib.targets.http import time_budget
from chalicelib.targets.registry import provider as provider_class
from chalicelib.verification import confirm_and_resolve

#: CI webhooks are a few KiB; API Gateway would take 10 MB.
MAX_BODY_BYTES = 1024 * 1024
#: Signatures, delivery ids and event names are short; API Gateway allows 10 KiB for all headers together.
MAX_HEADER_VALUE_BYTES = 4096
#: CI payloads nest less than 10 deep; far below any parser's recursion limit.
MAX_JSON_DEPTH = 64
#: Longer delivery ids are stored as their sha256: DynamoDB refuses partition keys over 2048 bytes.
MAX_DELIVERY_KEY_BYTES = 256
#: The most the route spends asking the CI's status API (all requests, retries and waits together).
CONFIRM_BUDGET_SECONDS = 3.0
#: Every header a provider's parser reads (chalicelib/targets/*.py ``parse_webhook``).
WEBHOOK_HEADERS = frozenset({
    "content-type",
    "x-hub-signature-256", "x-github-delivery", "x-github-event",  # github
    "x-gitlab-token", "x-gitlab-event", "x-gitlab-event-uuid", "idempotency-key",  # gitlab
    "webhook-id", "webhook-signature", "webhook-timestamp",  # gitlab (Standard Webhooks)
    "circleci-signature",  # circleci
    "signature",  # travis
    "x-hub-signature", "x-request-uuid", "x-event-key",  # bitbucket
})
#: One answer for "no such provider" and "not configured here": the difference is not the sender's business.
NOT_FOUND: tuple[int, dict[str, Any]] = (404, {"error": "no webhook endpoint for this provider"})

_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def handle(deps: Deps, provider: str, headers: Mapping[str, str], raw_body: bytes,
           multi_value_headers: Mapping[str, Sequence[str]] | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). Nothing changes unless the limits hold and the signature is valid."""
    log_safety.enforce()
    refused = check_limits(headers, multi_value_headers, raw_body)
    if refused is not None:
        logger.warning("webhook refused", extra={"provider": provider[:64], "reason": refused[1]["error"]})
        return refused
    try:
        cls = provider_class(provider)
    except ConfigError:
        return NOT_FOUND
    try:
        secret = deps.webhook_secret(provider)
    except ConfigError as exc:
        # The sender retries 5xx deliveries; the poller covers the runs in the meantime.
        logger.error("rotation configuration unusable; webhook not processed", extra={"error": str(exc)})
        return 503, {"error": "the rotator's configuration is invalid; see its logs"}
    if secret is None:
        return NOT_FOUND
    try:
        event = cls.parse_webhook(headers, raw_body, secret)
    except WebhookRejected as exc:
        logger.warning("webhook rejected", extra={"provider": provider, "reason": exc.reason})
        return exc.status, {"error": exc.reason}
    if not deps.ledger.claim_delivery(provider, delivery_key(event.delivery_id),
                                      timedelta(seconds=deps.settings.delivery_ttl_seconds)):
        logger.info("duplicate webhook delivery ignored", extra={"provider": provider,
                                                                  "delivery_id": event.delivery_id[:128]})
        return 200, {"status": "duplicate"}
    if event.run_id is None or event.status is None:
        return 202, {"status": "ignored"}
    return _confirm(deps, provider, event.run_id)


def _confirm(deps: Deps, provider: str, run_id: str) -> tuple[int, dict[str, Any]]:
    """One bounded look at the status API; whatever it cannot settle now is the poller's."""
    try:
        with time_budget(CONFIRM_BUDGET_SECONDS):
            outcome = confirm_and_resolve(deps, provider, run_id, source="webhook")
    except RotatorError as exc:
        logger.warning("webhook accepted; the poller confirms its run", extra={
            "provider": provider, "run_id": run_id[:128], "error": type(exc).__name__})
        return 202, {"status": "accepted"}
    return (202 if outcome == "pending" else 200), {"status": outcome}


def check_limits(headers: Mapping[str, str], multi_value_headers: Mapping[str, Sequence[str]] | None,
                 raw_body: bytes) -> tuple[int, dict[str, Any]] | None:
    """The refusal for a request outside the input rules (module docstring), or None."""
    if len(raw_body) > MAX_BODY_BYTES:
        return 413, {"error": "body too large"}
    every_value = list(headers.values())
    for name, values in (multi_value_headers or {}).items():
        values = list(values or [])
        if name.lower() in WEBHOOK_HEADERS and len(values) > 1:
            return 400, {"error": f"header {name.lower()} is repeated"}
        every_value.extend(values)
    if any(len(str(v).encode("utf-8", "surrogateescape")) > MAX_HEADER_VALUE_BYTES for v in every_value):
        return 431, {"error": "header value too large"}
    try:
        candidates = _json_candidates(headers, raw_body)
    except ValueError:  # more form fields than any CI sends
        return 400, {"error": "too many form fields"}
    if any(json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH for text in candidates):
        return 400, {"error": "body nested too deeply"}
    return None


def _json_candidates(headers: Mapping[str, str], raw_body: bytes) -> list[bytes]:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if "x-www-form-urlencoded" not in content_type.lower():
        return [raw_body]
    # Fields are percent-encoded: their brackets show only once decoded.
    fields = parse_qsl(raw_body.decode("latin-1"), keep_blank_values=True, max_num_fields=1000,
                       encoding="latin-1")
    return [raw_body, *(value.encode("latin-1") for _, value in fields)]


def json_depth(text: bytes, stop_above: int | None = None) -> int:
    """How deep ``[``/``{`` nest outside JSON strings; linear, no recursion, no parsing. Stops counting
    once past ``stop_above``."""
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(text):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if stop_above is not None and deepest > stop_above:
                return deepest
        elif char in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return deepest


def delivery_key(delivery_id: str) -> str:
    """The ledger key of a delivery id: itself, or its sha256 when long (or shaped like one of ours)."""
    if len(delivery_id.encode("utf-8", "surrogateescape")) <= MAX_DELIVERY_KEY_BYTES \
            and not delivery_id.startswith("sha256:"):
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode("utf-8", "surrogateescape")).hexdigest()
