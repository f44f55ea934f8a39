"""The notifier interface and the dispatcher that makes one channel's failure nobody else's problem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aws_lambda_powertools import Metrics

from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.masking import mask_text
from chalicelib.audit.telemetry import count, logger


class Notifier(Protocol):
    #: Short, stable name used in logs, metrics and the handler's summary ("slack", "sns").
    name: str
    #: Findings below this severity are not sent to this channel.
    min_severity: Severity

    def send(self, finding: Finding) -> None:
        """Deliver or raise. Exceptions must not carry secrets (raise NotifierError with a safe text)."""


class NotifierError(Exception):
    """A delivery failure whose message is safe to log (no URL, no token)."""


@dataclass
class DispatchResult:
    delivered: list[str] = field(default_factory=list)
    #: notifier name -> safe reason
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def dispatch(finding: Finding, notifiers: Sequence[Notifier], metrics: Metrics | None = None) -> DispatchResult:
    """Run every notifier; a failure is logged, counted (``NotifierFailures``) and reported, never raised."""
    result = DispatchResult()
    for notifier in notifiers:
        name = getattr(notifier, "name", type(notifier).__name__)
        minimum = getattr(notifier, "min_severity", Severity.INFO)
        if not finding.severity.at_least(minimum):
            result.skipped.append(name)
            continue
        try:
            notifier.send(finding)
        except Exception as exc:  # noqa: BLE001 - every channel gets its chance
            # Only NotifierError texts are vetted; anything else may embed a URL, so log its type only.
            reason = mask_text(str(exc))[:300] if isinstance(exc, NotifierError) else type(exc).__name__
            result.failed[name] = reason
            logger.error(
                "notifier failed",
                extra={"notifier": name, "reason": reason, "detection": finding.detection,
                       "dedup_key": finding.dedup_key},
            )
            count("NotifierFailures", target=metrics)
        else:
            result.delivered.append(name)
    return result
