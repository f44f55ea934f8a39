"""What keeps the deployment from losing events or being flooded: shared by ``deploy apply`` and the
packaged template (deploy/template.py), so both make the same thing.

- **Nothing lost.** Every function AWS invokes asynchronously (EventBridge rules and schedules: audit,
  exposure, scheduler, poller, credential_report) gets an on-failure destination: an SQS queue
  ``ci-key-rotator-<stage>-<function>-dlq`` (SSE-SQS), the function's EventInvokeConfig (2 retries, then
  the queue), ``sqs:SendMessage`` on exactly that queue for the function's role (Lambda sends the record
  with the execution role), and a CloudWatch alarm that pages the outcomes topic as soon as a record is
  there. https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html
- **Alerts encrypted at rest.** The outcomes topic uses a customer-managed KMS key, whose policy lets the
  publishing functions (through SNS only), CloudWatch alarms and EventBridge use it: an AWS-managed key
  (``alias/aws/sns``) cannot be shared with those services, and without the grant their notifications are
  dropped. https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html
- **No flood starves the rotation.** The webhook stage is throttled and the webhook function's
  concurrency is reserved (see ``WEBHOOK_RESERVED_CONCURRENCY``); API access logs go to a log group with a
  retention. https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from deploy import naming, policies

#: Lambda's own default (and maximum) for asynchronous retries; stated so a drift back is visible.
MAX_RETRY_ATTEMPTS = 2
#: SQS's maximum: an operator back from two weeks away still finds the failed event.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: GitHub & co. deliver a handful of webhooks per verification build; 20/s sustained, 40 at once is far
#: above a large organisation's rotation (VerifyBuilds runs at most 10 builds per rotation at a time)
#: and a dropped webhook costs nothing: the poller confirms the run within 5 minutes.
WEBHOOK_RATE_LIMIT = 20.0
WEBHOOK_BURST_LIMIT = 40
#: Reserved concurrency caps the webhook function at 40 of the account's 1,000 concurrent executions
#: (the default quota): an unauthenticated flood that gets past the stage throttle uses at most 40, and
#: 960 stay unreserved (AWS keeps at least 100). The rotation needs at most 10 at a time per execution
#: (the VerifyBuilds Map's MaxConcurrency; PushToTargets runs 4), one execution per user: 50 users
#: rotating in the same hour need 500, plus 1 each for the scheduler, poller, audit and exposure events.
#: 40 also matches the burst limit, so the throttle, not the Lambda, refuses first.
#: https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
WEBHOOK_RESERVED_CONCURRENCY = 40
WEBHOOK_FUNCTION = "api_handler"
ACCESS_LOG_RETENTION_DAYS = 365
#: What an access log line says: who called which path and what came back. No header (the webhook
#: signatures), no body.
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent", "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod", "resourcePath": "$context.resourcePath", "path": "$context.path",
    "status": "$context.status", "responseLength": "$context.responseLength",
    "integrationLatency": "$context.integrationLatency", "error": "$context.error.message",
}, separators=(",", ":"))


# -- names ---------------------------------------------------------------------------------------------


def async_functions() -> list[str]:
    """The Chalice functions AWS invokes asynchronously (EventBridge rules and schedules)."""
    from chalice.app import CloudWatchEventConfig, ScheduledEventConfig

    from app import app

    return [s.name for s in app.event_sources if isinstance(s, (CloudWatchEventConfig, ScheduledEventConfig))]


def dlq_name(stage: str, function: str) -> str:
    return f"{naming.StageNames(stage).function(function)}-dlq"


def alarm_name(stage: str, function: str) -> str:
    return f"{dlq_name(stage, function)}-not-empty"


def alarm_prefix(stage: str) -> str:
    """Every DLQ alarm's name starts with this (the topic policy lets only these publish)."""
    return f"{naming.StageNames(stage).prefix}-"


def alerts_key_alias(stage: str) -> str:
    return f"alias/{naming.StageNames(stage).prefix}-alerts"


def access_log_group(stage: str) -> str:
    return f"/aws/apigateway/{naming.StageNames(stage).prefix}-access"


def apigateway_logs_role(stage: str) -> str:
    return f"{naming.StageNames(stage).prefix}-apigateway-logs"


