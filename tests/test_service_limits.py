"""AWS's size limits, name rules and version semantics hold in the embedded runtime (local/service_limits.py),
and the product fits inside them: its config storage, its execution names, a retried CreateKey, and the
deployment steps AWS makes wait."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib import config as config_module
from chalicelib import keys
from chalicelib.ledger import Ledger
from chalicelib.workflow.state import execution_name
from deploy import config_store, naming, resources, retrying
from local import moto_patches, strict
from local.runtime import LocalRuntime
from local.service_limits import execution_name_problem
from local.world import World
from tests.conftest import new_user_name


def code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def fleet_yaml(users: int, stage: str = "limits") -> str:
    """A config of ``users`` users with one GitHub target each: about 280 bytes of YAML per user, with
    repository names as unalike as real ones (they decide how well the config compresses)."""
    return yaml.safe_dump({"users": [
        {"name": f"ci-service-{i:04d}", "targets": [{
            "id": "deploy", "provider": "github",
            "repository": f"acme/{hashlib.sha256(str(i).encode()).hexdigest()[:20]}",
            "token": f"secretsmanager:ci-key-rotator/{stage}/github-token", "secret_names": {
                "access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}}]}
        for i in range(users)]}, sort_keys=False)


# -- SSM Parameter Store: 4 KB Standard, 8 KB Advanced ----------------------------------------------------


def test_ssm_refuses_values_over_the_tier_limit(runtime: LocalRuntime) -> None:
    ssm, name = runtime.client("ssm"), f"/limits/{uuid.uuid4().hex}"
    ssm.put_parameter(Name=name, Value="x" * 4096, Type="String")
    for tier, size in (("Standard", 4097), ("Advanced", 8193), ("Intelligent-Tiering", 8193)):
        with pytest.raises(ClientError) as caught:
            ssm.put_parameter(Name=name, Value="x" * size, Type="String", Overwrite=True, Tier=tier)
        assert code(caught) == "ValidationException", tier
    ssm.put_parameter(Name=name, Value="x" * 8192, Type="String", Overwrite=True, Tier="Advanced")
    # Bytes, not characters: 2,049 two-byte characters are 4,098 bytes.
    with pytest.raises(ClientError):
        ssm.put_parameter(Name=f"{name}-utf8", Value="é" * 2049, Type="String")
    # moto alone would have taken it: the enforcement is the runtime's.
    with strict.override(ssm_standard_value_bytes=0, ssm_advanced_value_bytes=0):
        ssm.put_parameter(Name=f"{name}-lax", Value="x" * 60000, Type="String")


def test_the_old_config_storage_refuses_a_200_user_config(runtime: LocalRuntime) -> None:
    text = fleet_yaml(200)
    assert len(text.encode()) > 8192
    with pytest.raises(ClientError) as caught:
        # What deploy/resources.ensure_config did: the whole YAML as one parameter.
        runtime.client("ssm").put_parameter(Name=f"/ci-key-rotator/old/{uuid.uuid4().hex}", Value=text,
                                            Type="String", Overwrite=True, Tier="Intelligent-Tiering")
    assert code(caught) == "ValidationException"


@pytest.fixture
def stored_config(runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"/ci-key-rotator/local/limits-{uuid.uuid4().hex[:8]}/rotation-config"
    yield name
    config_store.remove(runtime.client("ssm"), name)
    config_module.clear_config_caches()


def test_a_1000_user_config_is_stored_and_read_by_a_function(runtime: LocalRuntime, stored_config: str) -> None:
    ssm, text = runtime.client("ssm"), fleet_yaml(1000)
    assert len(text.encode()) > 200_000
    assert config_store.store(ssm, stored_config, text, "test").endswith("parts")
    layout = config_store.plan(stored_config, text)
    assert len(layout.parts) > 1
    assert all(len(v.encode()) <= 4096 for v in [layout.head, *layout.parts.values()])
    from chalicelib import aws

    with aws.acting_as(runtime.identity_of("scheduler")):  # the scheduler's own policy reads it
        loaded = config_module.load_config(f"ssm:{stored_config}")
    assert len(loaded.users) == 1000 and loaded.users[999].name == "ci-service-0999"
    assert config_store.store(ssm, stored_config, text, "test") is None, "a re-run writes nothing"


def test_an_update_switches_generations_and_keeps_one_previous(runtime: LocalRuntime, stored_config: str) -> None:
    ssm = runtime.client("ssm")
    texts = [fleet_yaml(300), fleet_yaml(301), fleet_yaml(302)]
    for text in texts:
        config_store.store(ssm, stored_config, text, "test")
    generations = {p.rpartition("/")[0] for p in config_store._existing_parts(ssm, f"{stored_config}-parts")}
    wanted = {next(iter(config_store.plan(stored_config, t).parts)).rpartition("/")[0] for t in texts[1:]}
    assert generations == wanted, "the newest and the one it replaced; older parts are gone"
    assert len(config_module.load_config(f"ssm:{stored_config}").users) == 302
    # Back to a small config: one plain parameter again.
    config_store.store(ssm, stored_config, fleet_yaml(2), "test")
    assert ssm.get_parameter(Name=stored_config)["Parameter"]["Value"].startswith("users:")
    assert len(config_module.load_config(f"ssm:{stored_config}").users) == 2


def test_a_damaged_part_is_a_clear_error(runtime: LocalRuntime, stored_config: str) -> None:
    ssm = runtime.client("ssm")
    config_store.store(ssm, stored_config, fleet_yaml(300), "test")
    first = sorted(config_store._existing_parts(ssm, f"{stored_config}-parts"))[0]
    ssm.delete_parameter(Name=first)
    with pytest.raises(config_module.ConfigError) as caught:
        config_module.load_config(f"ssm:{stored_config}")
    assert "parts" in str(caught.value) and "missing" in str(caught.value)


def test_preflight_refuses_a_config_too_large_before_anything_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy import preflight

    text = fleet_yaml(1000)
    preflight.validate_config_text(text, "rotation.yaml")  # fits
    monkeypatch.setattr(config_store, "MAX_PARTS", 2)
    with pytest.raises(preflight.Refused) as caught:
        preflight.validate_config_text(text, "rotation.yaml")
    assert "nothing was deployed" in str(caught.value) and "SSM parameters" in str(caught.value)


def test_preflight_reads_a_deployed_config_in_parts(runtime: LocalRuntime) -> None:
    from deploy import preflight

    stage = f"limits{uuid.uuid4().hex[:6]}"
    name = naming.StageNames(stage).config_parameter
    config_store.store(runtime.client("ssm"), name, fleet_yaml(1000, stage), "test")
    try:
        deployed = preflight.deployed_config(SimpleNamespace(client=runtime.client), stage)
        assert deployed is not None and len(deployed.users) == 1000
    finally:
        config_store.remove(runtime.client("ssm"), name)


def test_the_packaged_template_stores_a_1000_user_config_in_parts() -> None:
    from deploy import template

    resources_ = template.merge_template("prod", fleet_yaml(1000))["Resources"]
    parts = sorted(k for k in resources_ if k.startswith("RotationConfigPart"))
    assert len(parts) > 1
    assert all(len(resources_[k]["Properties"]["Value"].encode()) <= 4096 for k in [*parts, "RotationConfig"])
    assert all(resources_[k]["Properties"]["Tier"] == "Standard" for k in parts)
    assert sorted(resources_["RotationConfig"]["DependsOn"]) == parts, "the parts exist before what names them"


# -- Step Functions: execution names --------------------------------------------------------------------

PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
WAIT = {"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 30, "End": True}}}


def state_machine(runtime: LocalRuntime, definition: dict[str, Any]) -> str:
    sfn = runtime.client("stepfunctions")
    role = f"arn:aws:iam::123456789012:role/{runtime.function_name('x')}"
    return sfn.create_state_machine(name=f"limits-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition),
                                    roleArn=role)["stateMachineArn"]


def test_execution_names_are_checked(runtime: LocalRuntime) -> None:
    sfn, arn = runtime.client("stepfunctions"), state_machine(runtime, PASS)
    for bad in ("x" * 81, "has space", "a/b", "a:b", "a,b", "tab\there"):
        with pytest.raises(ClientError) as caught:
            sfn.start_execution(stateMachineArn=arn, name=bad, input="{}")
        assert code(caught) == "InvalidName", bad
    sfn.start_execution(stateMachineArn=arn, name="x" * 80, input="{}")
    with strict.override(sfn_execution_name_rules=False):  # moto's parser backend takes anything
        sfn.start_execution(stateMachineArn=arn, name="y" * 81, input="{}")


def test_a_closed_execution_name_is_never_reused(runtime: LocalRuntime) -> None:
    sfn, arn = runtime.client("stepfunctions"), state_machine(runtime, PASS)
    first = sfn.start_execution(stateMachineArn=arn, name="once", input="{}")["executionArn"]
    assert runtime.wait(first)["status"] == "SUCCEEDED"
    with pytest.raises(ClientError) as caught:
        sfn.start_execution(stateMachineArn=arn, name="once", input="{}")
    assert code(caught) == "ExecutionAlreadyExists"


def test_a_running_execution_answers_a_same_name_same_input_start(runtime: LocalRuntime) -> None:
    sfn, arn = runtime.client("stepfunctions"), state_machine(runtime, WAIT)
    before = moto_patches._state["time_scale"]
    moto_patches.set_time_scale(1.0)  # the Wait really waits, so the execution is RUNNING
    try:
        first = sfn.start_execution(stateMachineArn=arn, name="running", input='{"a": 1}')["executionArn"]
        again = sfn.start_execution(stateMachineArn=arn, name="running", input='{"a": 1}')["executionArn"]
        assert again == first, "StartExecution is idempotent for a RUNNING execution with the same input"
        with pytest.raises(ClientError) as caught:
            sfn.start_execution(stateMachineArn=arn, name="running", input='{"a": 2}')
        assert code(caught) == "ExecutionAlreadyExists"
        sfn.stop_execution(executionArn=first)
    finally:
        moto_patches.set_time_scale(before)


def old_execution_name(user: str, rotation_id: str) -> str:
    """chalicelib/workflow/state.py before: truncation."""
    return re.sub(r"[^A-Za-z0-9_.+=@-]", "_", f"{user}-{rotation_id}")[:80]


LONG_USER = "ci-" + "platform-deployer-" * 3 + "x" * 7  # 64 characters, the IAM maximum


def test_old_execution_names_collide_for_long_user_names() -> None:
    assert len(LONG_USER) == 64
    assert old_execution_name(LONG_USER, "sched-20250101T00") == old_execution_name(LONG_USER, "sched-20250101T01")
    assert old_execution_name("a,b", "r") == old_execution_name("a_b", "r")


def test_execution_names_never_collide_and_are_valid() -> None:
    users = [LONG_USER, LONG_USER[:-1] + "y", "a,b", "a_b", "ci-deployer", "x" * 64, "é" * 10]
    rotation_ids = ["sched-20250101T00", "sched-20250101T01", "manual-20250101T000000",
                    "exposure-AKIA" + "A" * 16, "r" * 80]
    names = {}
    for user in users:
        for rid in rotation_ids:
            name = execution_name(user, rid)
            assert execution_name_problem(name) is None, name
            assert names.setdefault(name, (user, rid)) == (user, rid), f"{name} collides"
    assert execution_name("ci-deployer", "sched-20250101T00") == "ci-deployer-sched-20250101T00", "readable when it fits"


def test_long_user_names_get_one_execution_per_rotation(clean_world: World, runtime: LocalRuntime) -> None:
    user = (new_user_name("ci") + "-" + "d" * 64)[:64]
    clean_world.add_user(user, [f"acme/{user[:20]}-long"])
    first = clean_world.start_rotation(user, rotation_id="sched-20250101T00")
    second = clean_world.start_rotation(user, rotation_id="sched-20250101T01")
    assert not second.duplicate and second.execution_arn != first.execution_arn, "a different rotation starts"
    again = clean_world.start_rotation(user, rotation_id="sched-20250101T00")
    assert again.duplicate and again.execution_arn == first.execution_arn, "a redelivered trigger does not"
    results = [runtime.wait(s.execution_arn)["status"] for s in (first, second)]
    assert "SUCCEEDED" in results, results


# -- DynamoDB: item 400 KB, partition key 2,048 bytes, sort key 1,024 bytes --------------------------------


@pytest.fixture(scope="module")
def limits_table(runtime: LocalRuntime) -> str:
    ddb, name = runtime.client("dynamodb"), f"limits-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    return name


def test_dynamodb_refuses_oversized_keys_and_items(runtime: LocalRuntime, limits_table: str) -> None:
    """moto's own checks (local/service_limits.py): this pins them across upgrades."""
    ddb = runtime.client("dynamodb")

    def put(pk: str, sk: str, extra: int = 0) -> None:
        item = {"pk": {"S": pk}, "sk": {"S": sk}}
        if extra:
            item["blob"] = {"S": "x" * extra}
        ddb.put_item(TableName=limits_table, Item=item)

    def update(pk: str, sk: str) -> None:
        ddb.update_item(TableName=limits_table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                        UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "1"}})

    put("p" * 2048, "s" * 1024)
    update("q" * 2048, "s" * 1024)
    for bad_pk, bad_sk in (("p" * 2049, "s"), ("p", "s" * 1025)):
        for write in (put, update):
            with pytest.raises(ClientError) as caught:
                write(bad_pk, bad_sk)
            assert code(caught) == "ValidationException", (write.__name__, len(bad_pk), len(bad_sk))
    with pytest.raises(ClientError) as caught:
        put("big", "item", extra=410 * 1024)
    assert code(caught) == "ValidationException"
    put("big", "item", extra=400 * 1000)  # under 400 KB with its names and keys: accepted


