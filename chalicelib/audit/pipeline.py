"""Classification (pure, indexed) and the EventBridge Lambda's event handling around it.

``classify`` is hot: each record is validated once, then only the detections indexed under its
(eventSource, eventName) run, each a few dict lookups. The candidate list per (source, name) is merged
once and cached, so the per-event cost does not grow with the number of detections.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.audit import suppression
from chalicelib.audit.allow_list_log import AllowListLog
from chalicelib.audit.context import AuditContext
from chalicelib.audit.dedup import Deduplicator
from chalicelib.audit.detections.base import ANY, Detection
from chalicelib.audit.detections.registry import all_detections
from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.models import Problem, Record, iter_records
from chalicelib.audit.notifiers.base import Notifier, dispatch
from chalicelib.audit.telemetry import count, logger

#: Distinct (source, name) pairs remembered; CloudTrail has a few thousand event names in all.
_CACHE_LIMIT = 20_000


class Classifier:
    """Detections indexed by eventSource/eventName; build once per process."""

    def __init__(self, detections: Sequence[Detection]) -> None:
        self.detections = tuple(detections)
        self._exact: dict[tuple[str, str], list[Detection]] = {}
        self._by_source: dict[str, list[Detection]] = {}
        self._any: list[Detection] = []
        for detection in self.detections:
            for source, event_names in detection.triggers.items():
                if source == ANY:
                    self._any.append(detection)
                elif event_names is None:
                    self._by_source.setdefault(source, []).append(detection)
                else:
                    for name in event_names:
                        self._exact.setdefault((source, name), []).append(detection)
        self._order = {d.id: i for i, d in enumerate(self.detections)}
        self._suppresses = {d.id: d.suppresses for d in self.detections}
        self._cache: dict[tuple[str, str], tuple[Detection, ...]] = {}

    def candidates(self, source: str, name: str) -> tuple[Detection, ...]:
        key = (source, name)
        found = self._cache.get(key)
        if found is None:
            merged = {
                d.id: d
                for d in (*self._exact.get(key, ()), *self._by_source.get(source, ()), *self._any)
            }
            found = tuple(sorted(merged.values(), key=lambda d: self._order[d.id]))
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = found
        return found

    def classify_record(self, record: Record, ctx: AuditContext) -> list[Finding]:
        findings: list[Finding] = []
        for detection in self.candidates(record.source, record.name):
            try:
                finding = detection.evaluate(record, ctx)
            except Exception as exc:  # noqa: BLE001 - one broken detection must not hide the others
                # Type and code location only: the message could quote event content.
                frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
                logger.error(
                    "detection failed",
                    extra={"detection": detection.id, "error": type(exc).__name__,
                           "where": f"{frame.filename}:{frame.lineno}" if frame else None,
                           "event_id": record.event_id},
                )
                count("DetectionErrors")
                continue
            if finding is not None:
                findings.append(finding)
        if len(findings) > 1:
            findings = _apply_suppressions(findings, self)
        return findings

    def suppressed_by(self, detection_id: str) -> tuple[str, ...]:
        return self._suppresses.get(detection_id, ())


def _apply_suppressions(findings: list[Finding], classifier: Classifier) -> list[Finding]:
    silenced = {s for f in findings for s in classifier.suppressed_by(f.detection)}
    return [f for f in findings if f.detection not in silenced] if silenced else findings


_default: Classifier | None = None


def default_classifier() -> Classifier:
    global _default
    if _default is None:
        _default = Classifier(all_detections())
    return _default


def classify(obj: Any, ctx: AuditContext, classifier: Classifier | None = None) -> list[Finding]:
    """Every finding for every record in ``obj`` (any shape ``iter_records`` accepts); never raises
    on bad input: malformed items are skipped (``iter_records`` reports them as Problems)."""
    classifier = classifier or default_classifier()
    findings: list[Finding] = []
    for item in iter_records(obj):
        if isinstance(item, Record):
            findings.extend(classifier.classify_record(item, ctx))
    return findings


def classify_items(
    items: Iterable[Record | Problem], ctx: AuditContext, classifier: Classifier | None = None
) -> Iterator[Finding | Problem]:
    """Like ``classify`` but streams, and passes Problems through for the caller to report."""
    classifier = classifier or default_classifier()
    for item in items:
        if isinstance(item, Record):
            yield from classifier.classify_record(item, ctx)
        else:
            yield item


@dataclass
class FindingOutcome:
    finding: Finding
    notified: bool
    suppressed: bool
    failed_notifiers: list[str] = field(default_factory=list)
    #: The reason of the allow-list entry that quieted this finding (not notified, listed in the digest).
    allow_listed: str | None = None


@dataclass
class Summary:
    records: int = 0
    problems: int = 0
    outcomes: list[FindingOutcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        failed = sorted({n for o in self.outcomes for n in o.failed_notifiers})
        return {
            "records": self.records,
            "problems": self.problems,
            "findings": len(self.outcomes),
            "notified": sum(o.notified for o in self.outcomes),
            "suppressed": sum(o.suppressed for o in self.outcomes),
            "allow_listed": sum(o.allow_listed is not None for o in self.outcomes),
            "failed_notifiers": failed,
            "undelivered": [
                o.finding.dedup_key for o in self.outcomes if not o.notified and not o.suppressed
                and o.failed_notifiers
            ],
            "results": [
                {
                    "detection": o.finding.detection,
                    "severity": o.finding.severity.value,
                    "event_id": o.finding.event_id,
                    "dedup_key": o.finding.dedup_key,
                    "count": o.finding.count,
                    "notified": o.notified,
                    "suppressed": o.suppressed,
                    "failed_notifiers": o.failed_notifiers,
                    **({"allow_listed": o.allow_listed} if o.allow_listed is not None else {}),
                }
                for o in self.outcomes
            ],
        }


def handle_event(
    event: Any,
    ctx: AuditContext,
    notifiers: Sequence[Notifier],
    dedup: Deduplicator | None,
    *,
    min_severity: Severity | str = Severity.INFO,
    now: datetime | None = None,
    classifier: Classifier | None = None,
    allow_log: AllowListLog | None = None,
) -> dict[str, Any]:
    """The audit Lambda: classify, quiet what the allow-list covers, drop repeats within the dedup
    window, notify, report.

    Every finding is logged (masked) whatever happens to its notification, so a failing notifier
    never loses it. When every notifier failed, the dedup claim is released so that a redelivery of the
    event can still notify.
    """
    classifier = classifier or default_classifier()
    threshold = Severity(min_severity)
    summary = Summary()
    for item in iter_records(event):
        if isinstance(item, Problem):
            summary.problems += 1
            logger.warning("skipped an unusable event item", extra={"origin": item.origin, "reason": item.reason})
            continue
        summary.records += 1
        for finding in classifier.classify_record(item, ctx):
            entry = suppression.match(ctx.suppressions, finding, item, now) if ctx.suppressions else None
            if entry is not None:
                summary.outcomes.append(_allow_listed(finding, entry.reason, allow_log, now))
                continue
            summary.outcomes.append(_deliver(finding, notifiers, dedup, threshold, now))
    counts = summary.as_dict()
    count("FindingsDetected", counts["findings"])
    count("FindingsSuppressed", counts["suppressed"])
    count("FindingsAllowListed", counts["allow_listed"])
    count("MalformedRecords", summary.problems)
    return counts


def notify_findings(
    findings: Iterable[Finding],
    notifiers: Sequence[Notifier],
    dedup: Deduplicator | None,
    *,
    min_severity: Severity | str = Severity.INFO,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Dedup and notify findings that did not come from an event (the credential-report digest)."""
    summary = Summary()
    threshold = Severity(min_severity)
    for finding in findings:
        summary.outcomes.append(_deliver(finding, notifiers, dedup, threshold, now))
    counts = summary.as_dict()
    count("FindingsDetected", counts["findings"])
    return counts