def topic_publishers() -> list[str]:
    """Functions whose policy lets them publish to the outcomes topic."""
    return [f for f in policies.functions()
            if any(a == "sns:Publish" for a, _, _ in policies.grants(policies.load(f)))]


# -- documents -----------------------------------------------------------------------------------------


def destination_policy(queue_arn: Any) -> dict[str, Any]:
    """The function role's grant for its on-failure destination: that one queue, nothing else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OnFailureDestination", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}]}


def event_invoke_config(queue_arn: Any) -> dict[str, Any]:
    return {"MaximumRetryAttempts": MAX_RETRY_ATTEMPTS,
            "DestinationConfig": {"OnFailure": {"Destination": queue_arn}}}


def queue_attributes() -> dict[str, str]:
    return {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}


def alarm(name: str, queue_name: Any, topic_arn: Any, function: str) -> dict[str, Any]:
    """CloudWatch PutMetricAlarm arguments (the template uses the same keys)."""
    return {
        "AlarmName": name,
        "AlarmDescription": f"A {function} invocation failed every retry; its event is in the queue "
                            f"(read it, fix, re-drive: README 'Nothing lost')",
        "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "ActionsEnabled": True, "AlarmActions": [topic_arn], "OKActions": [],
    }


def alerts_key_policy(root: Any, publishers: list[Any], via_service: Any, account: Any) -> dict[str, Any]:
    """The outcomes topic's key. CloudWatch and EventBridge get no condition: EventBridge's request to KMS
    carries no aws:SourceArn/SourceAccount (a condition on them drops every notification), and the topic
    policy already limits which alarms and which rule may publish."""
    # SNS encrypts with GenerateDataKey and decrypts for delivery: nothing else (no *Pair, no WithoutPlaintext).
    service_actions = ["kms:Decrypt", "kms:GenerateDataKey"]
    statements: list[dict[str, Any]] = [
        {"Sid": "AccountAdministersTheKey", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "AlarmsPublish", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": service_actions, "Resource": "*"},
        {"Sid": "EventBridgePublishes", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
         "Action": service_actions, "Resource": "*"},
    ]
    if publishers:
        statements.append({"Sid": "FunctionsPublishThroughSns", "Effect": "Allow", "Principal": {"AWS": publishers},
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                           "Condition": {"StringEquals": {"kms:ViaService": via_service,
                                                          "kms:CallerAccount": account}}})
    return {"Version": "2012-10-17", "Statement": statements}


def alarms_publish_statement(topic_arn: Any, alarm_arn_pattern: Any, account: Any) -> dict[str, Any]:
    """The topic policy's grant to this stage's DLQ alarms (a custom topic policy drops SNS's default one,
    which is what let CloudWatch publish)."""
    return {"Sid": "DeadLetterAlarmsPublish", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish", "Resource": topic_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": alarm_arn_pattern},
                          "StringEquals": {"aws:SourceAccount": account}}}


def apigateway_trust_policy() -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def apigateway_logs_policy(logs_arn_prefix: Any) -> dict[str, Any]:
    """What AWS's AmazonAPIGatewayPushToCloudWatchLogs grants, inline so the gate can lint it, on this
    account's log groups in this region (``logs_arn_prefix``: ``arn:aws:logs:<region>:<account>:``) instead
    of ``*``. The role is the account's (one per region, used by every REST API there), so it is not
    narrowed to this stage's group: another API's logs would silently stop."""
    def arn(suffix: str) -> Any:
        return {"Fn::Sub": logs_arn_prefix["Fn::Sub"] + suffix} if isinstance(logs_arn_prefix, dict) \
            else f"{logs_arn_prefix}{suffix}"

    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ApiGatewayWritesLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams",
                    "logs:FilterLogEvents", "logs:GetLogEvents", "logs:PutLogEvents"],
         "Resource": [arn("log-group:*"), arn("log-group:*:log-stream:*")]},
        # DescribeLogGroups is a list call: AWS scopes it to no log group.
        {"Sid": "ApiGatewayListsLogGroups", "Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
    ]}


def stage_patch(log_group_arn: str) -> list[dict[str, str]]:
    """UpdateStage operations: throttle every method of the stage, log every request."""
    return [
        {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(WEBHOOK_RATE_LIMIT)},
        {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(WEBHOOK_BURST_LIMIT)},
        {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": log_group_arn},
        {"op": "replace", "path": "/accessLogSettings/format", "value": ACCESS_LOG_FORMAT},
    ]


# -- deploy apply ----------------------------------------------------------------------------------------


_code = error_code
_same = policies.same_document


def ensure_alerts_key(d: Any) -> str:
    """The outcomes topic's KMS key (rotation on) and the topic's encryption; returns the key ARN."""
    kms, alias = d.client("kms"), alerts_key_alias(d.stage)
    roles = d.function_roles()
    wanted = alerts_key_policy(d.arn("iam", "root", region=False), [roles[f] for f in topic_publishers()],
                               f"sns.{d.region}.amazonaws.com", d.account)
    try:
        key = kms.describe_key(KeyId=alias)["KeyMetadata"]
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise
        key = kms.create_key(Description=f"CI Key Rotator alerts topic ({d.stage})", KeyUsage="ENCRYPT_DECRYPT",
                             Policy=json.dumps(wanted),
                             Tags=[{"TagKey": k, "TagValue": v} for k, v in d.names.tags().items()])["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        d.changed(f"created KMS key {alias}")
    if not _same(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"], wanted):
        kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=json.dumps(wanted))
        d.changed(f"updated the key policy of {alias}")
    if not kms.get_key_rotation_status(KeyId=key["KeyId"]).get("KeyRotationEnabled"):
        kms.enable_key_rotation(KeyId=key["KeyId"])
        d.changed(f"enabled rotation of {alias}")
    sns = d.client("sns")
    attributes = sns.get_topic_attributes(TopicArn=d.topic_arn)["Attributes"]
    if attributes.get("KmsMasterKeyId") != key["Arn"]:
        sns.set_topic_attributes(TopicArn=d.topic_arn, AttributeName="KmsMasterKeyId", AttributeValue=key["Arn"])
        d.changed(f"encrypted SNS topic {d.names.topic} with {alias}")
    return str(key["Arn"])


def ensure_failure_destinations(d: Any) -> None:
    """Per asynchronously invoked function: its queue, its role's grant, its EventInvokeConfig, its alarm."""
    sqs, lam, iam, cw = d.client("sqs"), d.client("lambda"), d.client("iam"), d.client("cloudwatch")
    functions, roles = d.function_arns(), d.function_roles()
    for function in async_functions():
        if function not in functions:
            d.warnings.append(f"{function} is not in .chalice/deployed/{d.stage}.json: no on-failure destination")
            continue
        name = dlq_name(d.stage, function)
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if _code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            url = sqs.create_queue(QueueName=name, Attributes=queue_attributes(), tags=d.names.tags())["QueueUrl"]
            d.changed(f"created SQS queue {name}")
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        drift = {k: v for k, v in queue_attributes().items() if str(current.get(k)).lower() != v.lower()}
        if drift:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=drift)
            d.changed(f"set {', '.join(sorted(drift))} on {name}")
        queue_arn = current["QueueArn"]

        role = roles[function].rsplit("/", 1)[1]
        policy = destination_policy(queue_arn)
        if policies.put_role_policy(iam, role, "on-failure-destination", policy):
            d.changed(f"let {function} send to {name}")

        wanted = event_invoke_config(queue_arn)
        try:
            config = lam.get_function_event_invoke_config(FunctionName=functions[function])
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            config = {}
        if (config.get("MaximumRetryAttempts") != MAX_RETRY_ATTEMPTS
                or config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination") != queue_arn):
            lam.put_function_event_invoke_config(FunctionName=functions[function], **wanted)
            d.changed(f"sent {function}'s failed events to {name}")

        alarm_args = alarm(alarm_name(d.stage, function), name, d.topic_arn, function)
        found = cw.describe_alarms(AlarmNames=[alarm_args["AlarmName"]]).get("MetricAlarms", [])
        if not found or any(not _same(found[0].get(k), v) for k, v in alarm_args.items()):
            cw.put_metric_alarm(**alarm_args, Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()])
            d.changed(f"{'updated' if found else 'created'} CloudWatch alarm {alarm_args['AlarmName']}")


