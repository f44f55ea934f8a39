"""Everything ``chalice deploy`` does not create, made idempotently with boto3 (``python -m deploy apply``).

Reads the Lambda ARNs Chalice recorded in ``.chalice/deployed/<stage>.json`` and ensures, in order:

1. the ledger table (TTL, point-in-time recovery, deletion protection);
2. the outcomes SNS topic;
3. the escrow's KMS key (rotation on; its key policy lets only the escrow's functions use it, through
   Secrets Manager) and its alias;
4. the rotation config in SSM (when a config file is given; it is validated first);
5. the state machine's execution role (``lambda:InvokeFunction`` on the task functions only);
6. the state machine, from ``statemachine/rotation.asl.json`` with the ``${...FunctionArn}``
   substitutions;
7. an EventBridge rule sending an execution that ended *without* reaching its Alert state (aborted, timed
   out, or crashed outside every Catch) to the outcomes topic, and the topic policy that allows it.

Each ``ensure_*`` reads first and writes only what differs, so a second run changes nothing (the tests
check that it makes no write call at all). ``destroy`` removes what ``apply`` created; the ledger table,
the escrow secrets, their KMS key and the config parameter are kept unless ``delete_data`` is set.
Every call goes through the boto3 session it is given: real AWS, or moto in the tests (endpoint from
``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from deploy import infra, naming, policies
from deploy.analysis import ROOT

DEFINITION = infra.DEFINITION
DEPLOYED_DIR = ROOT / ".chalice" / "deployed"
#: The Fail state every handled failure ends in (after Alert): those executions were already reported.
HANDLED_FAILURE = "RotationFailed"


# -- documents shared by the boto3 step and the merged template ---------------------------------------


def task_functions() -> list[str]:
    """The Chalice functions the state machine invokes."""
    return infra.task_handlers()


def _escrow_actions(function: str) -> set[str]:
    policy = policies.load(function)
    return {a for a, r, _ in policies.grants(policy) if r == naming.ESCROW_PATTERN}


def escrow_readers() -> list[str]:
    return [f for f in policies.functions() if "secretsmanager:GetSecretValue" in _escrow_actions(f)]


def escrow_writers() -> list[str]:
    return [f for f in policies.functions() if "secretsmanager:PutSecretValue" in _escrow_actions(f)]


def escrow_functions() -> list[str]:
    return sorted(set(escrow_readers()) | set(escrow_writers()))


def key_policy(root: Any, readers: list[Any], writers: list[Any], via_service: Any, account: Any) -> dict[str, Any]:
    """The escrow key: the account administers it (through IAM, as every KMS key); the escrow's
    functions use it only through Secrets Manager — readers decrypt, writers generate data keys."""
    via = {"kms:ViaService": via_service, "kms:CallerAccount": account}
    statements: list[dict[str, Any]] = [
        {"Sid": "AccountAdministersTheKey", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": "kms:*", "Resource": "*"},
    ]
    if readers:
        statements.append({"Sid": "EscrowReadersDecrypt", "Effect": "Allow", "Principal": {"AWS": readers},
                           "Action": ["kms:Decrypt"], "Resource": "*", "Condition": {"StringEquals": via}})
    if writers:
        statements.append({"Sid": "EscrowWritersEncrypt", "Effect": "Allow", "Principal": {"AWS": writers},
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                           "Condition": {"StringEquals": via}})
    return {"Version": "2012-10-17", "Statement": statements}


def states_trust_policy(account: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]}


def states_policy(function_arns: list[Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InvokeRotationTasks", "Effect": "Allow", "Action": "lambda:InvokeFunction",
        "Resource": function_arns}]}


def topic_policy(topic_arn: Any, rule_arn: Any, account: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ExecutionFailedRulePublishes", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish", "Resource": topic_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": account}}}]}


def execution_failed_pattern(state_machine_arn: Any) -> dict[str, Any]:
    return {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "stateMachineArn": [state_machine_arn],
            "$or": [
                {"status": ["TIMED_OUT", "ABORTED"]},
                {"status": ["FAILED"], "error": [{"anything-but": [HANDLED_FAILURE]}]},
            ],
        },
    }


def execution_failed_target(topic_arn: Any) -> dict[str, Any]:
    return {
        "Id": "outcomes-topic",
        "Arn": topic_arn,
        "InputTransformer": {
            "InputPathsMap": {"execution": "$.detail.executionArn", "status": "$.detail.status",
                              "error": "$.detail.error", "name": "$.detail.name"},
            "InputTemplate": (
                '{"kind": "rotation-execution-ended-unreported", "severity": "HIGH", "execution_arn": <execution>, '
                '"execution_name": <name>, "status": <status>, "error": <error>, "next_step": "the rotation '
                'stopped without its alert: read the execution history, then python -m cli status"}'
            ),
        },
    }


# -- the boto3 step ---------------------------------------------------------------------------------------


@dataclass
class Deployment:
    stage: str
    session: boto3.session.Session
    deployed: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = naming.StageNames(self.stage)
        self.region = self.session.region_name or naming.AUDIT_REGION
        self.account = self.client("sts").get_caller_identity()["Account"]
        self.partition = self.session.get_partition_for_region(self.region)

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=self.region)

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account}:{resource}"

    @property
    def topic_arn(self) -> str:
        return self.arn("sns", self.names.topic)

    @property
    def state_machine_arn(self) -> str:
        return self.arn("states", f"stateMachine:{self.names.state_machine}")

    @property
    def rule_arn(self) -> str:
        return self.arn("events", f"rule/{self.names.execution_rule}")

    def role_arn(self, role_name: str) -> str:
        return self.arn("iam", f"role/{role_name}", region=False)

    def changed(self, what: str) -> None:
        self.changes.append(what)

    # -- what Chalice deployed ------------------------------------------------------------------------

    def function_arns(self) -> dict[str, str]:
        return {r["name"]: r["lambda_arn"] for r in self.deployed.get("resources", [])
                if r.get("resource_type") == "lambda_function"}

    def function_roles(self) -> dict[str, str]:
        """Chalice function → its role ARN (from the deployment record, else by Chalice's naming)."""
        recorded = {r["name"].removesuffix("_role"): r["role_arn"] for r in self.deployed.get("resources", [])
                    if r.get("resource_type") == "iam_role"}
        return {f: recorded.get(f, self.role_arn(self.names.function(f))) for f in policies.functions()}


def load_deployed(stage: str, directory: Path | None = None) -> dict[str, Any]:
    path = (directory or DEPLOYED_DIR) / f"{stage}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `chalice deploy --stage {stage}` first (make deploy does)")
    return json.loads(path.read_text())


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing(exc: ClientError, *codes: str) -> bool:
    return _code(exc) in codes


