"""The escrow is readable by its functions and the break-glass identity only: not by an administrator.

Two documents guard it, and both are enforced locally by local/iam_resources.py (moto evaluates neither):

- every escrow secret's resource policy (written by ``Escrow`` when it stashes a secret) explicitly denies
  reading, writing, relabelling, re-keying and un-guarding the secret to every ``aws:PrincipalArn`` but the
  escrow's functions and the break-glass role;
- the escrow's customer-managed KMS key (alias per stage, ``ROTATOR_ESCROW_KMS_KEY_ID``) has no statement
  for the account root: only the escrow's functions (through Secrets Manager) and the break-glass role may
  decrypt, only the key-admin role may change its policy, and explicit Denies name everyone else.

The operator identity of the local runtime is an administrator (``Action: *`` on ``*``). The last tests
check the documents a real deployment writes (role ARNs, CloudFormation and ``deploy apply`` share them)
statically with the same evaluator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.keys import CURRENT, PENDING, escrow_resource_policy
from chalicelib.settings import get_settings
from deploy import naming, resources
from local import iam_consistency
from local.iam_resources import Decision, evaluate
from local.runtime import ACCOUNT, REGION, LocalRuntime
from local.world import World
from tests.conftest import new_user_name
from tests.invariants import alerts_for


def denied(call: Any) -> bool:
    try:
        call()
    except ClientError as exc:
        error = exc.response["Error"]
        return error["Code"] in ("AccessDenied", "AccessDeniedException") or (
            error["Code"] == "403" and "<Code>AccessDenied</Code>" in error["Message"])
    return False


def client(runtime: LocalRuntime, identity: Any, service: str) -> Any:
    return boto3.session.Session(aws_access_key_id=identity.access_key_id,
                                 aws_secret_access_key=identity.secret_access_key,
                                 aws_session_token=identity.session_token,
                                 region_name=REGION).client(service, endpoint_url=runtime.endpoint)


@pytest.fixture(scope="module")
def escrowed(world: World, runtime: LocalRuntime) -> Iterator[tuple[str, str, str]]:
    """(user, escrow secret id, the key id the escrow's AWSCURRENT holds) after one real rotation."""
    name = new_user_name("esc")
    world.add_user(name, [f"acme/{name}"])
    result = world.rotate(name)
    assert result["status"] == "SUCCEEDED", alerts_for(world, name)
    (key_id,) = world.key_statuses(name)
    iam_consistency.settle()
    yield name, f"{runtime.names.escrow_prefix}/{name}", key_id


def test_the_escrow_uses_the_stage_s_customer_managed_key(escrowed: tuple, runtime: LocalRuntime) -> None:
    _, secret_id, _ = escrowed
    assert get_settings().escrow_kms_key_id == runtime.names.kms_alias == "alias/ci-key-rotator-local-escrow"
    kms = runtime.client("kms")
    key = kms.describe_key(KeyId=runtime.names.kms_alias)["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["Arn"] == runtime.escrow_kms_key_arn
    assert runtime.client("secretsmanager").describe_secret(SecretId=secret_id)["KmsKeyId"] == runtime.names.kms_alias


def test_every_escrow_secret_carries_the_resource_policy(escrowed: tuple, runtime: LocalRuntime) -> None:
    _, secret_id, _ = escrowed
    import json

    document = json.loads(runtime.client("secretsmanager").get_resource_policy(SecretId=secret_id)["ResourcePolicy"])
    assert document == escrow_resource_policy(get_settings().escrow_principal_list)
    admitted = get_settings().escrow_principal_list
    assert sorted(p.rsplit("/", 1)[1] for p in admitted) == sorted(
        [*(runtime.function_name(f) for f in resources.escrow_functions()), runtime.names.break_glass_role])


def test_an_administrator_cannot_read_relabel_rekey_or_unguard_an_escrow_secret(
        escrowed: tuple, runtime: LocalRuntime) -> None:
    _, secret_id, _ = escrowed
    sm = runtime.client("secretsmanager")  # the operator: Action "*" on "*"
    versions = sm.list_secret_version_ids(SecretId=secret_id)["Versions"]
    current = next(v["VersionId"] for v in versions if CURRENT in v.get("VersionStages", []))
    assert denied(lambda: sm.get_secret_value(SecretId=secret_id))
    assert denied(lambda: sm.update_secret_version_stage(SecretId=secret_id, VersionStage=PENDING,
                                                         MoveToVersionId=current))
    assert denied(lambda: sm.put_secret_value(SecretId=secret_id, SecretString="{}"))
    assert denied(lambda: sm.delete_resource_policy(SecretId=secret_id))
    assert denied(lambda: sm.put_resource_policy(SecretId=secret_id, ResourcePolicy='{"Version": "2012-10-17", '
                                                 '"Statement": []}'))
    assert denied(lambda: sm.update_secret(SecretId=secret_id, KmsKeyId="alias/aws/secretsmanager"))
    # The process-wide default identity (secretsmanager:* on *) is no better.
    assert denied(lambda: boto3.client("secretsmanager", endpoint_url=runtime.endpoint).get_secret_value(
        SecretId=secret_id))


def test_the_escrow_functions_read_it_and_no_other_function_does(escrowed: tuple, runtime: LocalRuntime) -> None:
    _, secret_id, key_id = escrowed
    readers = set(resources.escrow_readers())
    assert {"push_target", "await_key_live", "rollback"} <= readers
    for function in runtime.function_identities:
        sm = client(runtime, runtime.identity_of(function), "secretsmanager")
        if function in readers:
            value = sm.get_secret_value(SecretId=secret_id)["SecretString"]
            assert key_id in value, function
        else:
            assert denied(lambda sm=sm: sm.get_secret_value(SecretId=secret_id)), function


def test_the_break_glass_identity_reads_it(escrowed: tuple, runtime: LocalRuntime) -> None:
    _, secret_id, key_id = escrowed
    sm = client(runtime, runtime.break_glass, "secretsmanager")
    assert key_id in sm.get_secret_value(SecretId=secret_id, VersionStage=CURRENT)["SecretString"]


def test_the_key_alone_stops_an_administrator(runtime: LocalRuntime) -> None:
    """A secret encrypted with the escrow key but without the resource policy: the key policy still
    refuses the administrator, through Secrets Manager and directly."""
    sm, kms = runtime.client("secretsmanager"), runtime.client("kms")
    name = f"{runtime.names.escrow_prefix}/{new_user_name('unguarded')}"
    sm.create_secret(Name=name, KmsKeyId=runtime.names.kms_alias)
    assert denied(lambda: sm.put_secret_value(SecretId=name, SecretString="{}")), "kms:GenerateDataKey"
    assert denied(lambda: kms.encrypt(KeyId=runtime.names.kms_alias, Plaintext=b"x"))
    assert denied(lambda: kms.put_key_policy(KeyId=runtime.names.kms_alias, PolicyName="default", Policy="{}"))
    assert not denied(lambda: kms.describe_key(KeyId=runtime.names.kms_alias)), "reading its settings is harmless"
    with aws.acting_as(runtime.identity_of("create_key")):  # the escrow's writer can
        aws.client("secretsmanager").put_secret_value(SecretId=name, SecretString="{}")


def test_the_key_admin_administers_the_key_and_cannot_use_it(runtime: LocalRuntime) -> None:
    iam_consistency.settle()
    kms = client(runtime, runtime.key_admin, "kms")
    policy = kms.get_key_policy(KeyId=runtime.escrow_kms_key_arn, PolicyName="default")["Policy"]
    kms.put_key_policy(KeyId=runtime.escrow_kms_key_arn, PolicyName="default", Policy=policy)
    assert denied(lambda: kms.encrypt(KeyId=runtime.escrow_kms_key_arn, Plaintext=b"x"))


# -- the documents a real deployment writes, evaluated statically -----------------------------------------

STAGE = "prod"
NAMES = naming.StageNames(STAGE)
ROLE = f"arn:aws:iam::{ACCOUNT}:role/"
ADMIN = ROLE + "Administrator"
VIA = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com", "kms:CallerAccount": ACCOUNT}


def deployed_key_policy() -> dict[str, Any]:
    return resources.key_policy(
        f"arn:aws:iam::{ACCOUNT}:root", [ROLE + NAMES.function(f) for f in resources.escrow_readers()],
        [ROLE + NAMES.function(f) for f in resources.escrow_writers()], VIA["kms:ViaService"], ACCOUNT,
        key_admin=ROLE + NAMES.key_admin_role, break_glass=ROLE + NAMES.break_glass_role,
        direct_users={f: (ROLE + NAMES.function(f), a) for f, a in resources.key_users().items()})


def key_decision(principal: str, action: str, via: bool = True) -> Decision:
    context = {"aws:PrincipalArn": principal, **(VIA if via else {"kms:CallerAccount": ACCOUNT})}
    return evaluate(deployed_key_policy(), action, "arn:aws:kms:us-east-1:123456789012:key/k", principal, ACCOUNT,
                    context)


def test_the_key_policy_admits_its_users_and_denies_administrators() -> None:
    document = deployed_key_policy()
    assert not any(s.get("Principal") == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"} and "kms:*" in str(s["Action"])
                   for s in document["Statement"]), "no kms:* for the account root (it delegates to IAM)"
    for function in resources.escrow_readers():
        assert key_decision(ROLE + NAMES.function(function), "kms:Decrypt") is Decision.ALLOW, function
        assert key_decision(ROLE + NAMES.function(function), "kms:Decrypt", via=False) is not Decision.ALLOW, \
            "only through Secrets Manager"
    for function in resources.escrow_writers():
        assert key_decision(ROLE + NAMES.function(function), "kms:GenerateDataKey") is Decision.ALLOW
    assert key_decision(ROLE + NAMES.break_glass_role, "kms:Decrypt") is Decision.ALLOW
    for outsider in (ADMIN, ROLE + NAMES.key_admin_role, f"arn:aws:iam::{ACCOUNT}:user/alice"):
        for action in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:CreateGrant"):
            assert key_decision(outsider, action) is Decision.DENY, (outsider, action)
            assert key_decision(outsider, action, via=False) is Decision.DENY, (outsider, action)
    # The functions that seal task tokens with the same key use it directly, never through Secrets Manager.
    for function, actions in resources.key_users().items():
        assert function not in resources.escrow_functions(), function
        for action in actions:
            assert key_decision(ROLE + NAMES.function(function), action, via=False) is Decision.ALLOW
            assert key_decision(ROLE + NAMES.function(function), action) is Decision.NONE, "no statement admits it"
    assert key_decision(ADMIN, "kms:PutKeyPolicy") is Decision.DENY
    assert key_decision(ROLE + NAMES.key_admin_role, "kms:PutKeyPolicy") is Decision.ALLOW, "never orphaned"
    assert key_decision(ADMIN, "kms:DescribeKey") is Decision.DELEGATE, "deploy apply reads it through IAM"


def test_the_secret_policy_denies_everyone_but_the_escrow_functions_and_break_glass() -> None:
    document = escrow_resource_policy(resources.escrow_principal_patterns(STAGE))
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{NAMES.escrow_prefix}/ci-web-AbCdEf"

    def decision(principal: str, action: str) -> Decision:
        return evaluate(document, action, secret, principal, ACCOUNT, {"aws:PrincipalArn": principal})

    for function in resources.escrow_functions():
        assert decision(ROLE + NAMES.function(function), "secretsmanager:GetSecretValue") is not Decision.DENY
    assert decision(ROLE + NAMES.break_glass_role, "secretsmanager:GetSecretValue") is not Decision.DENY
    for outsider in (ADMIN, ROLE + NAMES.function("api_handler"), ROLE + NAMES.key_admin_role,
                     ROLE + naming.StageNames("dev").function("plan")):
        for action in ("secretsmanager:GetSecretValue", "secretsmanager:PutResourcePolicy",
                       "secretsmanager:DeleteResourcePolicy", "secretsmanager:UpdateSecretVersionStage"):
            assert decision(outsider, action) is Decision.DENY, (outsider, action)