def _allow_listed(finding: Finding, reason: str, log: AllowListLog | None, now: datetime | None) -> FindingOutcome:
    logger.info("audit finding allow-listed", extra={"finding": finding.to_json_dict(), "allow_list_reason": reason})
    if log is not None:
        try:
            log.record(finding, reason, now)
        except Exception as exc:  # noqa: BLE001 - the digest misses one line; the log line above has it
            logger.warning("allow-list tally unavailable", extra={"error": type(exc).__name__})
            count("AllowListLogErrors")
    return FindingOutcome(finding, notified=False, suppressed=False, allow_listed=reason)


def _deliver(
    finding: Finding,
    notifiers: Sequence[Notifier],
    dedup: Deduplicator | None,
    threshold: Severity,
    now: datetime | None,
) -> FindingOutcome:
    claim = None
    if dedup is not None:
        try:
            claim = dedup.claim(finding, now)
        except Exception as exc:  # noqa: BLE001 - better a duplicate alert than a lost one
            logger.warning("dedup unavailable; notifying anyway", extra={"error": type(exc).__name__})
            count("DedupErrors")
    if claim is not None:
        finding = finding.model_copy(update={"count": claim.count})
    logger.info("audit finding", extra={"finding": finding.to_json_dict(), "first": claim is None or claim.first})
    if claim is not None and not claim.first:
        return FindingOutcome(finding, notified=False, suppressed=True)
    if not finding.severity.at_least(threshold):
        return FindingOutcome(finding, notified=False, suppressed=False)
    result = dispatch(finding, notifiers)
    if result.failed and not result.delivered and dedup is not None and claim is not None:
        try:
            dedup.release(finding)
        except Exception as exc:  # noqa: BLE001
            logger.warning("dedup release failed", extra={"error": type(exc).__name__})
    return FindingOutcome(finding, notified=bool(result.delivered), suppressed=False,
                          failed_notifiers=list(result.failed))
