"""AWS calls signed with a given key or session, for tests of what AWS lets that key or session do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local.runtime import LocalRuntime


def client_for(runtime: LocalRuntime, service: str, creds: dict[str, str]) -> Any:
    """A client signed with ``creds`` (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken`` if a session); one
    attempt and no client-side validation, so what is refused is refused by the server."""
    return boto3.session.Session().client(
        service, endpoint_url=runtime.endpoint, region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken"),
        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))


def outcome(call: Callable[[], Any]) -> str:
    """'ok', or the error code AWS answered."""
    try:
        call()
        return "ok"
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])


def sns_outcome(runtime: LocalRuntime, creds: dict[str, str]) -> str:
    """The outcome of SNS ListTopics signed with ``creds``: the probe a session without MFA can make (it can
    call no IAM action at all)."""
    return outcome(lambda: client_for(runtime, "sns", creds).list_topics())
