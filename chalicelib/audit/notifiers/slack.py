"""Slack incoming webhook with Block Kit, built as dicts (never templated JSON) within Slack's limits."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.masking import mask_text
from chalicelib.audit.notifiers.base import NotifierError
from chalicelib.secret_ref import SecretRef

HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
BLOCKS_MAX = 50
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
#: Slack truncates top-level text at 40,000; a notification preview needs far less.
FALLBACK_TEXT_MAX = 3000

_EMOJI = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.HIGH: ":red_circle:",
    Severity.MEDIUM: ":large_orange_circle:",
    Severity.LOW: ":large_yellow_circle:",
    Severity.INFO: ":information_source:",
}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")

# slack_sdk logs the webhook URL at DEBUG and on retries at INFO; give it a logger that says nothing.
_SDK_LOGGER = logging.getLogger("chalicelib.audit.notifiers.slack.sdk")
_SDK_LOGGER.disabled = True
_SDK_LOGGER.propagate = False


def escape(text: str) -> str:
    """mrkdwn control characters; also defuses <!channel> and <url|label> injection."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return _PARTIAL_ENTITY.sub("", cut) + "…"


def _field(label: str, value: str | None) -> dict[str, str]:
    return {"type": "mrkdwn", "text": truncate(f"*{label}*\n{escape(mask_text(value or '—'))}", FIELD_TEXT_MAX)}


def build_payload(finding: Finding) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` for ``WebhookClient.send``."""
    severity = finding.severity
    header = truncate(f"{_EMOJI[severity]} [{severity.value}] {finding.title}", HEADER_MAX)
    what = finding.action + (f" (failed: {finding.error})" if finding.error else "")
    where = " / ".join(p for p in (finding.account, finding.region) if p) or None
    when = finding.event_time.isoformat() if finding.event_time else None
    source = " · ".join(p for p in (finding.source_ip, finding.user_agent) if p) or None
    fields = [
        _field("Who", finding.principal),
        _field("What", what),
        _field("Where", where),
        _field("When", when),
        _field("Source", source),
    ]
    if finding.resources:
        fields.append(_field("Resources", ", ".join(finding.resources)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(escape(finding.summary), SECTION_TEXT_MAX)},
            "fields": fields[:FIELDS_MAX],
        },
    ]
    context = [f"detection `{finding.detection}`", f"category {finding.category.value}"]
    if finding.event_id:
        context.append(f"event {escape(finding.event_id)}")
    if finding.count > 1:
        context.append(f"seen {finding.count}× in the dedup window")
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": truncate(" · ".join(context), FIELD_TEXT_MAX)}
            ][:CONTEXT_ELEMENTS_MAX],
        }
    )
    if finding.console_url and len(finding.console_url) <= URL_MAX:
        label = "Open in CloudTrail" if "cloudtrail" in finding.console_url else "Open in AWS console"
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": truncate(label, BUTTON_TEXT_MAX)},
                        "url": finding.console_url,
                        "action_id": "open-console",
                    }
                ],
            }
        )
    text = truncate(escape(f"[{severity.value}] {finding.title}: {finding.summary}"), FALLBACK_TEXT_MAX)
    return {"text": text, "blocks": blocks[:BLOCKS_MAX]}


class SlackNotifier:
    name = "slack"

    def __init__(
        self,
        webhook: SecretRef | Callable[[], str],
        *,
        min_severity: Severity | str = Severity.INFO,
        timeout: int = 5,
    ) -> None:
        self._webhook = webhook
        self.min_severity = Severity(min_severity)
        self.timeout = timeout

    def _url(self) -> str:
        try:
            return self._webhook.resolve() if isinstance(self._webhook, SecretRef) else self._webhook()
        except Exception as exc:  # noqa: BLE001 - any failure to read it is a delivery failure
            where = str(self._webhook) if isinstance(self._webhook, SecretRef) else "provider"
            raise NotifierError(f"cannot read the Slack webhook URL from {where}: {type(exc).__name__}") from None

    def send(self, finding: Finding) -> None:
        url = self._url().strip()
        payload = build_payload(finding)
        client = WebhookClient(
            url,
            timeout=self.timeout,
            logger=_SDK_LOGGER,
            # One polite retry on 429 (Slack allows ~1 message/s per channel); more would stall the Lambda.
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
        )
        try:
            response = client.send(text=payload["text"], blocks=payload["blocks"])
        except Exception as exc:  # noqa: BLE001 - slack_sdk errors can embed the URL
            raise NotifierError(f"Slack webhook request failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            body = mask_text(str(response.body or "")).replace(url, "<webhook>")[:200]
            raise NotifierError(f"Slack webhook answered HTTP {response.status_code}: {body}")
