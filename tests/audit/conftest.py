"""Fixtures and a small factory of realistic CloudTrail / EventBridge events for the audit tests.

The real samples live in tests/audit/fixtures (with a README naming each one's public source), so
these tests never depend on a directory outside the repository.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.audit.context import AuditContext

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ACCOUNT = "111122223333"
ROTATOR_ROLE = "ci-key-rotator"
MANAGED = "ci-deployer"

_ids = itertools.count(1)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_record(name: str) -> dict[str, Any]:
    """The single CloudTrail record of a raw fixture, whether it is wrapped in Records or not."""
    data = fixture(name)
    return data["Records"][0] if "Records" in data else data


def event_id() -> str:
    return str(uuid.UUID(int=next(_ids)))


def iam_user(name: str = "alice", account: str = ACCOUNT) -> dict[str, Any]:
    return {
        "type": "IAMUser",
        "principalId": "AIDACKCEVSQ6C2EXAMPLE",
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "accountId": account,
        "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "userName": name,
    }


def assumed_role(role: str, session: str = "session", account: str = ACCOUNT, path: str = "/") -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEID:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": "ASIAEXAMPLEKEYID1234",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLEID",
                "arn": f"arn:aws:iam::{account}:role{path}{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2024-05-01T10:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def root(account: str = ACCOUNT) -> dict[str, Any]:
    return {"type": "Root", "principalId": account, "arn": f"arn:aws:iam::{account}:root", "accountId": account}


def aws_service(service: str = "lambda.amazonaws.com") -> dict[str, Any]:
    return {"type": "AWSService", "invokedBy": service}


def ct(
    name: str,
    source: str = "iam.amazonaws.com",
    *,
    identity: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    additional: dict[str, Any] | None = None,
    region: str = "us-east-1",
    event_time: str = "2024-05-01T10:15:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """A CloudTrail record shaped like the real thing (management event, eventVersion 1.09)."""
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": identity if identity is not None else iam_user(),
        "eventTime": event_time,
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.amzn.2 prompt/off command/iam",
        "requestParameters": params,
        "responseElements": response,
        "requestID": str(uuid.UUID(int=10_000 + next(_ids))),
        "eventID": event_id(),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message or f"User is not authorized to perform: {name}"
    if additional is not None:
        record["additionalEventData"] = additional
    record.update(extra)
    return record


def eventbridge(detail: dict[str, Any], detail_type: str | None = None, region: str = "us-east-1") -> dict[str, Any]:
    """Wrap a CloudTrail record (or Health detail) the way EventBridge delivers it to the Lambda."""
    if detail_type is None:
        detail_type = (
            "AWS Console Sign In via CloudTrail" if detail.get("eventSource") == "signin.amazonaws.com"
            else "AWS API Call via CloudTrail"
        )
    source = "aws." + str(detail.get("eventSource", "health.amazonaws.com")).split(".")[0]
    return {
        "version": "0",
        "id": event_id(),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": detail.get("eventTime", "2024-05-01T10:15:00Z"),
        "region": region,
        "resources": [],
        "detail": detail,
    }


def create_access_key(
    user: str = MANAGED, identity: dict[str, Any] | None = None, key: str = "AKIAI44QH8DHBEXAMPLE"
) -> dict[str, Any]:
    return ct(
        "CreateAccessKey",
        identity=identity if identity is not None else iam_user("alice"),
        params={"userName": user},
        response={
            "accessKey": {
                "accessKeyId": key, "status": "Active", "userName": user, "createDate": "May 1, 2024 10:15:00 AM",
            }
        },
    )


@pytest.fixture
def ctx() -> AuditContext:
    return AuditContext(managed_users={MANAGED}, rotator_role_name=ROTATOR_ROLE)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials for moto; never a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    _forget_clients()
    yield
    _forget_clients()


@pytest.fixture
def uid() -> str:
    """A suffix for resource names: moto's backends are process-global and are not reset here."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def moto_aws(aws_env: None) -> Iterator[None]:
    """moto in-process, without wiping its process-global backends and with IAM authentication off.

    ``mock_aws()`` as a context manager resets every backend on entry and exit, which would destroy the
    state of a local runtime another test module started in this process (and that runtime switches
    moto's IAM authentication on). So: no reset, unique names (``uid``), authentication off meanwhile.
    """
    from moto import mock_aws, settings
    from moto.core.authorization import ActionAuthenticatorMixin

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    mock = mock_aws()
    mock.start(reset=False)
    try:
        yield
    finally:
        mock.stop(remove_data=False)
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved


def _forget_clients() -> None:
    """Other suites point the shared clients at a moto server; start from fresh clients here."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    from chalicelib.aws import reset_clients

    reset_clients()
    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()
