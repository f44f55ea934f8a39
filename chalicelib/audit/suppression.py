"""The allow-list: routine work (a documented deploy pipeline, a scheduled job) that must not reach Slack.

Each entry names what it quiets — principal ARN globs, event names, source CIDRs, resource tags carried by
the event — and every condition it names must hold (an entry naming none is refused). Each entry has a
reason and an expiry, so the list cannot grow into a permanent blind spot; an expired entry quiets
nothing. A CRITICAL finding is quieted only by an entry that says ``allow_critical: true``.

An allow-listed finding is not dropped: it is logged, counted (metric ``FindingsAllowListed``) and listed
in the daily digest, so that what the list hides stays visible once a day.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator, model_validator

from chalicelib.audit.finding import Finding, Severity
from chalicelib.audit.models import Record

_EVENT = re.compile(r"^([a-z0-9-]+:)?[A-Za-z0-9*?]+$")
#: Request parameters that carry the tags a create/tag call applies (CloudTrail keeps the request's casing).
_TAG_PARAMS = ("tags", "Tags", "tagSet", "tagSpecificationSet", "TagSpecifications", "tagSpecifications")


class Suppression(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Why this is routine, and who said so: shown in the digest beside what it quieted.
    reason: str = Field(min_length=8, max_length=300)
    #: The entry quiets nothing from this moment on (a date means its midnight UTC).
    expires: datetime | date
    #: Globs on the caller's ARN or, for an assumed role, its role ARN (``arn:aws:iam::*:role/deploy-*``).
    principals: list[str] = Field(default_factory=list)
    #: ``EventName``, ``service:EventName`` or globs of either.
    events: list[str] = Field(default_factory=list)
    #: The caller's address must be in one of these.
    source_cidrs: list[IPvAnyNetwork] = Field(default_factory=list)
    #: Tags the event's request applies; only events that carry tags can match.
    tags: dict[str, str] = Field(default_factory=dict)
    #: Detection ids (globs) the entry is limited to; empty: any detection.
    detections: list[str] = Field(default_factory=list)
    #: CRITICAL findings are never quieted unless the entry opts in.
    allow_critical: bool = False

    @field_validator("events")
    @classmethod
    def _event_names(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not _EVENT.match(v)]
        if bad:
            raise ValueError(f"events are 'EventName' or 'service:EventName' (globs allowed), not {bad}")
        return values

    @model_validator(mode="after")
    def _names_something(self) -> Suppression:
        if not (self.principals or self.events or self.source_cidrs or self.tags):
            raise ValueError("a suppression must name principals, events, source_cidrs or tags; "
                             "one that names none would quiet everything")
        return self

    @property
    def expires_at(self) -> datetime:
        value = self.expires
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.combine(value, time.min, tzinfo=UTC)

    def active(self, now: datetime) -> bool:
        return now < self.expires_at

    def matches(self, finding: Finding, record: Record, now: datetime) -> bool:
        if not self.active(now):
            return False
        if finding.severity is Severity.CRITICAL and not self.allow_critical:
            return False
        if self.detections and not any(fnmatch.fnmatchcase(finding.detection, d) for d in self.detections):
            return False
        if self.principals and not _principal_matches(self.principals, record):
            return False
        if self.events and not _event_matches(self.events, f"{record.source.split('.', 1)[0]}:{record.name}"):
            return False
        if self.source_cidrs and not _address_in(self.source_cidrs, finding.source_ip):
            return False
        return not self.tags or _tags_match(self.tags, record)


def match(entries: Sequence[Suppression], finding: Finding, record: Record, now: datetime | None = None
          ) -> Suppression | None:
    """The first entry that quiets ``finding``, or None."""
    at = now or datetime.now(UTC)
    for entry in entries:
        if entry.matches(finding, record, at):
            return entry
    return None


def _principal_matches(patterns: list[str], record: Record) -> bool:
    candidates = [a for a in (record.identity.arn, record.issuer_arn) if a]
    return any(fnmatch.fnmatchcase(arn, p) for arn in candidates for p in patterns)


def _event_matches(patterns: list[str], action: str) -> bool:
    name = action.split(":", 1)[-1]
    return any(fnmatch.fnmatchcase(action if ":" in p else name, p) for p in patterns)


def _address_in(networks: list[Any], source_ip: str | None) -> bool:
    try:
        address = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return False
    return any(address.version == n.version and address in n for n in networks)


def _tags_match(wanted: dict[str, str], record: Record) -> bool:
    carried = event_tags(record)
    return all(carried.get(k) == v for k, v in wanted.items())


def event_tags(record: Record) -> dict[str, str]:
    """Tags the request applies, in the shapes CloudTrail logs them (IAM/STS ``[{key, value}]``, EC2
    ``tagSpecificationSet.items[].tags[]``, Lambda/SQS ``{key: value}``)."""
    found: dict[str, str] = {}
    for name in _TAG_PARAMS:
        _collect(record.params.get(name), found, 0)
    return found


def _collect(value: Any, found: dict[str, str], depth: int) -> None:
    if depth > 4 or value is None:
        return
    if isinstance(value, dict):
        key, tag = value.get("key", value.get("Key")), value.get("value", value.get("Value"))
        if isinstance(key, str) and isinstance(tag, str):
            found[key] = tag
            return
        for k, v in value.items():
            if isinstance(v, str) and k not in ("resourceType", "ResourceType"):
                found.setdefault(k, v)
            else:
                _collect(v, found, depth + 1)
    elif isinstance(value, list):
        for item in value[:50]:
            _collect(item, found, depth + 1)
