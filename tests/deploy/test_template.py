"""``make package``: Chalice's template with the same extra resources merged in, clean under cfn-lint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import naming, policies, resources, template

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
IDENTITY = Path(__file__).resolve().parents[2] / "templates" / "ci-identity"


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    executable = str(CFN_LINT) if CFN_LINT.exists() else shutil.which("cfn-lint")
    assert executable, "cfn-lint is missing: it is pinned in requirements-dev.txt (make install)"
    return subprocess.run([executable, *map(str, paths)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("package")
    config = (resources.ROOT / "rotation.example.yaml").read_text()
    merge = template.write_merge_template("prod", out / "merge.json", config)
    path = template.package_offline("prod", out, merge)
    return {"path": path, "template": json.loads(path.read_text())}


def test_the_packaged_template_lints_clean(packaged: dict) -> None:
    result = cfn_lint(packaged["path"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ci_identity_templates_lint_clean() -> None:
    result = cfn_lint(IDENTITY / "ci-user.yaml", IDENTITY / "deploy-role.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_template_has_the_functions_and_everything_deploy_creates(packaged: dict) -> None:
    res = packaged["template"]["Resources"]
    for function in policies.functions():
        assert res[template.logical_id(function)]["Type"] == "AWS::Serverless::Function", function
        role = res[template.role_logical_id(function)]
        assert role["Properties"]["RoleName"] == naming.StageNames("prod").function(function)
        (inline,) = role["Properties"]["Policies"]
        assert inline["PolicyDocument"] == policies.load(function), "Chalice ships the policy file as written"
        env = res[template.logical_id(function)]["Properties"]["Environment"]["Variables"]
        assert env["ROTATOR_TOPIC_ARN"] == {"Ref": "OutcomesTopic"}
        assert env["ROTATOR_CONFIG_PATH"] == "ssm:/ci-key-rotator/prod/rotation-config"
    types = {name: r["Type"] for name, r in res.items()}
    assert types["LedgerTable"] == "AWS::DynamoDB::Table" and res["LedgerTable"]["DeletionPolicy"] == "Retain"
    assert types["EscrowKey"] == "AWS::KMS::Key" and res["EscrowKey"]["DeletionPolicy"] == "Retain"
    assert types["RotationStateMachine"] == "AWS::StepFunctions::StateMachine"
    assert types["RotationConfig"] == "AWS::SSM::Parameter"
    substitutions = res["RotationStateMachine"]["Properties"]["DefinitionSubstitutions"]
    definition = res["RotationStateMachine"]["Properties"]["DefinitionString"]
    assert {f"${{{key}}}" for key in substitutions} == set(re.findall(r"\$\{\w+FunctionArn\}", definition))
    undo = res["UndoStateMachine"]["Properties"]
    assert {f"${{{key}}}" for key in undo["DefinitionSubstitutions"]} == set(
        re.findall(r"\$\{\w+FunctionArn\}", undo["DefinitionString"]))
    invoke = res["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert invoke["Resource"] == [{"Fn::GetAtt": [template.logical_id(t), "Arn"]} for t in resources.task_functions()]


def test_the_template_and_the_boto3_step_share_their_documents() -> None:
    merged = template.merge_template("prod")["Resources"]
    rule = merged["ExecutionFailedRule"]["Properties"]
    machines = [{"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:"
                            f"ci-key-rotator-prod-{kind}"} for kind in ("rotation", "undo", "graduate")]
    assert rule["EventPattern"] == resources.execution_failed_pattern(machines)
    # An undo or a graduation aborted by an operator pages like a rotation; each machine's own handled
    # failure (its Fail state after Alert) does not page twice.
    assert rule["EventPattern"]["detail"]["$or"][1]["error"] == [
        {"anything-but": ["GraduationFailed", "RotationFailed", "UndoFailed"]}]
    statements = {s["Sid"]: s for s in merged["EscrowKey"]["Properties"]["KeyPolicy"]["Statement"]}
    readers = statements["EscrowReadersDecrypt"]["Principal"]["AWS"]
    assert readers == [{"Fn::GetAtt": [template.role_logical_id(f), "Arn"]} for f in resources.escrow_readers()]


def test_the_cli_writes_the_merge_template(tmp_path: Path) -> None:
    from deploy import __main__ as cli

    out = tmp_path / "merge.json"
    assert cli.main(["merge-template", "--stage", "dev", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert "RotationConfig" not in merged["Resources"], "without --config the parameter is managed by make deploy"
    assert merged["Resources"]["RotationStateMachine"]["Properties"]["StateMachineName"] == "ci-key-rotator-dev-rotation"


# -- nothing lost, alerts encrypted, no flood (deploy/protection.py) --------------------------------------


def test_every_async_function_sends_failed_events_to_its_own_encrypted_queue(packaged: dict) -> None:
    from deploy import protection

    res = packaged["template"]["Resources"]
    assert sorted(protection.async_functions()) == ["audit", "credential_report", "exposure", "poller", "scheduler"]
    for function in protection.async_functions():
        fn = template.logical_id(function)
        queue = res[f"{fn}DeadLetterQueue"]
        assert queue["Type"] == "AWS::SQS::Queue"
        assert queue["Properties"]["QueueName"] == f"ci-key-rotator-prod-{function}-dlq"
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        config = res[f"{fn}EventInvokeConfig"]
        assert config["Type"] == "AWS::Lambda::EventInvokeConfig"
        assert config["Properties"]["FunctionName"] == {"Ref": fn}
        assert config["Properties"]["MaximumRetryAttempts"] == 2
        queue_arn = {"Fn::GetAtt": [f"{fn}DeadLetterQueue", "Arn"]}
        assert config["Properties"]["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}
        grant = res[f"{fn}DestinationPolicy"]
        assert config["DependsOn"] == [f"{fn}DestinationPolicy"], "Lambda checks the role's permission first"
        assert grant["Properties"]["Roles"] == [{"Ref": template.role_logical_id(function)}]
        (statement,) = grant["Properties"]["PolicyDocument"]["Statement"]
        assert (statement["Action"], statement["Resource"]) == ("sqs:SendMessage", queue_arn)
        alarm = res[f"{fn}DeadLetterAlarm"]["Properties"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Namespace"] == "AWS/SQS"
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{fn}DeadLetterQueue", "QueueName"]}}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
        assert alarm["AlarmActions"] == [{"Ref": "OutcomesTopic"}]
        assert alarm["AlarmName"].startswith(protection.alarm_prefix("prod"))
    for function in set(policies.functions()) - set(protection.async_functions()):
        assert f"{template.logical_id(function)}EventInvokeConfig" not in res, f"{function} is invoked synchronously"


def test_the_alerts_topic_is_encrypted_with_a_key_its_publishers_may_use(packaged: dict) -> None:
    from deploy import protection

    res = packaged["template"]["Resources"]
    assert res["OutcomesTopic"]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlertsKey", "Arn"]}
    key = res["AlertsKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    assert statements["AlarmsPublish"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statements["EventBridgePublishes"]["Principal"] == {"Service": "events.amazonaws.com"}
    publishers = statements["FunctionsPublishThroughSns"]
    assert publishers["Principal"]["AWS"] == [{"Fn::GetAtt": [template.role_logical_id(f), "Arn"]}
                                              for f in protection.topic_publishers()]
    assert "alert" in protection.topic_publishers() and "api_handler" not in protection.topic_publishers()
    assert publishers["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}
    topic_statements = {s["Sid"]: s for s in res["OutcomesTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    alarms = topic_statements["DeadLetterAlarmsPublish"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and alarms["Action"] == "sns:Publish"
    assert alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(":alarm:ci-key-rotator-prod-*")


def test_the_webhook_api_is_throttled_logged_and_capped(packaged: dict) -> None:
    from deploy import protection

    res = packaged["template"]["Resources"]
    api = res["RestAPI"]["Properties"]
    (settings,) = api["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["ThrottlingRateLimit"] == protection.WEBHOOK_RATE_LIMIT
    assert settings["ThrottlingBurstLimit"] == protection.WEBHOOK_BURST_LIMIT
    assert api["TracingEnabled"] is True
    assert api["AccessLogSetting"]["DestinationArn"]["Fn::Sub"].endswith(":log-group:${ApiAccessLogs}")
    fields = json.loads(api["AccessLogSetting"]["Format"])
    assert {"requestId", "ip", "status", "resourcePath"} <= set(fields)
    assert not any("header" in v.lower() or "body" in v.lower() for v in fields.values()), "no signature, no payload"
    logs = res["ApiAccessLogs"]["Properties"]
    assert logs["LogGroupName"] == "/aws/apigateway/ci-key-rotator-prod-access" and logs["RetentionInDays"] == 365
    assert res["RestAPI"]["DependsOn"] == ["ApiGatewayAccount"], "access logging needs the account's logs role"
    assert res["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}
    reserved = res["APIHandler"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == protection.WEBHOOK_RESERVED_CONCURRENCY
    assert 1000 - reserved >= 100 + 10 * 50, "the rotation keeps room for 50 users at once (and AWS's 100)"
    assert settings["ThrottlingBurstLimit"] <= reserved, "the throttle refuses before Lambda does"
    for function in set(policies.functions()) - {protection.WEBHOOK_FUNCTION}:
        assert "ReservedConcurrentExecutions" not in res[template.logical_id(function)]["Properties"], function


@pytest.mark.parametrize(("machine", "status", "error", "pages"), [
    ("graduate", "ABORTED", None, True),
    ("undo", "TIMED_OUT", None, True),
    ("graduate", "FAILED", "States.Runtime", True),
    ("graduate", "FAILED", "GraduationFailed", False),
    ("rotation", "FAILED", "RotationFailed", False),
    ("rotation", "SUCCEEDED", None, False),
])
def test_an_execution_of_any_machine_that_ends_without_its_alert_pages(
        machine: str, status: str, error: str | None, pages: bool) -> None:
    # moto's EventPattern: the matcher the local EventBridge (local/eventbridge.py) delivers with.
    from moto.events.models import EventPattern

    arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:ci-key-rotator-prod-{machine}"
    arns = [f"arn:aws:states:us-east-1:123456789012:stateMachine:ci-key-rotator-prod-{kind}"
            for kind in ("rotation", "undo", "graduate")]
    event = {"source": "aws.states", "detail-type": "Step Functions Execution Status Change",
             "detail": {"stateMachineArn": arn, "status": status, "error": error}}
    pattern = EventPattern.load(json.dumps(resources.execution_failed_pattern(arns)))
    assert pattern.matches_event(event) is pages