def _same_json(a: Any, b: Any) -> bool:
    def norm(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        return json.loads(json.dumps(value, sort_keys=True))

    return bool(norm(a) == norm(b))


def ensure_table(d: Deployment) -> None:
    ddb, name = d.client("dynamodb"), d.names.table
    try:
        table = ddb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if not _missing(exc, "ResourceNotFoundException"):
            raise
        ddb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
            DeletionProtectionEnabled=True,
            Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()],
        )
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        d.changed(f"created DynamoDB table {name}")
        table = ddb.describe_table(TableName=name)["Table"]
    if not table.get("DeletionProtectionEnabled"):
        ddb.update_table(TableName=name, DeletionProtectionEnabled=True)
        d.changed(f"enabled deletion protection on {name}")
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != "expires_at":
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        d.changed(f"enabled TTL (expires_at) on {name}")
    backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    pitr = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    if pitr != "ENABLED":
        ddb.update_continuous_backups(TableName=name,
                                      PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
        d.changed(f"enabled point-in-time recovery on {name}")


def ensure_topic(d: Deployment) -> None:
    sns = d.client("sns")
    try:
        sns.get_topic_attributes(TopicArn=d.topic_arn)
    except ClientError as exc:
        if not _missing(exc, "NotFound", "NotFoundException"):
            raise
        sns.create_topic(Name=d.names.topic, Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()])
        d.changed(f"created SNS topic {d.names.topic}")


