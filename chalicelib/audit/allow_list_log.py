"""A daily tally of allow-listed findings, for the digest the credential-report job sends.

Table layout (the product's single table): pk ``ALLOWLISTED#<yyyy-mm-dd>``, sk ``ALLOWLISTED``, one item per
UTC day: ``total`` (a counter) and ``labels`` (a string set of ``<detection> — <entry reason>``), TTL
``expires_at`` 8 days on. Items hold detection ids and the config's reasons, never event content. One
UpdateItem per quieted finding (the audit Lambda's role has it) and one GetItem per day read (the
credential-report Lambda's role has it: no Query needed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from chalicelib.audit.detections.allow_list import ALLOW_LIST_DIGEST
from chalicelib.audit.detections.base import dedup_key
from chalicelib.audit.finding import Finding

SORT_KEY = "ALLOWLISTED"
KEEP_DAYS = 8
MAX_LABELS_SHOWN = 30


class AllowListLog(Protocol):
    def record(self, finding: Finding, reason: str, now: datetime | None = None) -> None: ...

    def day(self, day: date) -> tuple[int, list[str]]: ...


def label(finding: Finding, reason: str) -> str:
    return f"{finding.detection} ({finding.severity.value}) — {reason}"


class MemoryAllowListLog:
    def __init__(self) -> None:
        self._days: dict[date, tuple[int, set[str]]] = {}

    def record(self, finding: Finding, reason: str, now: datetime | None = None) -> None:
        day = (now or datetime.now(UTC)).date()
        total, labels = self._days.get(day, (0, set()))
        self._days[day] = (total + 1, labels | {label(finding, reason)})

    def day(self, day: date) -> tuple[int, list[str]]:
        total, labels = self._days.get(day, (0, set()))
        return total, sorted(labels)


class DynamoAllowListLog:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from chalicelib.aws import client

            self._client = client("dynamodb")
        return self._client

    @staticmethod
    def _key(day: date) -> dict[str, Any]:
        return {"pk": {"S": f"ALLOWLISTED#{day.isoformat()}"}, "sk": {"S": SORT_KEY}}

    def record(self, finding: Finding, reason: str, now: datetime | None = None) -> None:
        at = now or datetime.now(UTC)
        self.client.update_item(
            TableName=self.table_name,
            Key=self._key(at.date()),
            UpdateExpression="ADD #total :one, labels :label SET expires_at = :expires",
            ExpressionAttributeNames={"#total": "total"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":label": {"SS": [label(finding, reason)]},
                ":expires": {"N": str(int((at + timedelta(days=KEEP_DAYS)).timestamp()))},
            },
        )

    def day(self, day: date) -> tuple[int, list[str]]:
        item = self.client.get_item(TableName=self.table_name, Key=self._key(day)).get("Item") or {}
        total = int(item.get("total", {}).get("N", "0"))
        return total, sorted(item.get("labels", {}).get("SS", []))


def digest(log: AllowListLog, now: datetime | None = None, account: str | None = None) -> Finding | None:
    """One finding listing what the allow-list quieted yesterday and today (UTC), or None."""
    now = now or datetime.now(UTC)
    total, labels = 0, set()
    for day in (now.date() - timedelta(days=1), now.date()):
        count, found = log.day(day)
        total += count
        labels.update(found)
    if not total:
        return None
    shown = sorted(labels)[:MAX_LABELS_SHOWN]
    more = len(labels) - len(shown)
    summary = (f"The allow-list quieted {total} finding(s) since {now.date() - timedelta(days=1)} (UTC):\n"
               + "\n".join(f"• {line}" for line in shown) + (f"\n… and {more} more" if more else ""))
    return Finding(
        detection=ALLOW_LIST_DIGEST.id,
        category=ALLOW_LIST_DIGEST.category,
        severity=ALLOW_LIST_DIGEST.severity,
        title=ALLOW_LIST_DIGEST.title,
        principal="audit allow-list",
        action="audit:AllowList",
        summary=summary,
        event_id=f"allow-list-{now.date().isoformat()}",
        event_time=now,
        account=account,
        resources=shown,
        dedup_key=dedup_key(ALLOW_LIST_DIGEST.id, ("digest", now.date().isoformat())),
    )
