"""Wiring from settings: the audit Lambda and the daily report end to end against moto."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import pytest

from chalicelib.audit.notifiers.slack import SlackNotifier
from chalicelib.audit.notifiers.sns import SnsNotifier
from chalicelib.audit.service import audit_event, build_context, build_notifiers, credential_report_audit
from chalicelib.audit.settings import AuditSettings

from .conftest import MANAGED, assumed_role, create_access_key, eventbridge
from .test_notifiers import SlackStub


@pytest.fixture
def env(moto_aws, uid, monkeypatch):
    monkeypatch.setenv("ROTATOR_TABLE_NAME", f"rotator-{uid}")
    monkeypatch.setenv("ROTATOR_AUDIT_SLACK_WEBHOOK", f"secretsmanager:audit/slack-{uid}")
    monkeypatch.setenv("ROTATOR_AUDIT_ROTATOR_ROLE", "key-bot")
    monkeypatch.setenv("ROTATOR_AUDIT_SLACK_MIN_SEVERITY", "HIGH")
    stub = SlackStub()
    boto3.client("secretsmanager").create_secret(Name=f"audit/slack-{uid}", SecretString=stub.url)
    topic = boto3.client("sns").create_topic(Name=f"alerts-{uid}")["TopicArn"]
    monkeypatch.setenv("ROTATOR_TOPIC_ARN", topic)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"audit-{uid}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    boto3.client("dynamodb").create_table(
        TableName=f"rotator-{uid}",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield {"slack": stub, "queue": queue, "sqs": sqs, "uid": uid}
    stub.close()


def test_settings_build_the_pieces(env) -> None:
    settings = AuditSettings()
    notifiers = build_notifiers(settings)
    assert [type(n) for n in notifiers] == [SlackNotifier, SnsNotifier]
    assert notifiers[0].min_severity == "HIGH"
    ctx = build_context([MANAGED], None, settings)
    assert ctx.rotator_role_name == "key-bot" and ctx.managed_users == frozenset({MANAGED})


def test_audit_event_end_to_end(env) -> None:
    seen: list[tuple] = []

    def intent(user: str, action: str, key: str | None, at: datetime) -> bool:
        seen.append((user, action, key, at))
        return True

    human = eventbridge(create_access_key())
    first = audit_event(human, managed_users=[MANAGED], intent_lookup=intent, settings=AuditSettings())
    repeat = audit_event(human, managed_users=[MANAGED], intent_lookup=intent, settings=AuditSettings())
    own = audit_event(eventbridge(create_access_key(identity=assumed_role("key-bot"))), managed_users=[MANAGED],
                      intent_lookup=intent, settings=AuditSettings())
    assert (first["notified"], repeat["suppressed"], own["findings"]) == (1, 1, 0)
    assert seen and seen[0][:2] == (MANAGED, "CreateAccessKey")
    [slack_request] = env["slack"].requests
    assert "[HIGH]" in slack_request["json"]["text"]
    messages = env["sqs"].receive_message(QueueUrl=env["queue"], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["MessageAttributes"]["severity"]["Value"] for m in messages] == ["HIGH"]


def test_credential_report_audit_end_to_end(env) -> None:
    managed = f"ci-deployer-{env['uid']}"
    iam = boto3.client("iam")
    iam.create_user(UserName=managed)
    iam.create_access_key(UserName=managed)
    iam.create_access_key(UserName=managed)
    summary = credential_report_audit(managed_users=[managed], settings=AuditSettings(), sleep=lambda s: None)
    assert summary["findings"] == 1 and summary["notified"] == 1
    assert summary["results"][0]["detection"] == "key-lifecycle.credential-report"
    assert summary["results"][0]["severity"] == "HIGH"
