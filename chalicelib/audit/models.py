"""Event models and the one entry point that turns any accepted input into records.

Accepted inputs (``iter_records``): an EventBridge event ("AWS API Call via CloudTrail", "AWS Console
Sign In via CloudTrail", the other CloudTrail detail-types, "AWS Health Event"), a raw CloudTrail record,
a CloudTrail log file ``{"Records": [...]}``, an SQS/SNS batch whose bodies are any of these, and a JSON
array of any of these. Anything else becomes a :class:`Problem`; nothing here raises, so one bad record
never sinks a batch.

Each record is validated by pydantic exactly once; detections then read the validated model and the
plain dicts on :class:`Record` (requestParameters & co. are free-form per API, so they stay dicts).
Field names are CloudTrail's own (``eventName``, ``userIdentity``...) so AWS's docs apply verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from chalicelib.audit.masking import mask_text

CLOUDTRAIL_DETAIL_TYPES = (
    "AWS API Call via CloudTrail",
    "AWS Console Sign In via CloudTrail",
    "AWS Console Action via CloudTrail",
    "AWS Service Event via CloudTrail",
)
HEALTH_DETAIL_TYPE = "AWS Health Event"
HEALTH_SOURCE = "aws.health"

#: Arrays/wrappers nested deeper than this are refused (a hostile or broken file must not recurse us out).
_MAX_DEPTH = 8


def _lenient_dict(value: Any) -> Any:
    # These members are free-form per API; an odd scalar there is not worth dropping a real record.
    if value is None or isinstance(value, dict):
        return value
    return {"value": value}


def _lenient_list(value: Any) -> Any:
    return value if value is None or isinstance(value, list) else None


LenientDict = Annotated[dict[str, Any] | None, BeforeValidator(_lenient_dict)]


class _Model(BaseModel):
    # extra="ignore": the raw dict stays on the Record; copying unknown members costs ~30% of parse time.
    model_config = ConfigDict(extra="ignore", frozen=True)


class SessionIssuer(_Model):
    type: str | None = None
    principalId: str | None = None
    arn: str | None = None
    accountId: str | None = None
    userName: str | None = None


class SessionContext(_Model):
    sessionIssuer: SessionIssuer | None = None
    attributes: LenientDict = None
    sourceIdentity: str | None = None


class UserIdentity(_Model):
    type: str | None = None
    principalId: str | None = None
    arn: str | None = None
    accountId: str | None = None
    accessKeyId: str | None = None
    userName: str | None = None
    invokedBy: str | None = None
    sessionContext: SessionContext | None = None


class ResourceRef(_Model):
    ARN: str | None = None
    accountId: str | None = None
    type: str | None = None


class CloudTrailRecord(_Model):
    """One CloudTrail event, as in a log file or as an EventBridge ``detail``."""

    eventVersion: str | None = None
    userIdentity: UserIdentity | None = None
    eventTime: datetime | None = None
    eventSource: str
    eventName: str
    awsRegion: str | None = None
    sourceIPAddress: str | None = None
    userAgent: str | None = None
    requestParameters: LenientDict = None
    responseElements: LenientDict = None
    additionalEventData: LenientDict = None
    errorCode: str | None = None
    errorMessage: str | None = None
    requestID: str | None = None
    eventID: str | None = None
    eventType: str | None = None
    readOnly: bool | None = None
    managementEvent: bool | None = None
    recipientAccountId: str | None = None
    sharedEventID: str | None = None
    resources: Annotated[list[ResourceRef] | None, BeforeValidator(_lenient_list)] = None


class AffectedEntity(_Model):
    entityValue: str | None = None
    entityArn: str | None = None
    tags: LenientDict = None


class HealthEventDetail(_Model):
    """The ``detail`` of an "AWS Health Event" (older samples lack communicationId/statusCode)."""

    eventArn: str | None = None
    service: str
    eventTypeCode: str
    eventTypeCategory: str | None = None
    eventScopeCode: str | None = None
    communicationId: str | None = None
    statusCode: str | None = None
    # Health writes RFC 1123 dates ("Sat, 05 Jun 2016 15:10:09 GMT"); kept verbatim.
    startTime: str | None = None
    endTime: str | None = None
    lastUpdatedTime: str | None = None
    affectedAccount: str | None = None
    eventDescription: Annotated[list[dict[str, Any]] | None, BeforeValidator(_lenient_list)] = None
    affectedEntities: Annotated[list[AffectedEntity] | None, BeforeValidator(_lenient_list)] = None


class CloudTrailEventBridgeEvent(EventBridgeModel):
    detail_type: Literal[
        "AWS API Call via CloudTrail",
        "AWS Console Sign In via CloudTrail",
        "AWS Console Action via CloudTrail",
        "AWS Service Event via CloudTrail",
    ] = Field(alias="detail-type")
    detail: CloudTrailRecord


class HealthEventBridgeEvent(EventBridgeModel):
    detail_type: Literal["AWS Health Event"] = Field(alias="detail-type")
    detail: HealthEventDetail


# Lambda's CloudTrail names carry an API version: UpdateFunctionCode20150331v2 -> UpdateFunctionCode.
_VERSIONED_NAME = re.compile(r"^([A-Za-z]+?)\d{8}(?:v\d+)?$")
_EMPTY_IDENTITY = UserIdentity()
_EMPTY: dict[str, Any] = {}


def normalize_event_name(name: str) -> str:
    if name and name[-1].isdigit():
        match = _VERSIONED_NAME.match(name)
        if match:
            return match.group(1)
    return name


class Record:
    """One validated event plus the lookups every detection needs, computed once.

    ``kind`` is ``cloudtrail`` or ``health``. ``source``/``name`` are the index keys: eventSource and
    the version-less eventName, or ``aws.health`` and the Health eventTypeCode.
    """

    __slots__ = (
        "additional",
        "envelope_account",
        "envelope_id",
        "envelope_region",
        "envelope_time",
        "error_code",
        "event",
        "identity",
        "issuer_arn",
        "kind",
        "name",
        "origin",
        "params",
        "response",
        "source",
    )

    def __init__(
        self,
        event: CloudTrailRecord | HealthEventDetail,
        origin: str = "$",
        envelope: EventBridgeModel | None = None,
    ) -> None:
        self.event = event
        self.origin = origin
        if envelope is not None:
            self.envelope_id: str | None = envelope.id
            self.envelope_time: datetime | None = envelope.time
            self.envelope_account: str | None = envelope.account
            self.envelope_region: str | None = envelope.region
        else:
            self.envelope_id = self.envelope_time = self.envelope_account = self.envelope_region = None
        if isinstance(event, CloudTrailRecord):
            self.kind: Literal["cloudtrail", "health"] = "cloudtrail"
            self.source: str = event.eventSource
            self.name: str = normalize_event_name(event.eventName)
            identity = event.userIdentity or _EMPTY_IDENTITY
            self.identity: UserIdentity = identity
            self.params: dict[str, Any] = event.requestParameters or _EMPTY
            self.response: dict[str, Any] = event.responseElements or _EMPTY
            self.additional: dict[str, Any] = event.additionalEventData or _EMPTY
            self.error_code: str = event.errorCode or ""
            context = identity.sessionContext
            issuer = context.sessionIssuer if context is not None else None
            self.issuer_arn: str = (issuer.arn or "") if issuer is not None else ""
        else:
            self.kind = "health"
            self.source = HEALTH_SOURCE
            self.name = event.eventTypeCode
            self.identity = _EMPTY_IDENTITY
            self.params = self.response = self.additional = _EMPTY
            self.error_code = ""
            self.issuer_arn = ""

    @property
    def cloudtrail(self) -> CloudTrailRecord:
        assert isinstance(self.event, CloudTrailRecord), "not a CloudTrail record"
        return self.event

    @property
    def health(self) -> HealthEventDetail:
        assert isinstance(self.event, HealthEventDetail), "not a Health event"
        return self.event

    @property
    def event_id(self) -> str | None:
        if isinstance(self.event, CloudTrailRecord):
            return self.event.eventID or self.envelope_id
        return self.envelope_id or self.event.eventArn

    @property
    def event_time(self) -> datetime | None:
        if isinstance(self.event, CloudTrailRecord) and self.event.eventTime is not None:
            return self.event.eventTime
        return self.envelope_time

    @property
    def account(self) -> str | None:
        if isinstance(self.event, CloudTrailRecord):
            return self.event.recipientAccountId or self.identity.accountId or self.envelope_account
        return self.envelope_account or self.event.affectedAccount

    @property
    def region(self) -> str | None:
        if isinstance(self.event, CloudTrailRecord):
            return self.event.awsRegion or self.envelope_region
        return self.envelope_region

    @property
    def principal(self) -> str:
        """Who acted: the ARN when CloudTrail gives one, else ``<type>:<best name>``."""
        if self.kind == "health":
            return "AWS Health"
        identity = self.identity
        if identity.arn:
            return identity.arn
        kind = identity.type or "Unknown"
        who = identity.userName or identity.invokedBy or identity.principalId or identity.accountId
        return f"{kind}:{who}" if who else kind

    def param(self, name: str) -> str:
        """A string request parameter, or "" (free-form dicts: never trust the type)."""
        value = self.params.get(name)
        return value if isinstance(value, str) else ""

    def __repr__(self) -> str:
        return f"Record({self.kind}, {self.source}:{self.name}, id={self.event_id!r}, origin={self.origin!r})"


@dataclass(frozen=True, slots=True)
class Problem:
    """An input item that is not a usable record; ``origin`` is a JSONPath-like location."""

    origin: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


def iter_records(obj: Any) -> Iterator[Record | Problem]:
    """Every record in ``obj`` (any accepted shape), in order; malformed items yield a Problem."""
    yield from _walk(obj, "$", 0)


def _walk(obj: Any, origin: str, depth: int) -> Iterator[Record | Problem]:
    if depth > _MAX_DEPTH:
        yield Problem(origin, "nested too deeply")
        return
    if isinstance(obj, list):
        for index, item in enumerate(obj):
            yield from _walk(item, f"{origin}[{index}]", depth + 1)
        return
    if not isinstance(obj, dict):
        yield Problem(origin, f"expected a JSON object, got {_json_type(obj)}")
        return
    try:
        if "detail-type" in obj:
            yield _from_eventbridge(obj, origin)
        elif "Records" in obj:
            yield from _from_records(obj["Records"], f"{origin}.Records", depth)
        elif "eventSource" in obj or "eventName" in obj:
            yield _validated(CloudTrailRecord, obj, origin)
        elif "eventTypeCode" in obj and "service" in obj:
            yield _validated(HealthEventDetail, obj, origin)
        else:
            yield Problem(origin, "not a CloudTrail record, CloudTrail log file or EventBridge event")
    except Exception as exc:  # noqa: BLE001 - a broken item must never sink the batch
        yield Problem(origin, f"unreadable item ({type(exc).__name__})")


def _from_eventbridge(obj: dict[str, Any], origin: str) -> Record | Problem:
    detail_type = obj.get("detail-type")
    if detail_type in CLOUDTRAIL_DETAIL_TYPES:
        model: type[EventBridgeModel] = CloudTrailEventBridgeEvent
    elif detail_type == HEALTH_DETAIL_TYPE:
        model = HealthEventBridgeEvent
    else:
        shown = mask_text(detail_type[:80]) if isinstance(detail_type, str) else _json_type(detail_type)
        return Problem(origin, f"unsupported EventBridge detail-type {shown!r}")
    try:
        envelope = model.model_validate(obj)
    except ValidationError as exc:
        return Problem(origin, _describe(exc))
    detail = cast("CloudTrailRecord | HealthEventDetail", envelope.detail)
    return Record(detail, origin, envelope)


def _from_records(records: Any, origin: str, depth: int) -> Iterator[Record | Problem]:
    if not isinstance(records, list):
        yield Problem(origin, f"'Records' must be an array, got {_json_type(records)}")
        return
    for index, item in enumerate(records):
        where = f"{origin}[{index}]"
        body = _queue_body(item)
        if body is None:
            try:
                yield _validated(CloudTrailRecord, item, where) if isinstance(item, dict) else Problem(
                    where, f"expected a CloudTrail record, got {_json_type(item)}"
                )
            except Exception as exc:  # noqa: BLE001
                yield Problem(where, f"unreadable item ({type(exc).__name__})")
            continue
        try:
            inner = json.loads(body)
        except (ValueError, RecursionError):
            yield Problem(where, "message body is not JSON")
            continue
        yield from _walk(inner, f"{where}.body", depth + 1)


def _queue_body(item: Any) -> str | None:
    """The JSON body of an SQS or SNS delivery record (EventBridge -> SQS/SNS -> Lambda), else None."""
    if not isinstance(item, dict):
        return None
    body = item.get("body")
    if item.get("eventSource") == "aws:sqs" and isinstance(body, str):
        return body
    sns = item.get("Sns")
    message = sns.get("Message") if isinstance(sns, dict) else None
    if item.get("EventSource") == "aws:sns" and isinstance(message, str):
        return message
    return None


def _validated(model: type[CloudTrailRecord] | type[HealthEventDetail], obj: Any, origin: str) -> Record | Problem:
    try:
        return Record(model.model_validate(obj), origin)
    except ValidationError as exc:
        return Problem(origin, _describe(exc))


def _describe(exc: ValidationError) -> str:
    # include_input=False: the offending value could be anything, including a credential.
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in errors[:3]]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid " + "; ".join(parts) + more


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
