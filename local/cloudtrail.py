"""CloudTrail for the embedded AWS: every IAM call made against moto becomes an
"AWS API Call via CloudTrail" event on the local bus, with the caller's identity, as AWS would send it.

Reads are recorded too, with ``readOnly: true`` as CloudTrail marks them: EventBridge delivers them only
to rules in state ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS (local/eventbridge.py), which is what the
detections of denied and root reads depend on.

Secrets never enter a record: CreateAccessKey's responseElements carry the key id and status only,
exactly like the real CloudTrail record.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

#: IAM's read-only actions (CloudTrail ``readOnly: true``): the Get/List/Generate/Simulate families.
_READ_ONLY = ("Get", "List", "Generate", "Simulate")
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")
_KEY_ID = re.compile(r"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>")
_STATUS = re.compile(r"<Status>(\w+)</Status>")
_ERROR = re.compile(r"<Code>([^<]+)</Code>.*?<Message>([^<]*)</Message>", re.S)

_sink: dict[str, Callable[[dict[str, Any]], Any] | None] = {"put": None}
#: STS calls CloudTrail records that matter to the audit: minting sessions (the rest is noise here).
_STS_RECORDED = frozenset({"GetSessionToken", "GetFederationToken"})
#: What LookupEvents answers from: the management events recorded since install (newest last). CloudTrail
#: keeps 90 days; a bounded history is enough for a local run.
_history: deque[dict[str, Any]] = deque(maxlen=10_000)
_history_lock = threading.Lock()


def install(put: Callable[[dict[str, Any]], Any]) -> None:
    """Record IAM calls from now on and hand each EventBridge-shaped event to ``put``."""
    from moto.iam.responses import IamResponse
    from moto.sts.responses import TokenResponse

    _sink["put"] = put
    if getattr(IamResponse, "_cloudtrail_installed", False):
        return
    serve_lookup_events()
    for response_class, source in ((IamResponse, "iam"), (TokenResponse, "sts")):
        response_class.call_action = _recording(response_class.call_action, source)
    IamResponse._cloudtrail_installed = True


def _recording(original: Callable[[Any], Any], source: str) -> Callable[[Any], Any]:
    def call_action(self: Any) -> Any:
        status, headers, body = original(self)
        action = self._get_action()
        if _sink["put"] is not None and action and (source == "iam" or action in _STS_RECORDED):
            event = _event(self, action, int(status), body if isinstance(body, str) else body.decode(), source)
            with _history_lock:
                _history.append(event["detail"])
            _sink["put"](event)
        return status, headers, body

    return call_action


def serve_lookup_events() -> None:
    """CloudTrail LookupEvents (moto has none) over the recorded events: the attributes AWS allows (one per
    call), StartTime/EndTime, newest first, MaxResults at most 50 with a NextToken, as in
    https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_LookupEvents.html."""
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.core.exceptions import JsonRESTError

    fields = {"EventId": ("eventID",), "EventName": ("eventName",), "ReadOnly": ("readOnly",),
              "Username": ("userIdentity", "userName"), "EventSource": ("eventSource",),
              "AccessKeyId": ("userIdentity", "accessKeyId")}

    def lookup_events(self: Any) -> str:
        params = json.loads(self.body or "{}")
        attributes = params.get("LookupAttributes") or []
        if len(attributes) > 1:
            raise JsonRESTError("InvalidLookupAttributesException", "Only one lookup attribute is allowed")
        limit = int(params.get("MaxResults") or 50)
        if not 1 <= limit <= 50:
            raise JsonRESTError("InvalidMaxResultsException", "MaxResults must be between 1 and 50")
        start, end = _when(params.get("StartTime")), _when(params.get("EndTime"))
        with _history_lock:
            records = list(reversed(_history))
        for attribute in attributes:
            path = fields.get(attribute.get("AttributeKey", ""))
            if path is None:
                raise JsonRESTError("InvalidLookupAttributesException", "Unknown lookup attribute")
            wanted = str(attribute.get("AttributeValue", ""))
            records = [r for r in records if str(_dig(r, path)).lower() == wanted.lower()]
        records = [r for r in records if (start is None or r["eventTime"] >= start)
                   and (end is None or r["eventTime"] <= end)]
        offset = int(params.get("NextToken") or 0)
        page = records[offset:offset + limit]
        answer: dict[str, Any] = {"Events": [{
            "EventId": r["eventID"], "EventName": r["eventName"], "ReadOnly": str(r["readOnly"]).lower(),
            "AccessKeyId": r["userIdentity"].get("accessKeyId"), "EventTime": _epoch(r["eventTime"]),
            "EventSource": r["eventSource"], "Username": r["userIdentity"].get("userName"),
            "Resources": [], "CloudTrailEvent": json.dumps(r),
        } for r in page]}
        if offset + limit < len(records):
            answer["NextToken"] = str(offset + limit)
        return json.dumps(answer)

    if not hasattr(CloudTrailResponse, "lookup_events"):
        CloudTrailResponse.lookup_events = lookup_events


def _dig(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _when(value: Any) -> str | None:
    """A request time (epoch seconds from botocore) as the records' eventTime format."""
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(event_time: str) -> float:
    return datetime.strptime(event_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def uninstall() -> None:
    _sink["put"] = None


def _identity(response: Any) -> dict[str, Any]:
    """The record's ``userIdentity`` in the shape CloudTrail gives each kind of caller
    (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html):
    an IAM user's key, or a GetSessionToken session, is ``IAMUser``; a GetFederationToken session is
    ``FederatedUser`` whose ``sessionIssuer`` is the minting user; a role session (AssumeRole, or
    AssumeRoleWithWebIdentity with ``webIdFederationData`` naming the OIDC provider) is ``AssumedRole`` whose
    ``sessionIssuer`` is the role."""
    from moto.iam.models import iam_backends

    from local import sts_sessions

    match = _CREDENTIAL.search(response.headers.get("Authorization", ""))
    key_id = match.group(1) if match else ""
    account = response.current_account
    users = iam_backends[account]["aws"].users
    minted = sts_sessions.session(key_id)
    if minted is not None:
        user = users.get(minted.user_name)
        attributes = {"creationDate": _stamp(minted.issued_at), "mfaAuthenticated": "false"}
        if minted.federated:
            return {"type": "FederatedUser", "principalId": f"{account}:{minted.federated_name}",
                    "arn": sts_sessions.federated_arn(minted), "accountId": account, "accessKeyId": key_id,
                    "sessionContext": {"sessionIssuer": _user_issuer(user, minted.user_name, account),
                                       "webIdFederationData": {}, "attributes": attributes}}
        # A GetSessionToken session acts as its user; CloudTrail adds its sessionContext.
        return {"type": "IAMUser", "principalId": user.id if user else "UNKNOWN",
                "arn": user.arn if user else None, "accountId": account, "accessKeyId": key_id,
                "userName": minted.user_name, "sessionContext": {"attributes": attributes}}
    for user in users.values():
        if any(k.access_key_id == key_id for k in user.access_keys):
            return {"type": "IAMUser", "principalId": user.id, "arn": user.arn, "accountId": account,
                    "accessKeyId": key_id, "userName": user.name}
    assumed = _assumed_role(account, key_id)
    if assumed is not None:
        return assumed
    return {"type": "IAMUser", "principalId": "UNKNOWN", "accountId": account, "accessKeyId": key_id}


def _user_issuer(user: Any, name: str, account: str) -> dict[str, Any]:
    return {"type": "IAMUser", "principalId": user.id if user else "UNKNOWN", "arn": user.arn if user else None,
            "accountId": account, "userName": name}


def _assumed_role(account: str, key_id: str) -> dict[str, Any] | None:
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    from local import sts_web_identity

    session = next((r for r in sts_backends[account]["global"].assumed_roles if r.access_key_id == key_id), None)
    if session is None:
        return None
    role_name = session.role_arn.rsplit("/", 1)[-1]
    role = next((r for r in iam_backends[account]["aws"].roles.values() if r.arn == session.role_arn), None)
    role_id = role.id if role is not None else "UNKNOWN"
    provider = sts_web_identity.provider_of(key_id)
    created = getattr(session.access_key, "create_date", None) or datetime.now(UTC)
    context: dict[str, Any] = {
        "sessionIssuer": {"type": "Role", "principalId": role_id, "arn": session.role_arn, "accountId": account,
                          "userName": role_name},
        "webIdFederationData": {"federatedProvider": provider, "attributes": {}} if provider else {},
        "attributes": {"creationDate": _stamp(created), "mfaAuthenticated": "false"},
    }
    return {"type": "AssumedRole", "principalId": f"{role_id}:{session.session_name}", "arn": session.arn,
            "accountId": account, "accessKeyId": key_id, "sessionContext": context}


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parameters(response: Any) -> dict[str, Any]:
    params = {}
    for name, values in response.querystring.items():
        if name in ("Action", "Version") or not values:
            continue
        params[name[:1].lower() + name[1:]] = values[0]
    return params


def _event(response: Any, action: str, status: int, body: str, source: str = "iam") -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": _identity(response),
        "eventTime": now,
        "eventSource": f"{source}.amazonaws.com",
        "eventName": action,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "127.0.0.1",
        "userAgent": response.headers.get("User-Agent", ""),
        "requestParameters": _parameters(response),
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        # CloudTrail marks STS's session-minting calls read-only too.
        "readOnly": source == "sts" or action.startswith(_READ_ONLY),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": response.current_account,
        "eventCategory": "Management",
    }
    if status >= 400:
        error = _ERROR.search(body)
        record["errorCode"], record["errorMessage"] = (error.group(1), error.group(2)) if error else ("Error", "")
    elif action in _STS_RECORDED:
        key_id = _KEY_ID.search(body)  # the session's key id only, never its secret or token
        record["responseElements"] = {"credentials": {"accessKeyId": key_id.group(1) if key_id else None}}
    elif action == "CreateAccessKey":
        key_id, key_status = _KEY_ID.search(body), _STATUS.search(body)
        record["responseElements"] = {"accessKey": {
            "accessKeyId": key_id.group(1) if key_id else None,
            "status": key_status.group(1) if key_status else "Active",
            "userName": record["requestParameters"].get("userName"),
        }}
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": f"aws.{source}",
        "account": response.current_account,
        "time": now,
        "region": "us-east-1",
        "resources": [],
        "detail": record,
    }
