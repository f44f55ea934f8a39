"""iter_records: every accepted input shape, and Problems (never exceptions) for everything else."""

from __future__ import annotations

import json

import pytest

from chalicelib.audit.models import (
    CloudTrailRecord,
    HealthEventDetail,
    Problem,
    Record,
    iter_records,
    normalize_event_name,
)

from .conftest import FIXTURES, ct, eventbridge, fixture, fixture_record


def records(obj: object) -> list[Record]:
    return [r for r in iter_records(obj) if isinstance(r, Record)]


def problems(obj: object) -> list[Problem]:
    return [p for p in iter_records(obj) if isinstance(p, Problem)]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_every_fixture_parses_to_one_record(path) -> None:
    items = list(iter_records(json.loads(path.read_text())))
    assert len(items) == 1 and isinstance(items[0], Record), items


def test_eventbridge_cloudtrail_event() -> None:
    record = records(eventbridge(ct("CreateUser", params={"userName": "bob"})))[0]
    assert record.kind == "cloudtrail"
    assert (record.source, record.name) == ("iam.amazonaws.com", "CreateUser")
    assert isinstance(record.event, CloudTrailRecord)
    assert record.params == {"userName": "bob"}
    assert record.envelope_id and record.envelope_account == "111122223333"


def test_sign_in_detail_type() -> None:
    event = eventbridge(fixture_record("signin_ConsoleLogin_Root_success_MFA.raw.json"))
    assert event["detail-type"] == "AWS Console Sign In via CloudTrail"
    record = records(event)[0]
    assert record.identity.type == "Root" and record.response == {"ConsoleLogin": "Success"}


def test_health_event() -> None:
    record = records(fixture("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json"))[0]
    assert record.kind == "health" and isinstance(record.event, HealthEventDetail)
    assert (record.source, record.name) == ("aws.health", "AWS_RISK_CREDENTIALS_EXPOSED")
    assert record.health.affectedEntities[0].entityValue == "ACCESS_KEY_ID_HERE"
    assert record.account == "123456789012" and record.region == "us-east-1"
    assert record.event_id == "121345678-1234-1234-1234-123456789012"


def test_raw_record_and_log_file() -> None:
    raw = fixture_record("iam_CreateUser.raw.json")
    assert records(raw)[0].name == "CreateUser"
    log_file = {"Records": [raw, ct("DeleteUser"), ct("GetUser")]}
    assert [r.name for r in records(log_file)] == ["CreateUser", "DeleteUser", "GetUser"]
    assert [r.origin for r in records(log_file)] == ["$.Records[0]", "$.Records[1]", "$.Records[2]"]


def test_array_of_every_shape() -> None:
    mixed = [
        eventbridge(ct("CreateUser")),
        ct("DeleteUser"),
        {"Records": [ct("GetUser"), ct("ListUsers")]},
        fixture("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json"),
        [ct("TagUser")],
    ]
    assert [r.name for r in records(mixed)] == [
        "CreateUser", "DeleteUser", "GetUser", "ListUsers", "AWS_RISK_CREDENTIALS_EXPOSED", "TagUser",
    ]


def test_sqs_and_sns_batches_are_unwrapped() -> None:
    event = eventbridge(ct("StopLogging", "cloudtrail.amazonaws.com"))
    sqs = {"Records": [{"messageId": "1", "eventSource": "aws:sqs", "body": json.dumps(event)}]}
    sns = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(event)}}]}
    assert [r.name for r in records(sqs)] == ["StopLogging"]
    assert [r.name for r in records(sns)] == ["StopLogging"]
    bad = {"Records": [{"eventSource": "aws:sqs", "body": "not json"}]}
    assert [p.reason for p in problems(bad)] == ["message body is not JSON"]


def test_one_bad_record_does_not_sink_the_batch() -> None:
    batch = {"Records": [ct("CreateUser"), {"eventName": 42}, "garbage", None, ct("DeleteUser")]}
    items = list(iter_records(batch))
    assert [type(i).__name__ for i in items] == ["Record", "Problem", "Problem", "Problem", "Record"]
    assert items[1].origin == "$.Records[1]"


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (42, "expected a JSON object, got number"),
        ("text", "expected a JSON object, got string"),
        ({"hello": "world"}, "not a CloudTrail record, CloudTrail log file or EventBridge event"),
        ({"Records": "nope"}, "'Records' must be an array, got string"),
        ({"detail-type": "EC2 Instance State-change Notification", "detail": {}}, "unsupported EventBridge detail-type"),
        ({"detail-type": ["x"], "detail": {}}, "unsupported EventBridge detail-type 'array'"),
    ],
)
def test_unknown_shapes_are_problems(obj: object, reason: str) -> None:
    found = problems(obj)
    assert len(found) == 1 and found[0].reason.startswith(reason), found


def test_invalid_fields_are_described_without_their_values() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    bad = ct("CreateUser")
    bad["eventTime"] = secret
    bad["userIdentity"] = "not an object " + secret
    [problem] = problems(bad)
    assert problem.reason.startswith("invalid ")
    assert "eventTime" in problem.reason and "userIdentity" in problem.reason
    assert secret not in problem.reason


def test_eventbridge_envelope_is_validated() -> None:
    event = eventbridge(ct("CreateUser"))
    del event["account"]
    [problem] = problems(event)
    assert "account" in problem.reason


def test_deep_nesting_is_refused() -> None:
    deep: object = ct("CreateUser")
    for _ in range(50):
        deep = [deep]
    assert [p.reason for p in problems(deep)] == ["nested too deeply"]


def test_lenient_free_form_members() -> None:
    record = records(ct("CreateUser", params="odd", response=True, readOnly="false"))[0]
    assert record.params == {"value": "odd"} and record.response == {"value": True}
    assert record.cloudtrail.readOnly is False


def test_event_names_lose_lambda_api_versions() -> None:
    assert normalize_event_name("UpdateFunctionCode20150331v2") == "UpdateFunctionCode"
    assert normalize_event_name("AddPermission20150331") == "AddPermission"
    assert normalize_event_name("CreateUser") == "CreateUser"
    assert normalize_event_name("Get2") == "Get2"


def test_principal_rendering() -> None:
    assert records(fixture("sts_AssumeRole_crossaccount_target.raw.json"))[0].principal == "AWSAccount:AIDAQRSTUVWXYZEXAMPLE"
    assert records(fixture("signin_ConsoleLogin_IAMUser_failure.raw.json"))[0].principal == "IAMUser:anaya"
    assert records(ct("X", identity={"type": "AWSService", "invokedBy": "lambda.amazonaws.com"}))[0].principal == (
        "AWSService:lambda.amazonaws.com"
    )