def ensure_escrow_key(d: Deployment) -> None:
    kms = d.client("kms")
    roles = d.function_roles()
    wanted = key_policy(d.arn("iam", "root", region=False), [roles[f] for f in escrow_readers()],
                        [roles[f] for f in escrow_writers()], f"secretsmanager.{d.region}.amazonaws.com", d.account)
    try:
        key_id = kms.describe_key(KeyId=d.names.kms_alias)["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if not _missing(exc, "NotFoundException"):
            raise
        key_id = kms.create_key(
            Description=f"CI Key Rotator escrow ({d.stage})", KeyUsage="ENCRYPT_DECRYPT",
            Policy=json.dumps(wanted), Tags=[{"TagKey": k, "TagValue": v} for k, v in d.names.tags().items()],
        )["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=d.names.kms_alias, TargetKeyId=key_id)
        d.changed(f"created KMS key {d.names.kms_alias}")
    current = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    if not _same_json(current, wanted):
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(wanted))
        d.changed(f"updated the key policy of {d.names.kms_alias}")
    if not kms.get_key_rotation_status(KeyId=key_id).get("KeyRotationEnabled"):
        kms.enable_key_rotation(KeyId=key_id)
        d.changed(f"enabled rotation of {d.names.kms_alias}")


def ensure_config(d: Deployment, config_text: str) -> None:
    ssm, name = d.client("ssm"), d.names.config_parameter
    try:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if not _missing(exc, "ParameterNotFound"):
            raise
        current = None
    if current != config_text:
        ssm.put_parameter(Name=name, Value=config_text, Type="String", Overwrite=True, Tier="Intelligent-Tiering",
                          Description=f"CI Key Rotator rotation config ({d.stage})")
        d.changed(f"{'updated' if current is not None else 'created'} SSM parameter {name}")


def ensure_state_machine_role(d: Deployment) -> str:
    iam, name = d.client("iam"), d.names.state_machine_role
    arns = d.function_arns()
    missing = [t for t in task_functions() if t not in arns]
    if missing:
        raise RuntimeError(f"Chalice did not record functions {missing} in .chalice/deployed/{d.stage}.json; "
                           f"run `chalice deploy --stage {d.stage}` first")
    trust, policy = states_trust_policy(d.account), states_policy([arns[t] for t in task_functions()])
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if not _missing(exc, "NoSuchEntity"):
            raise
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=3600,
                               Description=f"CI Key Rotator state machine ({d.stage})",
                               Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()])["Role"]
        d.changed(f"created IAM role {name}")
    else:
        if not _same_json(role["AssumeRolePolicyDocument"], trust):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            d.changed(f"updated the trust policy of {name}")
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName="invoke-tasks")["PolicyDocument"]
    except ClientError as exc:
        if not _missing(exc, "NoSuchEntity"):
            raise
        current = None
    if current is None or not _same_json(current, policy):
        iam.put_role_policy(RoleName=name, PolicyName="invoke-tasks", PolicyDocument=json.dumps(policy))
        d.changed(f"{'updated' if current else 'set'} the policy of {name}")
    return str(role["Arn"])


def ensure_state_machine(d: Deployment, role_arn: str) -> None:
    sfn = d.client("stepfunctions")
    definition = infra.render_definition(d.function_arns())
    try:
        current = sfn.describe_state_machine(stateMachineArn=d.state_machine_arn)
    except ClientError as exc:
        if not _missing(exc, "StateMachineDoesNotExist"):
            raise
        sfn.create_state_machine(name=d.names.state_machine, definition=definition, roleArn=role_arn, type="STANDARD",
                                 tags=[{"key": k, "value": v} for k, v in d.names.tags().items()])
        d.changed(f"created state machine {d.names.state_machine}")
        return
    if not _same_json(current["definition"], definition) or current["roleArn"] != role_arn:
        sfn.update_state_machine(stateMachineArn=d.state_machine_arn, definition=definition, roleArn=role_arn)
        d.changed(f"updated state machine {d.names.state_machine}")


def ensure_execution_rule(d: Deployment) -> None:
    events, name = d.client("events"), d.names.execution_rule
    pattern = execution_failed_pattern(d.state_machine_arn)
    try:
        rule = events.describe_rule(Name=name)
    except ClientError as exc:
        if not _missing(exc, "ResourceNotFoundException"):
            raise
        rule = None
    if rule is None or not _same_json(rule.get("EventPattern"), pattern) or rule.get("State") != "ENABLED":
        events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED",
                        Description="A rotation that ended without reaching its Alert state",
                        Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()] if rule is None else [])
        d.changed(f"{'created' if rule is None else 'updated'} EventBridge rule {name}")
    target = execution_failed_target(d.topic_arn)
    targets = events.list_targets_by_rule(Rule=name).get("Targets", [])
    if not any(_same_json(_target_view(t), _target_view(target)) for t in targets):
        events.put_targets(Rule=name, Targets=[target])
        d.changed(f"set the target of {name} to {d.names.topic}")
    sns = d.client("sns")
    wanted = topic_policy(d.topic_arn, d.rule_arn, d.account)
    current = sns.get_topic_attributes(TopicArn=d.topic_arn)["Attributes"].get("Policy")
    if not _same_json(current, wanted):
        sns.set_topic_attributes(TopicArn=d.topic_arn, AttributeName="Policy", AttributeValue=json.dumps(wanted))
        d.changed(f"set the policy of {d.names.topic}")


def _target_view(target: dict[str, Any]) -> dict[str, Any]:
    transformer = target.get("InputTransformer") or {}
    return {"Id": target.get("Id"), "Arn": target.get("Arn"),
            "InputPathsMap": transformer.get("InputPathsMap"), "InputTemplate": transformer.get("InputTemplate")}


