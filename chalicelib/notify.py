"""Outcome messages: every rotation ends with one SNS message, success or failure."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.aws import client
from chalicelib.observability import logger

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def publish(topic_arn: str, subject: str, message: dict[str, Any], severity: str) -> str | None:
    """Publish to SNS with a ``severity`` attribute for subscription filter policies."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    if not topic_arn:
        logger.warning("no SNS topic configured; outcome not published", extra={"subject": subject})
        return None
    response = client("sns").publish(
        TopicArn=topic_arn,
        Subject=subject[:100],
        Message=json.dumps(message, indent=2, default=str),
        MessageAttributes={
            "severity": {"DataType": "String", "StringValue": severity},
            "kind": {"DataType": "String", "StringValue": str(message.get("kind", "rotation"))},
        },
    )
    logger.info("published outcome", extra={"subject": subject, "severity": severity})
    return str(response["MessageId"])
