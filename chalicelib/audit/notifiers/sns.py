"""SNS publish with ``severity``/``detection``/``category`` attributes for subscription filter policies."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.notifiers.base import NotifierError

SUBJECT_MAX = 100


def subject(finding: Finding) -> str:
    """SNS subjects: printable ASCII, no line breaks, under 100 characters."""
    raw = f"[{finding.severity.value}] {finding.title}"
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in raw).strip() or finding.severity.value
    return clean if len(clean) <= SUBJECT_MAX else clean[: SUBJECT_MAX - 3] + "..."


def build_message(finding: Finding) -> dict[str, Any]:
    """Keyword arguments for ``sns.publish`` (minus TopicArn)."""
    body = {"kind": "audit-finding", **finding.to_json_dict()}
    return {
        "Subject": subject(finding),
        "Message": json.dumps(body, indent=2, ensure_ascii=False),
        "MessageAttributes": {
            "severity": {"DataType": "String", "StringValue": finding.severity.value},
            "detection": {"DataType": "String", "StringValue": finding.detection},
            "category": {"DataType": "String", "StringValue": finding.category.value},
        },
    }


class SnsNotifier:
    name = "sns"

    def __init__(self, topic_arn: str, *, client: Any = None, min_severity: Severity | str = Severity.INFO) -> None:
        if not topic_arn:
            raise ValueError("SnsNotifier needs a topic ARN")
        self.topic_arn = topic_arn
        self.min_severity = Severity(min_severity)
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from chalicelib.aws import client

            self._client = client("sns")
        return self._client

    def send(self, finding: Finding) -> None:
        try:
            self.client.publish(TopicArn=self.topic_arn, **build_message(finding))
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
            raise NotifierError(f"SNS publish failed: {type(exc).__name__} {code}".strip()) from None
