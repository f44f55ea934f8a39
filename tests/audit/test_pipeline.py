"""handle_event: classify, dedup, notify, summarise; failures never lose a finding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.audit.context import AuditContext
from chalicelib.audit.dedup import MemoryDeduplicator
from chalicelib.audit.finding import Finding
from chalicelib.audit.pipeline import classify, handle_event, notify_findings
from chalicelib.audit.telemetry import metrics

from .conftest import MANAGED, ROTATOR_ROLE, create_access_key, ct, eventbridge, fixture

NOW = datetime(2024, 5, 1, 10, 20, tzinfo=UTC)


class Recorder:
    def __init__(self, name: str, fail: bool = False, min_severity: str = "INFO") -> None:
        self.name, self.fail, self.min_severity = name, fail, min_severity
        self.sent: list[Finding] = []

    def send(self, finding: Finding) -> None:
        if self.fail:
            raise ConnectionError("down")
        self.sent.append(finding)


class BrokenDedup:
    def claim(self, finding: Finding, now: datetime | None = None) -> Any:
        raise TimeoutError("dynamodb")

    def release(self, finding: Finding) -> None:
        raise AssertionError("not claimed")


@pytest.fixture(autouse=True)
def _clean_metrics() -> Any:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def ctx() -> AuditContext:
    return AuditContext({MANAGED}, ROTATOR_ROLE)


def test_classify_accepts_a_whole_batch() -> None:
    batch = [eventbridge(create_access_key()), {"Records": [ct("StopLogging", "cloudtrail.amazonaws.com")]}, "junk"]
    assert [f.detection for f in classify(batch, ctx())] == [
        "key-lifecycle.access-key-change", "cloudtrail.logging-stopped",
    ]


def test_nothing_found_is_an_empty_list() -> None:
    assert classify(eventbridge(ct("GetUser")), ctx()) == []
    assert classify(fixture("health_AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED.eventbridge.json"), ctx()) == []


def test_handle_event_notifies_every_channel_and_summarises() -> None:
    slack, sns = Recorder("slack"), Recorder("sns")
    summary = handle_event(eventbridge(create_access_key()), ctx(), [slack, sns], MemoryDeduplicator(), now=NOW)
    assert summary["records"] == 1 and summary["findings"] == 1 and summary["notified"] == 1
    assert summary["failed_notifiers"] == [] and summary["problems"] == 0
    assert slack.sent[0].detection == sns.sent[0].detection == "key-lifecycle.access-key-change"
    assert summary["results"][0]["severity"] == "HIGH"
    assert metrics.metric_set["FindingsDetected"]["Value"] == [1.0]


def test_repeats_within_the_window_are_counted_not_renotified() -> None:
    dedup, sns = MemoryDeduplicator(900), Recorder("sns")
    first = handle_event(eventbridge(create_access_key()), ctx(), [sns], dedup, now=NOW)
    again = handle_event(eventbridge(create_access_key()), ctx(), [sns], dedup, now=NOW + timedelta(seconds=30))
    later = handle_event(eventbridge(create_access_key()), ctx(), [sns], dedup, now=NOW + timedelta(seconds=901))
    assert (first["notified"], again["notified"], again["suppressed"], later["notified"]) == (1, 0, 1, 1)
    assert again["results"][0]["count"] == 2
    assert len(sns.sent) == 2


def test_failing_notifier_is_reported_and_the_others_still_run() -> None:
    broken, sns = Recorder("slack", fail=True), Recorder("sns")
    summary = handle_event(eventbridge(create_access_key()), ctx(), [broken, sns], MemoryDeduplicator(), now=NOW)
    assert summary["failed_notifiers"] == ["slack"] and summary["notified"] == 1 and len(sns.sent) == 1
    assert summary["undelivered"] == []
    assert metrics.metric_set["NotifierFailures"]["Value"] == [1.0]


def test_when_every_notifier_fails_the_claim_is_released_for_a_retry(caplog) -> None:
    dedup = MemoryDeduplicator()
    event = eventbridge(create_access_key())
    summary = handle_event(event, ctx(), [Recorder("slack", fail=True)], dedup, now=NOW)
    assert summary["notified"] == 0 and len(summary["undelivered"]) == 1
    # The finding itself is in the log even though no channel took it.
    assert any(r.getMessage() == "audit finding" for r in caplog.records)
    sns = Recorder("sns")
    retry = handle_event(event, ctx(), [sns], dedup, now=NOW + timedelta(seconds=5))
    assert retry["notified"] == 1 and sns.sent


def test_dedup_outage_notifies_anyway() -> None:
    sns = Recorder("sns")
    summary = handle_event(eventbridge(create_access_key()), ctx(), [sns], BrokenDedup(), now=NOW)
    assert summary["notified"] == 1 and sns.sent


def test_below_min_severity_is_logged_not_notified() -> None:
    sns = Recorder("sns")
    event = eventbridge(ct("GetObject", "s3.amazonaws.com", error_code="AccessDenied"))
    summary = handle_event(event, ctx(), [sns], None, min_severity="MEDIUM")
    assert summary["findings"] == 1 and summary["notified"] == 0 and not sns.sent


def test_malformed_items_are_counted() -> None:
    batch = {"Records": [ct("StopLogging", "cloudtrail.amazonaws.com"), {"eventName": None}, 7]}
    summary = handle_event(batch, ctx(), [Recorder("sns")], None)
    assert (summary["records"], summary["problems"], summary["findings"]) == (1, 2, 1)
    assert metrics.metric_set["MalformedRecords"]["Value"] == [2.0]


def test_notify_findings_for_non_event_findings() -> None:
    finding = classify(eventbridge(create_access_key()), ctx())[0]
    sns = Recorder("sns")
    summary = notify_findings([finding, finding], [sns], MemoryDeduplicator(), now=NOW)
    assert (summary["notified"], summary["suppressed"], len(sns.sent)) == (1, 1, 1)