# -- Secrets Manager: a version is immutable --------------------------------------------------------------


def test_put_secret_value_with_a_used_token(runtime: LocalRuntime) -> None:
    sm, name = runtime.client("secretsmanager"), f"limits/{uuid.uuid4().hex}"
    sm.create_secret(Name=name, SecretString="initial")
    token = str(uuid.uuid4())
    sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="first", VersionStages=["AWSPENDING"])
    sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="first",
                        VersionStages=["AWSPENDING"])  # the same again: a no-op
    with pytest.raises(ClientError) as caught:
        sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="second",
                            VersionStages=["AWSPENDING"])
    assert code(caught) == "ResourceExistsException"
    assert sm.get_secret_value(SecretId=name, VersionId=token)["SecretString"] == "first"
    with strict.override(secrets_manager_immutable_versions=False):  # what moto alone does
        sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="second",
                            VersionStages=["AWSPENDING"])
    assert sm.get_secret_value(SecretId=name, VersionId=token)["SecretString"] == "second"


def test_a_create_key_that_dies_after_escrowing_is_retried_onto_the_same_key(
        clean_world: World, runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateKey created the key and escrowed it under the rotation's token, then died before recording
    it (or its answer was lost). Step Functions retries it: the retry must keep that key, not delete it
    as an orphan and escrow a second one under the same token, which AWS refuses."""
    from chalicelib.errors import TransientError

    user = new_user_name("sl")
    old_key = clean_world.add_user(user, [f"acme/{user}"])
    created: list[str] = []
    real_create, real_record = keys.create_key, Ledger.record_key

    def create_key(name: str) -> Any:
        credentials = real_create(name)
        created.append(credentials.access_key_id)
        return credentials

    def record_key(self: Ledger, name: str, key_id: str, **fields: Any) -> None:
        if name == user and fields.get("origin") == "created" and len(created) == 1 and not crashed:
            crashed.append(key_id)
            raise TransientError("the Lambda died after the escrow write")
        real_record(self, name, key_id, **fields)

    crashed: list[str] = []
    monkeypatch.setattr(keys, "create_key", create_key)
    monkeypatch.setattr(Ledger, "record_key", record_key)
    result = clean_world.rotate(user, rotation_id=f"crash-{secrets.token_hex(3)}")

    assert crashed, "the fault fired"
    assert result["status"] == "SUCCEEDED", result.get("cause")
    assert created == crashed, "one key created, the one the first attempt escrowed"
    statuses = clean_world.key_statuses(user)
    assert [k for k, s in statuses.items() if s == "Active"] == [created[0]], statuses
    assert old_key not in statuses or statuses[old_key] == "Inactive"
    assert clean_world.run_build(f"acme/{user}"), "the CI holds the key that was kept, and it works"


# -- deployment: IAM propagation and PITR after CreateTable ----------------------------------------------


ROLE_NOT_YET = ("AccessDeniedException", "Neither the global service principal states.amazonaws.com, nor the "
                "regional one is authorized to assume the provided role.")


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(retrying, "sleep", waits.append)
    return waits


def stub_deployment(client: Any) -> Any:
    arns = {f: f"arn:aws:lambda:us-east-1:123456789012:function:ci-key-rotator-prod-{f}"
            for f in resources.task_functions()}
    changes: list[str] = []
    return SimpleNamespace(client=lambda _: client, function_arns=lambda: arns, names=naming.StageNames("prod"),
                           state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:ci-key-rotator-prod-rotation",
                           changes=changes, changed=changes.append, progress=lambda _: None,
                           arn=lambda service, resource, region=True:
                           f"arn:aws:{service}:{'us-east-1' if region else ''}:123456789012:{resource}")


def aws_client(service: str) -> Any:
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name="us-east-1").client(service)


def test_the_state_machine_waits_until_its_new_role_can_be_assumed(slept: list[float]) -> None:
    sfn = aws_client("stepfunctions")
    d = stub_deployment(sfn)
    with Stubber(sfn) as stub:
        stub.add_client_error("describe_state_machine", "StateMachineDoesNotExist", http_status_code=400)
        for _ in range(2):
            stub.add_client_error("create_state_machine", *ROLE_NOT_YET, http_status_code=400)
        stub.add_response("create_state_machine", {"stateMachineArn": d.state_machine_arn,
                                                   "creationDate": time.time()})
        resources.ensure_state_machine(d, "arn:aws:iam::123456789012:role/ci-key-rotator-prod-states")
        stub.assert_no_pending_responses()
    assert len(slept) == 2 and slept[0] < slept[1], "backed off"
    assert d.changes == ["created state machine ci-key-rotator-prod-rotation"]


def test_other_errors_and_a_role_that_never_works_are_not_retried_forever(slept: list[float]) -> None:
    sfn = aws_client("stepfunctions")
    d = stub_deployment(sfn)
    with Stubber(sfn) as stub:
        stub.add_client_error("describe_state_machine", "StateMachineDoesNotExist", http_status_code=400)
        stub.add_client_error("create_state_machine", "InvalidDefinition", "bad", http_status_code=400)
        with pytest.raises(ClientError):
            resources.ensure_state_machine(d, "arn:aws:iam::123456789012:role/r")
    assert slept == []
    with Stubber(sfn) as stub:
        stub.add_client_error("describe_state_machine", "StateMachineDoesNotExist", http_status_code=400)
        for _ in range(len(retrying.DELAYS) + 1):
            stub.add_client_error("create_state_machine", *ROLE_NOT_YET, http_status_code=400)
        with pytest.raises(ClientError):
            resources.ensure_state_machine(d, "arn:aws:iam::123456789012:role/r")
        stub.assert_no_pending_responses()
    assert len(slept) == len(retrying.DELAYS) and sum(slept) < 200, "bounded"


def test_point_in_time_recovery_waits_for_a_new_table(slept: list[float]) -> None:
    ddb = aws_client("dynamodb")
    d = stub_deployment(ddb)
    name = d.names.table
    with Stubber(ddb) as stub:
        stub.add_response("describe_table", {"Table": {"TableName": name, "DeletionProtectionEnabled": True}})
        stub.add_response("describe_time_to_live", {"TimeToLiveDescription": {
            "TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}})
        stub.add_response("describe_continuous_backups", {"ContinuousBackupsDescription": {
            "ContinuousBackupsStatus": "ENABLED",
            "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"}}})
        for _ in range(3):
            stub.add_client_error("update_continuous_backups", "ContinuousBackupsUnavailableException",
                                  "Backups are being enabled for the table: " + name, http_status_code=400)
        stub.add_response("update_continuous_backups", {"ContinuousBackupsDescription": {
            "ContinuousBackupsStatus": "ENABLED"}})
        resources.ensure_table(d)
        stub.assert_no_pending_responses()
    assert len(slept) == 3
    assert d.changes == [f"enabled point-in-time recovery on {name}"]