def check_functions(d: Deployment) -> None:
    """Warn when a deployed function's environment does not name the resources just ensured (someone ran
    ``chalice deploy`` without ``python -m deploy prepare``)."""
    lam = d.client("lambda")
    expected = {"ROTATOR_TOPIC_ARN": d.topic_arn, "ROTATOR_STATE_MACHINE_ARN": d.state_machine_arn,
                "ROTATOR_TABLE_NAME": d.names.table, "ROTATOR_ESCROW_KMS_KEY_ID": d.names.kms_alias}
    for function, arn in sorted(d.function_arns().items()):
        try:
            env = lam.get_function_configuration(FunctionName=arn).get("Environment", {}).get("Variables", {})
        except ClientError as exc:
            d.warnings.append(f"cannot read the configuration of {function}: {_code(exc)}")
            continue
        wrong = sorted(k for k, v in expected.items() if env.get(k) != v)
        if wrong:
            d.warnings.append(f"{function}: {', '.join(wrong)} differ from this deployment; run "
                              f"`python -m deploy prepare --stage {d.stage}` then `chalice deploy --stage {d.stage}`")


def apply(stage: str, session: boto3.session.Session, deployed: dict[str, Any],
          config_text: str | None = None) -> Deployment:
    """Create or update everything; ``Deployment.changes`` lists what changed (empty on a re-run)."""
    d = Deployment(stage, session, deployed)
    ensure_table(d)
    ensure_topic(d)
    ensure_escrow_key(d)
    if config_text is not None:
        ensure_config(d, config_text)
    role_arn = ensure_state_machine_role(d)
    ensure_state_machine(d, role_arn)
    ensure_execution_rule(d)
    check_functions(d)
    return d


# -- destroy ----------------------------------------------------------------------------------------------


def _ignore_missing(call: Callable[..., Any], *codes: str, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        if _code(exc) in codes:
            return False
        raise


def destroy(stage: str, session: boto3.session.Session, *, delete_data: bool = False) -> Deployment:
    """Remove what ``apply`` created. Kept unless ``delete_data``: the ledger, the escrow secrets and
    their KMS key (scheduled for deletion after 7 days when asked), the config parameter."""
    d = Deployment(stage, session)
    names = d.names
    events = d.client("events")
    if _ignore_missing(events.describe_rule, "ResourceNotFoundException", Name=names.execution_rule):
        targets = [t["Id"] for t in events.list_targets_by_rule(Rule=names.execution_rule).get("Targets", [])]
        if targets:
            events.remove_targets(Rule=names.execution_rule, Ids=targets)
        events.delete_rule(Name=names.execution_rule)  # idempotent in AWS: check first to report truthfully
        d.changed(f"deleted EventBridge rule {names.execution_rule}")
    sfn = d.client("stepfunctions")
    try:
        sfn.describe_state_machine(stateMachineArn=d.state_machine_arn)
    except ClientError as exc:
        if not _missing(exc, "StateMachineDoesNotExist"):
            raise
    else:
        sfn.delete_state_machine(stateMachineArn=d.state_machine_arn)
        d.changed(f"deleted state machine {names.state_machine}")
    iam = d.client("iam")
    _ignore_missing(iam.delete_role_policy, "NoSuchEntity", RoleName=names.state_machine_role, PolicyName="invoke-tasks")
    if _ignore_missing(iam.delete_role, "NoSuchEntity", RoleName=names.state_machine_role):
        d.changed(f"deleted IAM role {names.state_machine_role}")
    if _ignore_missing(d.client("sns").get_topic_attributes, "NotFound", "NotFoundException", TopicArn=d.topic_arn):
        d.client("sns").delete_topic(TopicArn=d.topic_arn)
        d.changed(f"deleted SNS topic {names.topic}")
    if not delete_data:
        d.warnings.append(f"kept: DynamoDB table {names.table}, escrow secrets {names.escrow_prefix}/*, KMS key "
                          f"{names.kms_alias}, SSM parameter {names.config_parameter} (--delete-data removes them)")
        return d
    ddb = d.client("dynamodb")
    try:
        ddb.update_table(TableName=names.table, DeletionProtectionEnabled=False)
    except ClientError as exc:
        if not _missing(exc, "ResourceNotFoundException"):
            raise
    else:
        ddb.delete_table(TableName=names.table)
        d.changed(f"deleted DynamoDB table {names.table}")
    sm = d.client("secretsmanager")
    paginator = sm.get_paginator("list_secrets")
    for page in paginator.paginate(Filters=[{"Key": "name", "Values": [f"{names.escrow_prefix}/"]}]):
        for secret in page.get("SecretList", []):
            if secret["Name"].startswith(f"{names.escrow_prefix}/"):
                sm.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
                d.changed(f"deleted escrow secret {secret['Name']}")
    kms = d.client("kms")
    try:
        key_id = kms.describe_key(KeyId=names.kms_alias)["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if not _missing(exc, "NotFoundException"):
            raise
    else:
        kms.delete_alias(AliasName=names.kms_alias)
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        d.changed(f"scheduled KMS key {names.kms_alias} for deletion in 7 days")
    if _ignore_missing(d.client("ssm").delete_parameter, "ParameterNotFound", Name=names.config_parameter):
        d.changed(f"deleted SSM parameter {names.config_parameter}")
    return d
