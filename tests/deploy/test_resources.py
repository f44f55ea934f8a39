"""``make deploy`` / ``make destroy`` against moto: the same boto3 code, the endpoint from the environment.

A second ``apply`` is a no-op (not one write call), ``destroy`` removes what ``apply`` made and keeps the
ledger, escrow and config unless asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy import __main__ as cli
from deploy import naming, resources
from local.runtime import LocalRuntime
from tests.deploy.conftest import chalice_deploy

STAGE = "deploytest"
READ_ONLY = ("Describe", "Get", "List")
CONFIG = """
defaults: {rotate_after: 30d}
users:
  - name: ci-deployer
    targets:
      - id: web-app
        provider: github
        repository: acme/web-app
        token: secretsmanager:ci-key-rotator/deploytest/github-token
"""


def calls_during(session: boto3.session.Session) -> list[str]:
    seen: list[str] = []
    session.events.register("before-call", lambda model, **_: seen.append(model.name))
    return seen


@pytest.fixture(scope="module")
def deployed(deployer: boto3.session.Session) -> Iterator[dict[str, Any]]:
    record = chalice_deploy(deployer, STAGE)
    first = resources.apply(STAGE, deployer, record, CONFIG)
    yield {"record": record, "first": first}


def test_first_apply_creates_everything_chalice_does_not(deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    names = naming.StageNames(STAGE)
    d = deployed["first"]
    assert d.warnings == [], "the functions were deployed with this stage's environment"
    assert len(d.changes) >= 8, d.changes
    table = deployer.client("dynamodb").describe_table(TableName=names.table)["Table"]
    assert table["DeletionProtectionEnabled"] is True
    assert deployer.client("dynamodb").describe_time_to_live(TableName=names.table)[
        "TimeToLiveDescription"]["AttributeName"] == "expires_at"

    sfn = deployer.client("stepfunctions").describe_state_machine(stateMachineArn=d.state_machine_arn)
    definition = json.loads(sfn["definition"])
    assert "${" not in sfn["definition"], "every ${...FunctionArn} substituted"
    assert definition["States"]["Plan"]["Resource"].endswith(f":function:{names.function('plan')}")
    assert sfn["roleArn"].endswith(f":role/{names.state_machine_role}")

    iam = deployer.client("iam")
    role_policy = iam.get_role_policy(RoleName=names.state_machine_role, PolicyName="invoke-tasks")["PolicyDocument"]
    (statement,) = role_policy["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert sorted(a.rsplit(":", 1)[1] for a in statement["Resource"]) == sorted(
        names.function(t) for t in resources.task_functions()), "only the state machine's tasks"
    trust = iam.get_role(RoleName=names.state_machine_role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}

    kms = deployer.client("kms")
    key = kms.describe_key(KeyId=names.kms_alias)["KeyMetadata"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    key_policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    readers = next(s for s in key_policy["Statement"] if s["Sid"] == "EscrowReadersDecrypt")
    assert sorted(p.rsplit("/", 1)[1] for p in readers["Principal"]["AWS"]) == sorted(
        names.function(f) for f in resources.escrow_readers())
    # The webhook Lambda opens task tokens with the key directly, never through Secrets Manager (the escrow).
    webhook = [s for s in key_policy["Statement"] if names.function("api_handler") in json.dumps(s.get("Principal"))
               and s["Effect"] == "Allow"]
    assert webhook and all(s["Condition"]["StringNotEquals"]["kms:ViaService"].startswith("secretsmanager.")
                           for s in webhook), "the webhook Lambda cannot decrypt the escrow"

    parameter = deployer.client("ssm").get_parameter(Name=names.config_parameter)["Parameter"]
    assert parameter["Value"] == CONFIG

    events = deployer.client("events")
    rule = events.describe_rule(Name=names.execution_rule)
    assert json.loads(rule["EventPattern"])["detail"]["stateMachineArn"] == [
        d.state_machine_arn, *(d.arn("states", f"stateMachine:{d.names.prefix}-{kind}") for kind in ("undo", "graduate"))]
    (target,) = events.list_targets_by_rule(Rule=names.execution_rule)["Targets"]
    assert target["Arn"] == d.topic_arn
    topic_policy = json.loads(deployer.client("sns").get_topic_attributes(TopicArn=d.topic_arn)["Attributes"]["Policy"])
    assert topic_policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] == d.rule_arn


def test_a_second_apply_changes_nothing_and_writes_nothing(deployed: dict[str, Any],
                                                           deployer: boto3.session.Session) -> None:
    session = boto3.session.Session(aws_access_key_id=deployer.get_credentials().access_key,
                                    aws_secret_access_key=deployer.get_credentials().secret_key,
                                    region_name=deployer.region_name)
    seen = calls_during(session)
    again = resources.apply(STAGE, session, deployed["record"], CONFIG)
    assert again.changes == []
    writes = [op for op in seen if not op.startswith(READ_ONLY)]
    assert writes == [], f"a re-run must not write: {writes}"


def test_apply_repairs_drift(deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    names = naming.StageNames(STAGE)
    iam = deployer.client("iam")
    iam.put_role_policy(RoleName=names.state_machine_role, PolicyName="invoke-tasks", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}))
    repaired = resources.apply(STAGE, deployer, deployed["record"], CONFIG)
    assert repaired.changes == [f"updated the policy of {names.state_machine_role}"]
    assert resources.apply(STAGE, deployer, deployed["record"], CONFIG).changes == []


def test_functions_deployed_without_prepare_are_reported(deployed: dict[str, Any],
                                                         deployer: boto3.session.Session) -> None:
    names = naming.StageNames(STAGE)
    lam = deployer.client("lambda")
    function = names.function("scheduler")
    env = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName=function,
                                      Environment={"Variables": {**env, "ROTATOR_STATE_MACHINE_ARN": ""}})
    try:
        d = resources.apply(STAGE, deployer, deployed["record"], CONFIG)
        assert d.changes == []
        (warning,) = d.warnings
        assert warning.startswith("scheduler: ROTATOR_STATE_MACHINE_ARN") and "deploy prepare" in warning
    finally:
        lam.update_function_configuration(FunctionName=function, Environment={"Variables": env})


def test_destroy_keeps_data_unless_asked(runtime: LocalRuntime, deployer: boto3.session.Session) -> None:
    stage = "destroytest"
    names = naming.StageNames(stage)
    record = chalice_deploy(deployer, stage)
    d = resources.apply(stage, deployer, record, CONFIG)
    sm = deployer.client("secretsmanager")
    sm.create_secret(Name=f"{names.escrow_prefix}/ci-deployer", SecretString="{}")

    kept = resources.destroy(stage, deployer)
    assert any("deleted state machine" in c for c in kept.changes)
    with pytest.raises(ClientError):
        deployer.client("stepfunctions").describe_state_machine(stateMachineArn=d.state_machine_arn)
    with pytest.raises(ClientError):
        deployer.client("iam").get_role(RoleName=names.state_machine_role)
    with pytest.raises(ClientError):
        deployer.client("events").describe_rule(Name=names.execution_rule)
    assert deployer.client("dynamodb").describe_table(TableName=names.table)["Table"]["TableName"] == names.table
    assert sm.describe_secret(SecretId=f"{names.escrow_prefix}/ci-deployer")["Name"]
    assert deployer.client("kms").describe_key(KeyId=names.kms_alias)["KeyMetadata"]["KeyState"] == "Enabled"
    assert deployer.client("ssm").get_parameter(Name=names.config_parameter)
    assert resources.destroy(stage, deployer).changes == [], "destroy is idempotent too"

    gone = resources.destroy(stage, deployer, delete_data=True)
    assert {c.split(" ")[0] for c in gone.changes} >= {"deleted", "scheduled"}
    with pytest.raises(ClientError):
        deployer.client("dynamodb").describe_table(TableName=names.table)
    with pytest.raises(ClientError):
        sm.describe_secret(SecretId=f"{names.escrow_prefix}/ci-deployer")
    with pytest.raises(ClientError):
        deployer.client("kms").describe_key(KeyId=names.kms_alias)
    with pytest.raises(ClientError):
        deployer.client("ssm").get_parameter(Name=names.config_parameter)


# -- the CLI: prepare refuses before anything changes ----------------------------------------------------

#: A layer built from aws-lambda-powertools[all] under the operator's own name (moto publishes none).
LAYER = "arn:aws:lambda:us-east-1:123456789012:layer:powertools-all:3"


@pytest.fixture
def cli_env(runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", runtime.operator.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", runtime.operator.secret_access_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = tmp_path / ".chalice" / "config.json"
    config.parent.mkdir()
    config.write_text((resources.ROOT / ".chalice" / "config.json").read_text())
    monkeypatch.setattr("deploy.chalice_config.CONFIG_PATH", config)
    return tmp_path


def test_prepare_refuses_an_invalid_config(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = cli_env / "bad.yaml"
    bad.write_text("users:\n  - name: ci-deployer\n    targets: []\n")
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "invalid" in err and "users[0].targets" in err


def test_prepare_refuses_references_the_functions_cannot_read(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = cli_env / "elsewhere.yaml"
    config.write_text(CONFIG.replace("secretsmanager:ci-key-rotator/deploytest/github-token",
                                     "secretsmanager:team/github-token"))
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config)]) == 2
    assert "secretsmanager:team/github-token is not under secretsmanager:ci-key-rotator/" in capsys.readouterr().err


def test_prepare_refuses_another_region_unless_allowed(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = cli_env / "rotation.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config)]) == 2
    assert "us-east-1" in capsys.readouterr().err
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config), "--allow-region-outside-us-east-1",
                     "--layer-arn", LAYER]) == 0
    assert "WARNING: region eu-west-1" in capsys.readouterr().err


def test_prepare_refuses_a_managed_user_outside_the_managed_path(cli_env: Path, runtime: LocalRuntime,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    runtime.client("iam").create_user(UserName="ci-outside", Path="/humans/")
    config = cli_env / "rotation.yaml"
    config.write_text(CONFIG.replace("ci-deployer", "ci-outside"))
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config)]) == 2
    assert "path /humans/" in capsys.readouterr().err


def test_prepare_writes_the_stage_arns_and_the_layer_once(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = cli_env / "rotation.yaml"
    config.write_text(CONFIG)
    prepare = ["prepare", "--stage", STAGE, "--config", str(config), "--layer-arn", LAYER]
    assert cli.main(prepare) == 0
    out = capsys.readouterr()
    assert "updated .chalice/config.json" in out.out
    assert "ci-deployer does not exist yet" in out.err
    stage = json.loads((cli_env / ".chalice" / "config.json").read_text())["stages"][STAGE]
    assert stage["environment_variables"]["ROTATOR_STATE_MACHINE_ARN"] == (
        f"arn:aws:states:us-east-1:123456789012:stateMachine:{naming.StageNames(STAGE).state_machine}")
    assert stage["layers"] == [LAYER]
    assert cli.main(prepare) == 0
    assert "updated" not in capsys.readouterr().out


def test_prepare_refuses_without_the_powertools_layer(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """moto publishes no layer parameter; without the layer the functions could not import pydantic."""
    config = cli_env / "rotation.yaml"
    config.write_text(CONFIG)
    before = (cli_env / ".chalice" / "config.json").read_text()
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no Powertools layer at /aws/service/powertools/python/" in err and "pydantic" in err and "--layer-arn" in err
    assert cli.main(["prepare", "--stage", STAGE, "--config", str(config), "--layer-arn", "my-layer"]) == 2
    assert "not a Lambda layer version ARN" in capsys.readouterr().err
    assert (cli_env / ".chalice" / "config.json").read_text() == before


def test_apply_and_destroy_from_the_cli(cli_env: Path, deployer: boto3.session.Session, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    stage = "clitest"
    record = chalice_deploy(deployer, stage)
    deployed_dir = cli_env / "deployed"
    deployed_dir.mkdir()
    (deployed_dir / f"{stage}.json").write_text(json.dumps(record))
    monkeypatch.setattr(resources, "DEPLOYED_DIR", deployed_dir)
    assert cli.main(["apply", "--stage", stage]) == 0
    assert "created state machine" in capsys.readouterr().out
    assert cli.main(["apply", "--stage", stage]) == 0
    assert "0 change(s)" in capsys.readouterr().out
    assert cli.main(["destroy", "--stage", stage, "--delete-data"]) == 0
    assert "deleted DynamoDB table" in capsys.readouterr().out
    assert cli.main(["apply", "--stage", "never-deployed"]) == 2
    assert "chalice deploy --stage never-deployed" in capsys.readouterr().err


def test_the_cli_tests_never_touch_the_real_config(cli_env: Path) -> None:
    assert "deploytest" not in (resources.ROOT / ".chalice" / "config.json").read_text()
