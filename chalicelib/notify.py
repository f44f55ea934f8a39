"""Outcome messages: every rotation ends with one SNS message, success or failure, and the same goes to
Slack through the Block Kit notifier the audit uses, routed by severity.

Slack is a second channel, never a precondition: SNS is published first, and a Slack failure is logged
(without the webhook URL) and does not fail the step that reported the outcome.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from chalicelib.aws import client
from chalicelib.observability import logger

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
#: What a Slack summary quotes from an outcome message, in this order.
_SUMMARY_FIELDS = ("graduated", "cause", "next_step", "live", "note")


class NotifySettings(BaseSettings):
    """Read per message (a few environment lookups) so a changed setting applies without a cold start."""

    model_config = SettingsConfigDict(env_prefix="ROTATOR_", frozen=True, extra="ignore")

    #: ROTATOR_AUDIT_SLACK_WEBHOOK: the audit's webhook (secretsmanager:<name> / ssm:<name>); empty: no Slack.
    audit_slack_webhook: str = ""
    #: ROTATOR_ROTATION_SLACK_MIN_SEVERITY: rotation outcomes below this stay out of Slack (INFO: all of
    #: them, successes included; HIGH: failures that need someone only).
    rotation_slack_min_severity: str = "INFO"


def publish(topic_arn: str, subject: str, message: dict[str, Any], severity: str) -> str | None:
    """Publish to SNS with a ``severity`` attribute for subscription filter policies, then to Slack."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    message_id = None
    if not topic_arn:
        logger.warning("no SNS topic configured; outcome not published", extra={"subject": subject})
    else:
        response = client("sns").publish(
            TopicArn=topic_arn,
            Subject=subject[:100],
            Message=json.dumps(message, indent=2, default=str),
            MessageAttributes={
                "severity": {"DataType": "String", "StringValue": severity},
                "kind": {"DataType": "String", "StringValue": str(message.get("kind", "rotation"))},
            },
        )
        message_id = str(response["MessageId"])
        logger.info("published outcome", extra={"subject": subject, "severity": severity})
    to_slack(subject, message, severity)
    return message_id


def to_slack(subject: str, message: dict[str, Any], severity: str) -> bool:
    """Send the outcome to Slack if a webhook is configured and ``severity`` reaches the minimum; True if
    it was delivered."""
    settings = NotifySettings()
    if not settings.audit_slack_webhook:
        return False
    # Imported here: only the functions that report an outcome load slack_sdk (the plan function never).
    from chalicelib.audit.finding import Severity
    from chalicelib.audit.notifiers.base import dispatch
    from chalicelib.audit.notifiers.slack import SlackNotifier
    from chalicelib.secret_ref import SecretRef

    try:
        minimum = Severity(settings.rotation_slack_min_severity.upper())
        notifier = SlackNotifier(SecretRef.model_validate(settings.audit_slack_webhook), min_severity=minimum)
    except ValueError:
        logger.error("rotation outcomes not sent to Slack: ROTATOR_AUDIT_SLACK_WEBHOOK or "
                     "ROTATOR_ROTATION_SLACK_MIN_SEVERITY is malformed")
        return False
    result = dispatch(finding(subject, message, Severity(severity)), [notifier])
    return "slack" in result.delivered


def finding(subject: str, message: dict[str, Any], severity: Any) -> Any:
    """The outcome as the audit's Finding, so Slack shows it with the same blocks (and the same masking)."""
    from chalicelib import clock
    from chalicelib.audit.finding import Category, Finding

    kind = str(message.get("kind", "rotation"))
    summary = "\n".join(f"{name.replace('_', ' ')}: {message[name]}" for name in _SUMMARY_FIELDS
                        if message.get(name)) or subject
    key_ids = [str(message[k]) for k in ("old_key_id", "new_key_id") if message.get(k)]
    return Finding(
        detection=f"rotation-{kind}",
        category=Category.KEY_LIFECYCLE,
        severity=severity,
        title=subject,
        principal=str(message.get("user") or "ci-key-rotator"),
        action=f"rotation:{kind}",
        summary=summary,
        event_id=str(message.get("rotation_id") or "") or None,
        event_time=clock.now(),
        resources=key_ids,
        dedup_key=f"{kind}#{message.get('user')}#{message.get('rotation_id')}",
    )
