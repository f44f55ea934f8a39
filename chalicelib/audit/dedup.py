"""Suppress repeats of a finding within a window: DynamoDB (Lambda) or memory (CLI).

Table layout (the product's single table): pk ``FINDING#<dedup_key>``, sk ``FINDING``, TTL attribute
``expires_at`` (epoch seconds). DynamoDB deletes expired items lazily (up to days later), so the claim
treats an item whose ``expires_at`` has passed as absent instead of trusting TTL. Items hold the dedup
key, detection id, severity and timestamps only, never event content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.audit.finding import Finding

DEFAULT_WINDOW_SECONDS = 900
SORT_KEY = "FINDING"


@dataclass(frozen=True)
class Claim:
    #: True for the first sighting in the window: notify. False: a repeat, counted, not notified.
    first: bool
    count: int


class Deduplicator(Protocol):
    def claim(self, finding: Finding, now: datetime | None = None) -> Claim: ...

    def release(self, finding: Finding) -> None: ...


def _epoch(now: datetime | None) -> int:
    return int((now or datetime.now(UTC)).timestamp())


def partition_key(finding: Finding) -> str:
    return f"FINDING#{finding.dedup_key}"


class MemoryDeduplicator:
    """In-process variant (CLI, tests). ``now`` may be event time, to dedup a log file offline."""

    def __init__(self, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> None:
        self.window = window_seconds
        self._seen: dict[str, tuple[int, int]] = {}

    def claim(self, finding: Finding, now: datetime | None = None) -> Claim:
        at = _epoch(now)
        entry = self._seen.get(finding.dedup_key)
        if entry is not None and entry[0] > at:
            self._seen[finding.dedup_key] = (entry[0], entry[1] + 1)
            return Claim(first=False, count=entry[1] + 1)
        self._seen[finding.dedup_key] = (at + self.window, 1)
        return Claim(first=True, count=1)

    def release(self, finding: Finding) -> None:
        self._seen.pop(finding.dedup_key, None)


class DynamoDeduplicator:
    """Conditional put claims the window; a repeat increments ``count`` atomically."""

    def __init__(self, table_name: str, window_seconds: int = DEFAULT_WINDOW_SECONDS, client: Any = None) -> None:
        self.table_name = table_name
        self.window = window_seconds
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from chalicelib.aws import client

            self._client = client("dynamodb")
        return self._client

    def _key(self, finding: Finding) -> dict[str, Any]:
        return {"pk": {"S": partition_key(finding)}, "sk": {"S": SORT_KEY}}

    def claim(self, finding: Finding, now: datetime | None = None) -> Claim:
        at = _epoch(now)
        # Two rounds at most: a repeat whose item expires between our two calls claims afresh.
        for _ in range(2):
            if self._put_first(finding, at):
                return Claim(first=True, count=1)
            repeat = self._count_repeat(finding, at)
            if repeat is not None:
                return Claim(first=False, count=repeat)
        return Claim(first=True, count=1)

    def _put_first(self, finding: Finding, at: int) -> bool:
        item = {
            **self._key(finding),
            "expires_at": {"N": str(at + self.window)},
            "count": {"N": "1"},
            "detection": {"S": finding.detection},
            "severity": {"S": finding.severity.value},
            "first_seen": {"N": str(at)},
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(at)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _count_repeat(self, finding: Finding, at: int) -> int | None:
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._key(finding),
                UpdateExpression="ADD #count :one SET last_seen = :now",
                ConditionExpression="attribute_exists(pk) AND expires_at > :now",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={":one": {"N": "1"}, ":now": {"N": str(at)}},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return int(response["Attributes"]["count"]["N"])

    def release(self, finding: Finding) -> None:
        self.client.delete_item(TableName=self.table_name, Key=self._key(finding))
