"""The one interface every detection implements: data plus a small match function.

A detection says which events it looks at (``events``: eventSource -> eventNames, ``ANY`` for every
source, ``None`` for every name of a source); the classifier indexes on that, so ``match`` only runs on
candidate events and can stay a few dict lookups. ``match`` returns False/None (no finding), True (the
default finding) or a :class:`Finding` built with :meth:`Detection.finding` (severity, summary or
dedup overridden for this event).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.audit.context import AuditContext
from chalicelib.audit.finding import (
    Category,
    Finding,
    Severity,
    cloudtrail_console_url,
    health_console_url,
)
from chalicelib.audit.models import CloudTrailRecord, Record

#: ``events`` key meaning "every eventSource" (root activity, denied calls).
ANY = "*"

MatchResult = bool | Finding | None
Matcher = Callable[[Record, AuditContext], MatchResult]

_ID = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")


def _always(record: Record, ctx: AuditContext) -> MatchResult:
    return True


@dataclass(frozen=True, eq=False)
class Detection:
    id: str
    category: Category
    severity: Severity
    title: str
    #: eventSource (or ``aws.health``, or ANY) -> eventNames it looks at (None: all of that source).
    events: Mapping[str, Collection[str] | None]
    match: Matcher = _always
    description: str = ""
    #: Detections this one makes redundant when both fire on the same event (e.g. a specific root-key
    #: finding silences the generic root-activity one).
    suppresses: tuple[str, ...] = ()
    #: Part of the dedup key besides the detection id; default: principal, action, first target.
    dedup: Callable[[Record], Sequence[str]] | None = None
    #: MITRE ATT&CK (cloud matrix) technique ids this detection covers, e.g. ``T1562.008``.
    techniques: tuple[str, ...] = ()
    _events: dict[str, frozenset[str] | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not _ID.match(self.id) or not self.id.startswith(f"{Category(self.category).value}."):
            raise ValueError(f"detection id {self.id!r} must be '<category>.<slug>' in lower case")
        bad = [t for t in self.techniques if not _TECHNIQUE.match(t)]
        if bad:
            raise ValueError(f"detection {self.id}: ATT&CK technique ids look like T1562 or T1562.008, not {bad}")
        events = {src: (None if names is None else frozenset(names)) for src, names in self.events.items()}
        object.__setattr__(self, "_events", events)
        object.__setattr__(self, "category", Category(self.category))
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def triggers(self) -> dict[str, frozenset[str] | None]:
        return self._events

    def evaluate(self, record: Record, ctx: AuditContext) -> Finding | None:
        result = self.match(record, ctx)
        if result is True:
            return self.finding(record)
        if isinstance(result, Finding):
            return result
        return None

    def finding(
        self,
        record: Record,
        *,
        severity: Severity | None = None,
        title: str | None = None,
        summary: str | None = None,
        resources: Sequence[str] | None = None,
        dedup_parts: Sequence[str] | None = None,
    ) -> Finding:
        """The finding for ``record``; detections override only what differs from the defaults."""
        action = action_of(record)
        principal = record.principal
        region = record.region
        resources = list(resources) if resources is not None else default_resources(record)
        if dedup_parts is None:
            dedup_parts = self.dedup(record) if self.dedup else (principal, action, resources[0] if resources else "")
        event = record.event
        if isinstance(event, CloudTrailRecord):
            console = cloudtrail_console_url(event.eventID, region)
            source_ip, user_agent = event.sourceIPAddress, event.userAgent
            if summary is None:
                summary = f"{principal} called {action}"
                if resources:
                    summary += f" on {', '.join(resources[:3])}"
                summary += failed_suffix(record)
        else:
            console = health_console_url(event.eventArn)
            source_ip = user_agent = None
            if summary is None:
                summary = f"AWS Health {record.name}" + (f" affecting {', '.join(resources)}" if resources else "")
        return Finding(
            detection=self.id,
            category=self.category,
            severity=severity or self.severity,
            title=title or self.title,
            principal=principal,
            action=action,
            summary=summary,
            event_id=record.event_id,
            event_time=record.event_time,
            account=record.account,
            region=region,
            source_ip=source_ip,
            user_agent=user_agent,
            error=record.error_code or None,
            resources=resources,
            dedup_key=dedup_key(self.id, dedup_parts),
            console_url=console,
        )


def dedup_key(detection_id: str, parts: Sequence[str]) -> str:
    """Stable, bounded and secret-free: the id stays readable, the rest is a digest."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"{detection_id}:{digest}"


def action_of(record: Record) -> str:
    event = record.event
    if isinstance(event, CloudTrailRecord):
        return f"{record.source.split('.', 1)[0]}:{event.eventName}"
    return f"health:{record.name}"


# Request parameters that name what a call acted on, in the order worth showing.
_TARGET_PARAMS = (
    "userName", "roleName", "groupName", "policyArn", "policyName", "accessKeyId", "bucketName",
    "groupId", "networkAclId", "routeTableId", "vpcId", "internetGatewayId", "customerGatewayId",
    "vpcPeeringConnectionId", "keyId", "trailName", "name", "functionName", "stateMachineArn", "roleArn",
    "rule", "configurationRecorderName", "deliveryChannelName", "accountId", "organizationalUnitId",
    "policyId", "targetId", "topicArn", "tableName", "secretId", "serialNumber",
)
_TARGET_ORDER = {name: index for index, name in enumerate(_TARGET_PARAMS)}
_MAX_DEFAULT_RESOURCES = 10


def default_resources(record: Record) -> list[str]:
    """``name=value`` for the request parameters that identify the target, then CloudTrail's ARNs."""
    event = record.event
    if not isinstance(event, CloudTrailRecord):
        return [e.entityValue for e in event.affectedEntities or () if e.entityValue]
    out: list[str] = []
    params = record.params
    if params:
        # Requests carry a handful of parameters; walk those, not the whole list of interesting names.
        hits = sorted(
            (_TARGET_ORDER[name], name, value)
            for name, value in params.items()
            if name in _TARGET_ORDER and isinstance(value, str) and value
        )
        out.extend(f"{name}={value}" for _, name, value in hits)
    key = record.response.get("accessKey")
    if isinstance(key, dict) and isinstance(key.get("accessKeyId"), str):
        out.append(f"accessKeyId={key['accessKeyId']}")
    for ref in event.resources or ():
        if ref.ARN and not any(ref.ARN in item for item in out):
            out.append(ref.ARN)
    return out[:_MAX_DEFAULT_RESOURCES]


def failed_suffix(record: Record) -> str:
    return f" (attempt failed: {record.error_code})" if record.error_code else ""


def walk_strings(value: Any, depth: int = 0) -> list[str]:
    """Every string inside a free-form structure (bounded; request parameters can be large)."""
    if isinstance(value, str):
        return [value]
    if depth > 6:
        return []
    if isinstance(value, dict):
        return [s for item in value.values() for s in walk_strings(item, depth + 1)]
    if isinstance(value, list):
        return [s for item in value[:200] for s in walk_strings(item, depth + 1)]
    return []


def names(*items: str) -> frozenset[str]:
    return frozenset(items)