def ensure_api_protection(d: Any) -> None:
    """Throttle the webhook stage, log its requests, and check the webhook's reserved concurrency."""
    api = next((r for r in d.deployed.get("resources", []) if r.get("resource_type") == "rest_api"), None)
    if api is None:
        return  # an app without routes has no REST API
    logs, apigw = d.client("logs"), d.client("apigateway")
    group = access_log_group(d.stage)
    found = logs.describe_log_groups(logGroupNamePrefix=group).get("logGroups", [])
    existing = next((g for g in found if g["logGroupName"] == group), None)
    if existing is None:
        logs.create_log_group(logGroupName=group, tags=d.names.tags())
        d.changed(f"created log group {group}")
    if existing is None or existing.get("retentionInDays") != ACCESS_LOG_RETENTION_DAYS:
        logs.put_retention_policy(logGroupName=group, retentionInDays=ACCESS_LOG_RETENTION_DAYS)
        d.changed(f"kept {group} for {ACCESS_LOG_RETENTION_DAYS} days")
    ensure_apigateway_logs_role(d)
    stage_name = api.get("api_gateway_stage") or _api_stage(d.stage)
    stage = apigw.get_stage(restApiId=api["rest_api_id"], stageName=stage_name)
    settings = stage.get("methodSettings", {}).get("*/*", {})
    log_settings = stage.get("accessLogSettings") or {}
    group_arn = d.arn("logs", f"log-group:{group}")
    if (settings.get("throttlingRateLimit") != WEBHOOK_RATE_LIMIT
            or settings.get("throttlingBurstLimit") != WEBHOOK_BURST_LIMIT
            or log_settings.get("destinationArn") != group_arn or log_settings.get("format") != ACCESS_LOG_FORMAT):
        apigw.update_stage(restApiId=api["rest_api_id"], stageName=stage_name, patchOperations=stage_patch(group_arn))
        d.changed(f"throttled the webhook stage to {WEBHOOK_RATE_LIMIT:g}/s (burst {WEBHOOK_BURST_LIMIT}) "
                  f"and logged it to {group}")
    function = d.function_arns().get(WEBHOOK_FUNCTION)
    if function:
        reserved = d.client("lambda").get_function_concurrency(FunctionName=function).get(
            "ReservedConcurrentExecutions")
        if reserved != WEBHOOK_RESERVED_CONCURRENCY:
            d.warnings.append(f"{WEBHOOK_FUNCTION}: reserved concurrency {reserved}, expected "
                              f"{WEBHOOK_RESERVED_CONCURRENCY} (.chalice/config.json): run `chalice deploy --stage {d.stage}`")


