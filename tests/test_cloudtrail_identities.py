"""The local CloudTrail names each kind of caller as CloudTrail does (local/cloudtrail.py), so the audit meets
the shapes it will meet on AWS: a role session is ``AssumedRole`` (a web-identity one names its OIDC provider),
a GetFederationToken session ``FederatedUser`` issued by the minting user
(https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.audit.context import AuditContext
from chalicelib.audit.models import Record, iter_records
from local import cloudtrail
from local.runtime import LocalRuntime
from local.world import World
from tests.conftest import new_user_name
from tests.test_oidc_federation import _assume, _federated
from tests.test_sts_strict import _federate, _user_with_policy


def _records_of(runtime: LocalRuntime, access_key_id: str) -> list[dict[str, Any]]:
    trail = runtime.client("cloudtrail")
    events = trail.lookup_events(LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": access_key_id}])
    return [json.loads(e["CloudTrailEvent"]) for e in events["Events"]]


def _parsed(record: dict[str, Any]) -> Record:
    (parsed,) = iter_records({"Records": [record]})
    assert isinstance(parsed, Record), parsed
    return parsed


def test_a_web_identity_role_session_is_recorded_as_the_assumed_role(audited: World) -> None:
    runtime = audited.runtime
    _, name, federation, role_arn = _federated(audited, runtime, "github")
    credentials = _assume(runtime, role_arn, audited.github.mint_id_token(name, federation.audience))["Credentials"]
    session = boto3.session.Session(aws_access_key_id=credentials["AccessKeyId"],
                                    aws_secret_access_key=credentials["SecretAccessKey"],
                                    aws_session_token=credentials["SessionToken"], region_name="us-east-1")
    with pytest.raises(ClientError):  # the role allows GetCallerIdentity only: denied, and recorded
        session.client("iam", endpoint_url=runtime.endpoint).list_users()

    (record,) = _records_of(runtime, credentials["AccessKeyId"])
    identity = record["userIdentity"]
    role_name = role_arn.rsplit("/", 1)[1]
    assert (identity["type"], record["eventName"], record["errorCode"]) == ("AssumedRole", "ListUsers", "AccessDenied")
    assert re.fullmatch(rf"arn:aws:sts::\d{{12}}:assumed-role/{role_name}/test-session", identity["arn"])
    assert identity["principalId"].endswith(":test-session") and identity["principalId"].startswith("AROA")
    context = identity["sessionContext"]
    assert context["sessionIssuer"]["type"] == "Role" and context["sessionIssuer"]["arn"] == role_arn
    assert context["sessionIssuer"]["userName"] == role_name
    provider = context["webIdFederationData"]["federatedProvider"]
    assert provider.endswith(":oidc-provider/" + federation.issuer.removeprefix("https://"))
    assert credentials["SecretAccessKey"] not in json.dumps(record)

    # The audit reads the session's issuer: a role session is neither a managed user's key nor the rotator.
    parsed = _parsed(record)
    audit = AuditContext(managed_users=frozenset({name}), rotator_role_name="ci-key-rotator")
    assert parsed.issuer_arn == role_arn
    assert audit.managed_caller(parsed) == "" and not audit.is_rotator(parsed)


def test_a_federation_session_is_recorded_as_its_federated_user_issued_by_the_minting_user(
        clean_world: World) -> None:
    runtime = clean_world.runtime
    user, key = _user_with_policy(clean_world)
    session = _federate(runtime, key, Name="ci-broker")
    account = runtime.client("sts").get_caller_identity()["Account"]
    # A request signed with the session's key, as the recorder sees it.
    request = SimpleNamespace(current_account=account, headers={
        "Authorization": f"AWS4-HMAC-SHA256 Credential={session['AccessKeyId']}/20261130/us-east-1/iam/aws4_request"})

    identity = cloudtrail._identity(request)

    assert identity["type"] == "FederatedUser"
    assert identity["principalId"] == f"{account}:ci-broker"
    assert identity["arn"] == f"arn:aws:sts::{account}:federated-user/ci-broker"
    issuer = identity["sessionContext"]["sessionIssuer"]
    assert (issuer["type"], issuer["userName"]) == ("IAMUser", user) and re.fullmatch(rf"arn:aws:iam::{account}:user/(.+/)?{user}", issuer["arn"])
    # The audit traces the session back to the managed user whose key minted it.
    record = {"eventVersion": "1.08", "eventSource": "iam.amazonaws.com", "eventName": "ListUsers",
              "eventTime": "2026-11-30T12:00:00Z", "userIdentity": identity}
    assert AuditContext(managed_users=frozenset({user})).managed_caller(_parsed(record)) == user


def test_the_rotators_own_calls_are_sessions_of_each_functions_execution_role(audited: World) -> None:
    """Lambda signs a function's calls with a session of its execution role: the audit knows the rotator by the
    session's issuer, as on AWS, not by an IAM user that exists only locally."""
    import os

    runtime = audited.runtime
    user = new_user_name("ctid")
    audited.add_user(user, [f"acme/{user}"])
    assert audited.rotate(user)["status"] == "SUCCEEDED"
    (new_key,) = audited.key_statuses(user)

    (created,) = [r for r in _records_of(runtime, runtime.identity_of("create_key").access_key_id)
                  if r["eventName"] == "CreateAccessKey"
                  and r["responseElements"]["accessKey"]["accessKeyId"] == new_key]
    identity = created["userIdentity"]
    role = runtime.function_name("create_key")
    assert identity["type"] == "AssumedRole" and identity["arn"].endswith(f":assumed-role/{role}/{role}")
    assert identity["sessionContext"]["sessionIssuer"]["arn"].endswith(f":role/service/{role}")
    assert "userName" not in identity and identity["sessionContext"]["webIdFederationData"] == {}
    audit = AuditContext(managed_users=frozenset({user}),
                         rotator_role_name=os.environ["ROTATOR_AUDIT_ROTATOR_ROLE"])
    assert audit.is_rotator(_parsed(created))
