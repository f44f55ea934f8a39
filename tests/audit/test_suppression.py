"""The allow-list (issue 14, finding 6): routine pipeline work stays out of Slack, but not out of sight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.audit import allow_list_log
from chalicelib.audit.allow_list_log import DynamoAllowListLog, MemoryAllowListLog
from chalicelib.audit.context import AuditContext
from chalicelib.audit.dedup import MemoryDeduplicator
from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.models import Record, iter_records
from chalicelib.audit.pipeline import classify, handle_event
from chalicelib.audit.suppression import Suppression, event_tags, match
from chalicelib.audit.telemetry import metrics

from .conftest import MANAGED, ROTATOR_ROLE, assumed_role, ct, eventbridge, iam_user
from .depth_cases import trust
from .routine import PIPELINE_ARN_GLOB, RUNNER_IP, routine_events

NOW = datetime(2024, 5, 1, 10, 20, tzinfo=UTC)
LATER = date(2024, 8, 1)


class Recorder:
    name = "recorder"
    min_severity = "INFO"

    def __init__(self) -> None:
        self.sent: list[Finding] = []

    def send(self, finding: Finding) -> None:
        self.sent.append(finding)


@pytest.fixture(autouse=True)
def _quiet_metrics(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    yield
    metrics.clear_metrics()


def entry(**fields: Any) -> Suppression:
    base: dict[str, Any] = {"reason": "terraform pipeline, change-managed (SEC-142)", "expires": LATER}
    return Suppression.model_validate({**base, **fields})


def ctx(*entries: Suppression) -> AuditContext:
    return AuditContext({MANAGED}, ROTATOR_ROLE, suppressions=entries)


def record_of(event: dict[str, Any]) -> Record:
    item = next(iter_records(event))
    assert isinstance(item, Record)
    return item


def test_the_routine_corpus_is_noisy_without_the_list_and_silent_with_its_pipeline_on_it() -> None:
    events = routine_events()
    loud = [f for e in events for f in classify(e, ctx()) if f.severity.at_least(Severity.MEDIUM)]
    assert len(loud) >= 900, "the corpus must be the noisy routine work issue 14 measured"

    allowed = ctx(entry(principals=[PIPELINE_ARN_GLOB]))
    slack, log = Recorder(), MemoryAllowListLog()
    summary: dict[str, Any] = {"findings": 0, "allow_listed": 0, "notified": 0}
    for event in events:
        result = handle_event(event, allowed, [slack], MemoryDeduplicator(), now=NOW, allow_log=log)
        for key in summary:
            summary[key] += result[key]
    assert [f for f in slack.sent if f.severity.at_least(Severity.MEDIUM)] == []
    assert summary["notified"] == 0 and summary["allow_listed"] == summary["findings"] == len(loud)
    total, labels = log.day(NOW.date())
    assert total == len(loud) and all("SEC-142" in label for label in labels)


def test_only_the_listed_principal_is_quieted() -> None:
    admin = eventbridge(ct("PutRolePolicy", identity=assumed_role("Admin", "jane"),
                           params={"roleName": "app", "policyName": "x", "policyDocument": "{}"}))
    slack = Recorder()
    result = handle_event(admin, ctx(entry(principals=[PIPELINE_ARN_GLOB])), [slack], None, now=NOW)
    assert result["allow_listed"] == 0 and [f.detection for f in slack.sent] == ["iam-policy.change"]


def test_an_expired_entry_quiets_nothing() -> None:
    event = routine_events(1)[0]
    finding = classify(event, ctx())[0]
    listed = entry(principals=[PIPELINE_ARN_GLOB], expires=datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    assert match([listed], finding, record_of(event), NOW) is None
    assert match([listed], finding, record_of(event), NOW - timedelta(hours=1)) is listed


def test_critical_needs_the_per_entry_opt_in() -> None:
    event = eventbridge(ct("CreateRole", identity=assumed_role("terraform-deploy", "run"),
                           params={"roleName": "open", "assumeRolePolicyDocument": trust({"AWS": "*"})}))
    critical = [f for f in classify(event, ctx()) if f.severity is Severity.CRITICAL]
    assert critical, "the event must raise a CRITICAL finding"
    plain = entry(principals=[PIPELINE_ARN_GLOB])
    opted = entry(principals=[PIPELINE_ARN_GLOB], allow_critical=True)
    assert match([plain], critical[0], record_of(event), NOW) is None
    assert match([opted], critical[0], record_of(event), NOW) is opted


@pytest.mark.parametrize(("fields", "quiets"), [
    ({"events": ["PutRolePolicy"]}, True),
    ({"events": ["iam:Put*"]}, True),
    ({"events": ["s3:PutBucketPolicy"]}, False),
    ({"source_cidrs": ["192.0.2.0/24"]}, True),
    ({"source_cidrs": ["10.0.0.0/8"]}, False),
    ({"principals": [PIPELINE_ARN_GLOB], "source_cidrs": ["10.0.0.0/8"]}, False),
    ({"principals": ["arn:aws:sts::*:assumed-role/terraform-deploy/*"]}, True),
    ({"principals": [PIPELINE_ARN_GLOB], "detections": ["network.*"]}, False),
    ({"principals": [PIPELINE_ARN_GLOB], "detections": ["iam-policy.*"]}, True),
    ({"tags": {"managed-by": "terraform"}}, False),
])
def test_every_named_condition_must_hold(fields: dict[str, Any], quiets: bool) -> None:
    event = routine_events(1)[0]
    assert event["detail"]["sourceIPAddress"] == RUNNER_IP
    finding = classify(event, ctx())[0]
    assert (match([entry(**fields)], finding, record_of(event), NOW) is not None) is quiets


def test_tags_match_only_events_that_carry_them() -> None:
    tagged = eventbridge(ct("CreateRole", identity=iam_user("alice"), params={
        "roleName": "vendor", "assumeRolePolicyDocument": trust({"AWS": "999988887777"}),
        "tags": [{"key": "managed-by", "value": "terraform"}, {"key": "team", "value": "data"}]}))
    assert event_tags(record_of(tagged)) == {"managed-by": "terraform", "team": "data"}
    finding = classify(tagged, ctx())[0]
    assert match([entry(tags={"team": "data"})], finding, record_of(tagged), NOW) is not None
    assert match([entry(tags={"team": "web"})], finding, record_of(tagged), NOW) is None


@pytest.mark.parametrize("fields", [
    {"expires": LATER},
    {"principals": ["x"]},
    {"reason": "short", "expires": LATER, "principals": ["x"]},
    {"reason": "a long enough reason", "expires": LATER, "events": ["not an event!"]},
])
def test_entries_without_expiry_reason_or_condition_are_refused(fields: dict[str, Any]) -> None:
    data = {"reason": "a long enough reason", **fields} if "reason" not in fields else fields
    with pytest.raises(ValidationError):
        Suppression.model_validate(data)


def test_the_config_carries_profiles_and_suppressions() -> None:
    from chalicelib.config import parse_config

    config = parse_config({
        "users": [{"name": MANAGED, "targets": [{"provider": "github", "id": "gh", "repository": "o/r",
                                               "token": "secretsmanager:ci-key-rotator/github-token"}],
                   "profile": {"expected": ["s3:PutObject"], "source_cidrs": ["192.0.2.0/24"]}}],
        "suppressions": [{"reason": "terraform pipeline (SEC-142)", "expires": "2030-01-01",
                          "principals": [PIPELINE_ARN_GLOB]}],
    })
    assert config.users[0].profile is not None and config.users[0].profile.expects("s3:PutObject")
    assert config.suppressions[0].principals == [PIPELINE_ARN_GLOB]


def test_the_digest_lists_what_was_quieted() -> None:
    log = MemoryAllowListLog()
    event = routine_events(1)[0]
    finding = classify(event, ctx())[0]
    log.record(finding, "terraform pipeline (SEC-142)", NOW - timedelta(days=1))
    log.record(finding, "terraform pipeline (SEC-142)", NOW)
    digest = allow_list_log.digest(log, NOW)
    assert digest is not None and digest.detection == "allow-list.digest"
    assert "quieted 2 finding(s)" in digest.summary and "iam-policy.change (MEDIUM) — terraform pipeline" in digest.summary
    assert allow_list_log.digest(MemoryAllowListLog(), NOW) is None


def test_the_daily_tally_in_dynamodb(moto_aws: None, uid: str) -> None:
    import boto3

    table = f"audit-{uid}"
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}])
    log = DynamoAllowListLog(table, client)
    finding = classify(routine_events(1)[0], ctx())[0]
    for _ in range(3):
        log.record(finding, "terraform pipeline (SEC-142)", NOW)
    assert log.day(NOW.date()) == (3, ["iam-policy.change (MEDIUM) — terraform pipeline (SEC-142)"])
    assert log.day(NOW.date() - timedelta(days=1)) == (0, [])