def ensure_apigateway_logs_role(d: Any) -> None:
    """API Gateway refuses access logging until the account names a role it may write logs with. One that
    is already set (by another stack) is kept."""
    apigw, iam = d.client("apigateway"), d.client("iam")
    if apigw.get_account().get("cloudwatchRoleArn"):
        return
    name = apigateway_logs_role(d.stage)
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(apigateway_trust_policy()),
                              Description="API Gateway writes access logs to CloudWatch Logs",
                              Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()])["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="push-to-cloudwatch-logs",
                            PolicyDocument=json.dumps(apigateway_logs_policy(d.arn("logs", ""))))
        d.changed(f"created IAM role {name}")
    apigw.update_account(patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": arn}])
    d.changed(f"let API Gateway write logs with {name}")


def _api_stage(stage: str) -> str:
    from deploy import chalice_config

    return str(chalice_config.load().get("stages", {}).get(stage, {}).get("api_gateway_stage") or "api")


def destroy(d: Any) -> None:
    """Remove the queues, alarms and grants, and schedule the alerts key's deletion (the topic it encrypts
    goes too, and SNS keeps no message at rest)."""
    sqs, cw, iam, kms = d.client("sqs"), d.client("cloudwatch"), d.client("iam"), d.client("kms")
    try:
        key_id = kms.describe_key(KeyId=alerts_key_alias(d.stage))["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise
    else:
        kms.delete_alias(AliasName=alerts_key_alias(d.stage))
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        d.changed(f"scheduled KMS key {alerts_key_alias(d.stage)} for deletion in 7 days")
    for function in async_functions():
        alarm_names = [alarm_name(d.stage, function)]
        if cw.describe_alarms(AlarmNames=alarm_names).get("MetricAlarms"):
            cw.delete_alarms(AlarmNames=alarm_names)
            d.changed(f"deleted CloudWatch alarm {alarm_names[0]}")
        try:
            url = sqs.get_queue_url(QueueName=dlq_name(d.stage, function))["QueueUrl"]
        except ClientError as exc:
            if _code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
        else:
            sqs.delete_queue(QueueUrl=url)
            d.changed(f"deleted SQS queue {dlq_name(d.stage, function)}")
        try:
            iam.delete_role_policy(RoleName=d.names.function(function), PolicyName="on-failure-destination")
        except ClientError as exc:
            if _code(exc) != "NoSuchEntity":
                raise


# -- the packaged template -------------------------------------------------------------------------------


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def add_to_template(res: dict[str, Any], stage: str, logical_id: Any, role_logical_id: Any) -> None:
    """The same as ``deploy apply``, as CloudFormation resources merged into Chalice's template
    (``logical_id``/``role_logical_id``: Chalice's names for a function and its role)."""
    names = naming.StageNames(stage)
    tags = [{"Key": k, "Value": v} for k, v in names.tags().items()]
    res["AlertsKey"] = {
        "Type": "AWS::KMS::Key",
        "Properties": {
            "Description": f"CI Key Rotator alerts topic ({stage})",
            "EnableKeyRotation": True,
            "KeyPolicy": alerts_key_policy(
                _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"),
                [{"Fn::GetAtt": [role_logical_id(f), "Arn"]} for f in topic_publishers()],
                _sub("sns.${AWS::Region}.amazonaws.com"), {"Ref": "AWS::AccountId"}),
            "Tags": tags,
        },
    }
    res["AlertsKeyAlias"] = {"Type": "AWS::KMS::Alias",
                             "Properties": {"AliasName": alerts_key_alias(stage), "TargetKeyId": {"Ref": "AlertsKey"}}}
    res["OutcomesTopic"]["Properties"]["KmsMasterKeyId"] = {"Fn::GetAtt": ["AlertsKey", "Arn"]}

    for function in async_functions():
        fn = logical_id(function)
        queue, grant = f"{fn}DeadLetterQueue", f"{fn}DestinationPolicy"
        res[queue] = {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": dlq_name(stage, function), "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": DLQ_RETENTION_SECONDS, "Tags": tags}}
        res[grant] = {"Type": "AWS::IAM::Policy", "Properties": {
            "PolicyName": "on-failure-destination", "Roles": [{"Ref": role_logical_id(function)}],
            "PolicyDocument": destination_policy({"Fn::GetAtt": [queue, "Arn"]})}}
        # Lambda checks the role may send to the destination when the config is set: the grant first.
        res[f"{fn}EventInvokeConfig"] = {"Type": "AWS::Lambda::EventInvokeConfig", "DependsOn": [grant],
                                         "Properties": {"FunctionName": {"Ref": fn}, "Qualifier": "$LATEST",
                                                        **event_invoke_config({"Fn::GetAtt": [queue, "Arn"]})}}
        props = alarm(alarm_name(stage, function), {"Fn::GetAtt": [queue, "QueueName"]}, {"Ref": "OutcomesTopic"},
                      function)
        res[f"{fn}DeadLetterAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": props}

    if WEBHOOK_FUNCTION in policies.functions():  # Chalice makes the REST API (``RestAPI``) for the routes
        res["ApiAccessLogs"] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": access_log_group(stage), "RetentionInDays": ACCESS_LOG_RETENTION_DAYS, "Tags": tags}}
        res["ApiGatewayLogsRole"] = {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": apigateway_logs_role(stage), "AssumeRolePolicyDocument": apigateway_trust_policy(),
            "Policies": [{"PolicyName": "push-to-cloudwatch-logs", "PolicyDocument": apigateway_logs_policy(
                _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:"))}],
            "Tags": tags}}
        # One per account and region: a stack per stage in one account would share it (README).
        res["ApiGatewayAccount"] = {"Type": "AWS::ApiGateway::Account",
                                    "Properties": {"CloudWatchRoleArn": {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}}}
        api = res.setdefault("RestAPI", {})
        api["DependsOn"] = ["ApiGatewayAccount"]
        api.setdefault("Properties", {}).update({
            "TracingEnabled": True,  # what `chalice deploy` sets on the stage (xray: true); `package` omits it
            "MethodSettings": [{"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": WEBHOOK_RATE_LIMIT,
                                "ThrottlingBurstLimit": WEBHOOK_BURST_LIMIT}],
            "AccessLogSetting": {
                "DestinationArn": _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                                       "${ApiAccessLogs}"),
                "Format": ACCESS_LOG_FORMAT},
        })
