"""CloudTrail for the embedded AWS: every IAM call made against moto becomes an
"AWS API Call via CloudTrail" event on the local bus, with the caller's identity, as AWS would send it.

Reads are recorded too, with ``readOnly: true`` as CloudTrail marks them: EventBridge delivers them only
to rules in state ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS (local/eventbridge.py), which is what the
detections of denied and root reads depend on.

Secrets never enter a record: CreateAccessKey's responseElements carry the key id and status only,
exactly like the real CloudTrail record.
"""

from __future__ import annotations

import re
import uuid
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


def install(put: Callable[[dict[str, Any]], Any]) -> None:
    """Record IAM calls from now on and hand each EventBridge-shaped event to ``put``."""
    from moto.iam.responses import IamResponse

    _sink["put"] = put
    if getattr(IamResponse, "_cloudtrail_installed", False):
        return
    original = IamResponse.call_action

    def call_action(self: Any) -> Any:
        status, headers, body = original(self)
        action = self._get_action()
        if _sink["put"] is not None and action:
            _sink["put"](_event(self, action, int(status), body if isinstance(body, str) else body.decode()))
        return status, headers, body

    IamResponse.call_action = call_action
    IamResponse._cloudtrail_installed = True


def uninstall() -> None:
    _sink["put"] = None


def _identity(response: Any) -> dict[str, Any]:
    from moto.iam.models import iam_backends

    match = _CREDENTIAL.search(response.headers.get("Authorization", ""))
    key_id = match.group(1) if match else ""
    account = response.current_account
    for user in iam_backends[account]["aws"].users.values():
        if any(k.access_key_id == key_id for k in user.access_keys):
            return {"type": "IAMUser", "principalId": user.id, "arn": user.arn, "accountId": account,
                    "accessKeyId": key_id, "userName": user.name}
    return {"type": "IAMUser", "principalId": "UNKNOWN", "accountId": account, "accessKeyId": key_id}


def _parameters(response: Any) -> dict[str, Any]:
    params = {}
    for name, values in response.querystring.items():
        if name in ("Action", "Version") or not values:
            continue
        params[name[:1].lower() + name[1:]] = values[0]
    return params


def _event(response: Any, action: str, status: int, body: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": _identity(response),
        "eventTime": now,
        "eventSource": "iam.amazonaws.com",
        "eventName": action,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "127.0.0.1",
        "userAgent": response.headers.get("User-Agent", ""),
        "requestParameters": _parameters(response),
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": action.startswith(_READ_ONLY),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": response.current_account,
        "eventCategory": "Management",
    }
    if status >= 400:
        error = _ERROR.search(body)
        record["errorCode"], record["errorMessage"] = (error.group(1), error.group(2)) if error else ("Error", "")
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
        "source": "aws.iam",
        "account": response.current_account,
        "time": now,
        "region": "us-east-1",
        "resources": [],
        "detail": record,
    }
