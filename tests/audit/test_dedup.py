"""Duplicate suppression within a window: DynamoDB (moto) with TTL, and the in-memory variant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.audit.dedup import DynamoDeduplicator, MemoryDeduplicator
from chalicelib.audit.finding import Finding
from chalicelib.audit.settings import AuditSettings

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def finding(key: str = "root.activity:abc") -> Finding:
    return Finding(detection="root.activity", category="root", severity="HIGH", title="Root user activity",
                   principal="arn:aws:iam::111122223333:root", action="signin:ConsoleLogin", summary="s",
                   dedup_key=key)


@pytest.fixture
def table(moto_aws, uid, monkeypatch):
    monkeypatch.setenv("ROTATOR_TABLE_NAME", f"rotator-{uid}")
    client = boto3.client("dynamodb", region_name="us-east-1")
    name = AuditSettings().table_name
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(TableName=name,
                               TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return client, name


def test_first_claim_then_counted_repeats(table) -> None:
    client, name = table
    dedup = DynamoDeduplicator(name, window_seconds=900, client=client)
    assert dedup.claim(finding(), T0).first
    second = dedup.claim(finding(), T0 + timedelta(seconds=60))
    third = dedup.claim(finding(), T0 + timedelta(seconds=120))
    assert (second.first, second.count, third.first, third.count) == (False, 2, False, 3)
    item = client.get_item(TableName=name, Key={"pk": {"S": "FINDING#root.activity:abc"}, "sk": {"S": "FINDING"}})["Item"]
    assert item["count"] == {"N": "3"}
    assert item["expires_at"] == {"N": str(int(T0.timestamp()) + 900)}
    assert set(item) == {"pk", "sk", "expires_at", "count", "detection", "severity", "first_seen", "last_seen"}


def test_other_keys_are_independent(table) -> None:
    client, name = table
    dedup = DynamoDeduplicator(name, client=client)
    assert dedup.claim(finding("a"), T0).first and dedup.claim(finding("b"), T0).first


def test_expired_item_not_yet_deleted_by_ttl_counts_as_absent(table) -> None:
    client, name = table
    dedup = DynamoDeduplicator(name, window_seconds=900, client=client)
    dedup.claim(finding(), T0)
    later = dedup.claim(finding(), T0 + timedelta(seconds=901))
    assert (later.first, later.count) == (True, 1)
    assert dedup.claim(finding(), T0 + timedelta(seconds=902)).count == 2


def test_release_lets_the_next_delivery_notify(table) -> None:
    client, name = table
    dedup = DynamoDeduplicator(name, client=client)
    dedup.claim(finding(), T0)
    dedup.release(finding())
    assert dedup.claim(finding(), T0).first


def test_table_errors_propagate(moto_aws, uid) -> None:
    dedup = DynamoDeduplicator(f"missing-{uid}", client=boto3.client("dynamodb", region_name="us-east-1"))
    with pytest.raises(ClientError, match=r"ResourceNotFound"):
        dedup.claim(finding(), T0)


def test_memory_variant() -> None:
    dedup = MemoryDeduplicator(window_seconds=60)
    assert dedup.claim(finding(), T0).first
    assert dedup.claim(finding(), T0 + timedelta(seconds=59)).count == 2
    assert dedup.claim(finding(), T0 + timedelta(seconds=61)).first
    dedup.release(finding())
    assert dedup.claim(finding(), T0 + timedelta(seconds=62)).first
