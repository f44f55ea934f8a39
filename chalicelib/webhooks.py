"""``POST /webhooks/{provider}``: authenticate the delivery, de-duplicate it, resolve the build."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from chalicelib.deps import Deps
from chalicelib.errors import ConfigError
from chalicelib.observability import logger
from chalicelib.targets.base import WebhookRejected
from chalicelib.targets.registry import provider as provider_class
from chalicelib.verification import confirm_and_resolve

#: Deliveries larger than this are refused before any parsing (CI webhooks are a few KiB).
MAX_BODY_BYTES = 1024 * 1024


def handle(deps: Deps, provider: str, headers: Mapping[str, str], raw_body: bytes) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). Nothing changes unless the signature over the raw body is valid."""
    if len(raw_body) > MAX_BODY_BYTES:
        return 413, {"error": "body too large"}
    try:
        cls = provider_class(provider)
    except ConfigError:
        return 404, {"error": "unknown provider"}
    try:
        secret = deps.webhook_secret(provider)
    except ConfigError as exc:
        # The sender retries 5xx deliveries; the poller covers the runs in the meantime.
        logger.error("rotation configuration unusable; webhook not processed", extra={"error": str(exc)})
        return 503, {"error": "the rotator's configuration is invalid; see its logs"}
    if secret is None:
        return 404, {"error": f"webhooks are not configured for {provider}"}
    try:
        event = cls.parse_webhook(headers, raw_body, secret)
    except WebhookRejected as exc:
        logger.warning("webhook rejected", extra={"provider": provider, "reason": exc.reason})
        return exc.status, {"error": exc.reason}
    if not deps.ledger.claim_delivery(provider, event.delivery_id,
                                      timedelta(seconds=deps.settings.delivery_ttl_seconds)):
        logger.info("duplicate webhook delivery ignored", extra={"provider": provider,
                                                                  "delivery_id": event.delivery_id})
        return 200, {"status": "duplicate"}
    if event.run_id is None or event.status is None:
        return 202, {"status": "ignored"}
    outcome = confirm_and_resolve(deps, provider, event.run_id, source="webhook")
    return 200, {"status": outcome}
