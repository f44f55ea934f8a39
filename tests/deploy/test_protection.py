"""``deploy apply`` on moto: failed asynchronous events are kept and paged, the alerts topic is encrypted,
the webhook API is throttled and logged (deploy/protection.py). The template side is in test_template.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from deploy import naming, protection, resources
from tests.deploy.conftest import chalice_deploy

STAGE = "protected"
READ_ONLY = ("Describe", "Get", "List")


def chalice_rest_api(session: boto3.session.Session, stage: str, record: dict[str, Any]) -> None:
    """The REST API ``chalice deploy`` makes for the webhook route, recorded as Chalice records it."""
    apigw = session.client("apigateway")
    api = apigw.create_rest_api(name=f"ci-key-rotator-{stage}")["id"]
    root = next(r["id"] for r in apigw.get_resources(restApiId=api)["items"] if r["path"] == "/")
    webhooks = apigw.create_resource(restApiId=api, parentId=root, pathPart="webhooks")["id"]
    provider = apigw.create_resource(restApiId=api, parentId=webhooks, pathPart="{provider}")["id"]
    apigw.put_method(restApiId=api, resourceId=provider, httpMethod="POST", authorizationType="NONE")
    webhook = next(r["lambda_arn"] for r in record["resources"] if r.get("name") == protection.WEBHOOK_FUNCTION)
    apigw.put_integration(restApiId=api, resourceId=provider, httpMethod="POST", type="AWS_PROXY",
                          integrationHttpMethod="POST",
                          uri=f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{webhook}/invocations")
    apigw.create_deployment(restApiId=api, stageName="api")
    session.client("lambda").put_function_concurrency(
        FunctionName=webhook, ReservedConcurrentExecutions=protection.WEBHOOK_RESERVED_CONCURRENCY)
    record["resources"].append({"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api,
                                "rest_api_url": f"https://{api}.execute-api.us-east-1.amazonaws.com/api/"})


@pytest.fixture(scope="module")
def deployed(deployer: boto3.session.Session) -> Iterator[dict[str, Any]]:
    record = chalice_deploy(deployer, STAGE)
    chalice_rest_api(deployer, STAGE, record)
    yield {"record": record, "first": resources.apply(STAGE, deployer, record)}


def test_each_async_function_has_an_encrypted_queue_a_destination_a_grant_and_an_alarm(
        deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    d = deployed["first"]
    assert d.warnings == []
    sqs, lam, iam, cw = (deployer.client(s) for s in ("sqs", "lambda", "iam", "cloudwatch"))
    names = naming.StageNames(STAGE)
    for function in protection.async_functions():
        queue = f"ci-key-rotator-{STAGE}-{function}-dlq"
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["SqsManagedSseEnabled"] == "true"
        assert int(attributes["MessageRetentionPeriod"]) == 14 * 24 * 3600
        config = lam.get_function_event_invoke_config(FunctionName=names.function(function))
        assert config["MaximumRetryAttempts"] == 2
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == attributes["QueueArn"]
        grant = iam.get_role_policy(RoleName=names.function(function), PolicyName="on-failure-destination")
        (statement,) = grant["PolicyDocument"]["Statement"]
        assert (statement["Action"], statement["Resource"]) == ("sqs:SendMessage", attributes["QueueArn"])
        (alarm,) = cw.describe_alarms(AlarmNames=[f"{queue}-not-empty"])["MetricAlarms"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": queue}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
        assert alarm["AlarmActions"] == [d.topic_arn]
    for function in ("plan", "alert", "api_handler"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function_event_invoke_config(FunctionName=names.function(function))


def test_the_alerts_topic_is_encrypted_and_alarms_and_eventbridge_may_publish(
        deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    d = deployed["first"]
    kms, sns = deployer.client("kms"), deployer.client("sns")
    key = kms.describe_key(KeyId=f"alias/ci-key-rotator-{STAGE}-alerts")["KeyMetadata"]
    attributes = sns.get_topic_attributes(TopicArn=d.topic_arn)["Attributes"]
    assert attributes["KmsMasterKeyId"] == key["Arn"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    statements = {s["Sid"]: s for s in json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])[
        "Statement"]}
    assert statements["AlarmsPublish"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statements["EventBridgePublishes"]["Principal"] == {"Service": "events.amazonaws.com"}
    publishers = statements["FunctionsPublishThroughSns"]["Principal"]["AWS"]
    assert sorted(p.rsplit("/", 1)[1] for p in publishers) == sorted(
        naming.StageNames(STAGE).function(f) for f in protection.topic_publishers())
    topic_policy = {s["Sid"]: s for s in json.loads(attributes["Policy"])["Statement"]}
    alarms = topic_policy["DeadLetterAlarmsPublish"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:cloudwatch:us-east-1:{d.account}:alarm:ci-key-rotator-{STAGE}-*"
    assert "ExecutionFailedRulePublishes" in topic_policy


def test_the_webhook_stage_is_throttled_and_logged(deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    api = next(r for r in deployed["record"]["resources"] if r["resource_type"] == "rest_api")
    stage = deployer.client("apigateway").get_stage(restApiId=api["rest_api_id"], stageName="api")
    settings = stage["methodSettings"]["*/*"]
    assert settings["throttlingRateLimit"] == protection.WEBHOOK_RATE_LIMIT
    assert settings["throttlingBurstLimit"] == protection.WEBHOOK_BURST_LIMIT
    group = f"/aws/apigateway/ci-key-rotator-{STAGE}-access"
    assert stage["accessLogSettings"]["destinationArn"] == f"arn:aws:logs:us-east-1:{deployed['first'].account}:log-group:{group}"
    assert json.loads(stage["accessLogSettings"]["format"])["status"] == "$context.status"
    (log_group,) = deployer.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert log_group["retentionInDays"] == 365
    assert deployer.client("apigateway").get_account()["cloudwatchRoleArn"].endswith(
        f":role/ci-key-rotator-{STAGE}-apigateway-logs")


def test_a_second_apply_writes_nothing(deployed: dict[str, Any], deployer: boto3.session.Session) -> None:
    credentials = deployer.get_credentials()
    session = boto3.session.Session(aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                                    region_name=deployer.region_name)
    seen: list[str] = []
    session.events.register("before-call", lambda model, **_: seen.append(model.name))
    again = resources.apply(STAGE, session, deployed["record"])
    assert again.changes == []
    assert [op for op in seen if not op.startswith(READ_ONLY)] == []


def test_apply_puts_back_a_removed_destination_alarm_or_throttle(deployed: dict[str, Any],
                                                                  deployer: boto3.session.Session) -> None:
    names = naming.StageNames(STAGE)
    deployer.client("lambda").delete_function_event_invoke_config(FunctionName=names.function("exposure"))
    deployer.client("cloudwatch").delete_alarms(AlarmNames=[f"ci-key-rotator-{STAGE}-audit-dlq-not-empty"])
    api = next(r for r in deployed["record"]["resources"] if r["resource_type"] == "rest_api")
    deployer.client("apigateway").update_stage(restApiId=api["rest_api_id"], stageName="api", patchOperations=[
        {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "10000"}])
    repaired = resources.apply(STAGE, deployer, deployed["record"])
    assert sorted(repaired.changes) == sorted([
        f"sent exposure's failed events to ci-key-rotator-{STAGE}-exposure-dlq",
        f"created CloudWatch alarm ci-key-rotator-{STAGE}-audit-dlq-not-empty",
        f"throttled the webhook stage to 20/s (burst 40) and logged it to /aws/apigateway/ci-key-rotator-{STAGE}-access",
    ])
    assert resources.apply(STAGE, deployer, deployed["record"]).changes == []


def test_a_webhook_without_its_reserved_concurrency_is_reported(deployed: dict[str, Any],
                                                                deployer: boto3.session.Session) -> None:
    lam = deployer.client("lambda")
    webhook = naming.StageNames(STAGE).function(protection.WEBHOOK_FUNCTION)
    lam.delete_function_concurrency(FunctionName=webhook)
    try:
        (warning,) = resources.apply(STAGE, deployer, deployed["record"]).warnings
        assert warning.startswith("api_handler: reserved concurrency None, expected 40")
    finally:
        lam.put_function_concurrency(FunctionName=webhook,
                                     ReservedConcurrentExecutions=protection.WEBHOOK_RESERVED_CONCURRENCY)


def test_the_chalice_config_reserves_the_webhook_concurrency() -> None:
    config = json.loads((resources.ROOT / ".chalice" / "config.json").read_text())
    assert config["lambda_functions"]["api_handler"]["reserved_concurrency"] == protection.WEBHOOK_RESERVED_CONCURRENCY
    for stage in config["stages"].values():
        assert "reserved_concurrency" not in json.dumps(stage), "one value for every stage, at the top level"


def test_destroy_removes_the_queues_and_alarms(deployer: boto3.session.Session) -> None:
    stage = "protectgone"
    record = chalice_deploy(deployer, stage)
    resources.apply(stage, deployer, record)
    gone = resources.destroy(stage, deployer)
    for function in protection.async_functions():
        assert f"deleted SQS queue ci-key-rotator-{stage}-{function}-dlq" in gone.changes
        assert f"deleted CloudWatch alarm ci-key-rotator-{stage}-{function}-dlq-not-empty" in gone.changes
    assert deployer.client("sqs").list_queues(QueueNamePrefix=f"ci-key-rotator-{stage}-").get("QueueUrls", []) == []
    assert resources.destroy(stage, deployer).changes == []
