"""Everything ``chalice deploy`` does not create, made idempotently with boto3 (``python -m deploy apply``).

Reads the Lambda ARNs Chalice recorded in ``.chalice/deployed/<stage>.json`` and ensures, in order:

1. the ledger table (TTL, point-in-time recovery, deletion protection);
2. the outcomes SNS topic;
3. the escrow's KMS key (rotation on; its key policy lets only the escrow's functions use it, through
   Secrets Manager) and its alias;
4. the rotation config in SSM (when a config file is given; it is validated first);
5. the state machine's execution role (``lambda:InvokeFunction`` on the task functions only);
6. the state machines, from ``statemachine/rotation.asl.json`` and ``statemachine/undo.asl.json`` with
   the ``${...FunctionArn}`` substitutions;
7. an EventBridge rule sending an execution that ended *without* reaching its Alert state (aborted, timed
   out, or crashed outside every Catch) to the outcomes topic, and the topic policy that allows it;
8. the state of Chalice's EventBridge rules (``ensure_rule_states``): the audit rule admits read-only
   CloudTrail events, which Chalice cannot set.

Each ``ensure_*`` reads first and writes only what differs, so a second run changes nothing (the tests
check that it makes no write call at all). ``destroy`` removes what ``apply`` created; the ledger table,
the escrow secrets, their KMS key and the config parameter are kept unless ``delete_data`` is set.
Every call goes through the boto3 session it is given: real AWS, or moto in the tests (endpoint from
``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from deploy import config_store, infra, naming, policies, protection, retrying
from deploy.analysis import ROOT

DEFINITION = infra.DEFINITION
DEPLOYED_DIR = ROOT / ".chalice" / "deployed"


# -- documents shared by the boto3 step and the merged template ---------------------------------------


def task_functions() -> list[str]:
    """The Chalice functions the state machine invokes."""
    return infra.task_handlers()


def _escrow_actions(function: str) -> set[str]:
    policy = policies.template(function)
    return {a for a, r, _ in policies.grants(policy) if r == naming.ESCROW_PATTERN}


def escrow_readers() -> list[str]:
    return [f for f in policies.functions() if "secretsmanager:GetSecretValue" in _escrow_actions(f)]


def escrow_writers() -> list[str]:
    return [f for f in policies.functions() if "secretsmanager:PutSecretValue" in _escrow_actions(f)]


def escrow_functions() -> list[str]:
    """Every function whose policy reaches the escrow (reading, writing or relabelling it)."""
    return [f for f in policies.functions() if _escrow_actions(f)]


def key_users() -> dict[str, list[str]]:
    """Functions whose policy uses the escrow key directly (not through Secrets Manager), and how."""
    found: dict[str, list[str]] = {}
    for function in policies.functions():
        actions = sorted({a for a, _, _ in policies.grants(policies.template(function)) if a.startswith("kms:")})
        if actions:
            found[function] = actions
    return found


#: What the key-admin role may do: keep the key alive and governed, never use it.
KEY_ADMIN_ACTIONS = [
    "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags",
    "kms:ListAliases", "kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:EnableKey", "kms:DisableKey",
    "kms:UpdateKeyDescription", "kms:TagResource", "kms:UntagResource", "kms:CreateAlias", "kms:UpdateAlias",
    "kms:DeleteAlias", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
]
#: What the account's administrators keep through IAM: nothing here reveals or uses the key.
ACCOUNT_KEY_ACTIONS = [
    "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags",
    "kms:EnableKeyRotation", "kms:CreateAlias", "kms:TagResource", "kms:ScheduleKeyDeletion",
]
#: Everything that reveals or produces key material, or delegates it (grants).
KEY_USE_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:CreateGrant"]


def key_policy(root: Any, readers: list[Any], writers: list[Any], via_service: Any, account: Any, *, key_admin: Any,
               break_glass: Any, direct_users: dict[str, tuple[Any, list[str]]] | None = None) -> dict[str, Any]:
    """The escrow key admits, by name, only the escrow's functions (through Secrets Manager: readers
    decrypt, writers generate data keys), the break-glass role (decrypt through Secrets Manager) and the
    functions that use the key directly (``direct_users``: name → (principal, actions)); the key-admin role
    administers it and cannot use it. There is no statement for the account root, so no IAM policy — an
    administrator's ``*`` included — can use this key or change its policy (IAM still decides the harmless
    ``ACCOUNT_KEY_ACTIONS``), and explicit Denies keep it so if a broader statement is ever added. The key-admin role keeps the key from being orphaned: without it only AWS Support could
    change this policy (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html)."""
    via = {"kms:ViaService": via_service, "kms:CallerAccount": account}
    direct = direct_users or {}
    statements: list[dict[str, Any]] = [
        {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": key_admin},
         "Action": KEY_ADMIN_ACTIONS, "Resource": "*"},
        # What `deploy apply`/`destroy` do as an administrator: read the key's settings, turn rotation on,
        # name it, and retire it (deletion destroys the escrow, it never reveals it; 7 days to cancel).
        {"Sid": "AccountReadsAndRetiresTheKey", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": ACCOUNT_KEY_ACTIONS, "Resource": "*"},
    ]
    if readers:
        statements.append({"Sid": "EscrowReadersDecrypt", "Effect": "Allow", "Principal": {"AWS": readers},
                           "Action": ["kms:Decrypt"], "Resource": "*", "Condition": {"StringEquals": via}})
    if writers:
        statements.append({"Sid": "EscrowWritersEncrypt", "Effect": "Allow", "Principal": {"AWS": writers},
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                           "Condition": {"StringEquals": via}})
    statements.append({"Sid": "BreakGlassDecrypt", "Effect": "Allow", "Principal": {"AWS": break_glass},
                       "Action": ["kms:Decrypt"], "Resource": "*", "Condition": {"StringEquals": via}})
    for function, (principal, actions) in sorted(direct.items()):
        # Not through Secrets Manager: a function that seals task tokens cannot decrypt the escrow.
        statements.append({"Sid": f"DirectUse{function.title().replace('_', '')}", "Effect": "Allow",
                           "Principal": {"AWS": principal}, "Action": actions, "Resource": "*",
                           "Condition": {"StringEquals": {"kms:CallerAccount": account},
                                         "StringNotEquals": {"kms:ViaService": via_service}}})
    users = [*readers, *[w for w in writers if w not in readers], break_glass,
             *[principal for principal, _ in direct.values()]]
    statements.append({"Sid": "NobodyElseUsesTheKey", "Effect": "Deny", "Principal": {"AWS": "*"},
                       "Action": KEY_USE_ACTIONS, "Resource": "*",
                       "Condition": {"ArnNotEquals": {"aws:PrincipalArn": users}}})
    statements.append({"Sid": "NobodyElseAdministersTheKey", "Effect": "Deny", "Principal": {"AWS": "*"},
                       "Action": ["kms:PutKeyPolicy", "kms:DisableKey", "kms:UpdateAlias", "kms:DeleteAlias",
                                  "kms:CancelKeyDeletion"],
                       "Resource": "*", "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [key_admin]}}})
    return {"Version": "2012-10-17", "Statement": statements}


def escrow_principal_patterns(stage: str, kind: str = "role", path: str = "/") -> list[str]:
    """``ROTATOR_ESCROW_PRINCIPALS``: who every escrow secret's resource policy admits (any account's ARN
    form is fine: a principal of another account would also need an Allow the policy never gives)."""
    names = naming.StageNames(stage)
    return [f"arn:aws:iam::*:{kind}{path}{n}" for n in
            [*(names.function(f) for f in escrow_functions()), names.break_glass_role]]


def states_trust_policy(account: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]}


def states_policy(function_arns: list[Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InvokeRotationTasks", "Effect": "Allow", "Action": "lambda:InvokeFunction",
        "Resource": function_arns}]}


def topic_policy(topic_arn: Any, rule_arn: Any, account: Any, alarm_arn_pattern: Any = None) -> dict[str, Any]:
    statements = [{
        "Sid": "ExecutionFailedRulePublishes", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish", "Resource": topic_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": account}}}]
    if alarm_arn_pattern is not None:
        statements.append(protection.alarms_publish_statement(topic_arn, alarm_arn_pattern, account))
    return {"Version": "2012-10-17", "Statement": statements}


def handled_failures() -> list[str]:
    """Each machine's Fail state's error (RotationFailed, UndoFailed, GraduationFailed): a machine reaches its
    Fail state only through its Alert state, which already reported; any other end went unreported."""
    errors = {state["Error"] for path in infra.DEFINITIONS.values()
              for state in json.loads(path.read_text())["States"].values() if state["Type"] == "Fail"}
    return sorted(errors)


def machine_names(names: naming.StageNames) -> list[str]:
    """Every state machine of the stage: ``rotation`` is the stage's machine, the others sit beside it."""
    return [names.state_machine if kind == "rotation" else f"{names.prefix}-{kind}" for kind in infra.DEFINITIONS]


def execution_failed_pattern(state_machine_arns: list[Any]) -> dict[str, Any]:
    """An execution of any of the stage's machines that ended without its Alert: aborted by an operator,
    timed out, or failed in a way the definition did not catch."""
    return {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "stateMachineArn": state_machine_arns,
            "$or": [
                {"status": ["TIMED_OUT", "ABORTED"]},
                {"status": ["FAILED"], "error": [{"anything-but": handled_failures()}]},
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
                '"execution_name": <name>, "status": <status>, "error": <error>, "next_step": "the execution '
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

    def progress(self, message: str) -> None:
        """A wait in progress, shown at once: a deployment that pauses should say why."""
        print(f"  ... {message}", file=sys.stderr, flush=True)

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
    record: dict[str, Any] = json.loads(path.read_text())
    return record


_code = error_code


def _missing(exc: ClientError, *codes: str) -> bool:
    return _code(exc) in codes


_same_json = policies.same_document


def ensure_table(d: Deployment) -> None:
    ddb, name = d.client("dynamodb"), d.names.table
    try:
        table = ddb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if not _missing(exc, "ResourceNotFoundException"):
            raise
        ddb.create_table(
            TableName=name,
            **infra.table_schema(),
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
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != infra.TTL_ATTRIBUTE:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=dict(infra.TTL_SPECIFICATION))
        d.changed(f"enabled TTL (expires_at) on {name}")
    backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    pitr = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    if pitr != "ENABLED":
        # A table just created refuses this for a while (ContinuousBackupsUnavailableException).
        retrying.call(f"point-in-time recovery on {name}", retrying.BACKUPS_NOT_READY_YET,
                      ddb.update_continuous_backups, TableName=name,
                      PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}, log=d.progress)
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


def escrow_role_trust(account: Any) -> dict[str, Any]:
    """Who may assume the break-glass and key-admin roles: the account's principals IAM lets, with MFA."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                                         if isinstance(account, dict) else f"arn:aws:iam::{account}:root"},
        "Action": "sts:AssumeRole", "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}


def break_glass_policy(stage: str) -> dict[str, Any]:
    """The break-glass role reads an escrowed secret (the key policy lets it decrypt); nothing else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ReadTheEscrow", "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
                   "secretsmanager:ListSecretVersionIds"],
        "Resource": naming.StageNames(stage).escrow_pattern}]}


def ensure_escrow_roles(d: Deployment) -> None:
    """The break-glass and key-admin roles the escrow's policies name (they must exist first: KMS and
    Secrets Manager refuse a policy naming a principal that does not)."""
    iam = d.client("iam")
    for name, policy in ((d.names.break_glass_role, break_glass_policy(d.stage)), (d.names.key_admin_role, None)):
        try:
            iam.get_role(RoleName=name)
        except ClientError as exc:
            if not _missing(exc, "NoSuchEntity"):
                raise
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(escrow_role_trust(d.account)),
                            MaxSessionDuration=3600, Description=f"CI Key Rotator escrow ({d.stage})",
                            Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()])
            d.changed(f"created role {name}")
        if policy is None:
            continue
        if policies.put_role_policy(iam, name, "escrow", policy):
            d.changed(f"set the policy of role {name}")


def ensure_escrow_key(d: Deployment) -> None:
    ensure_escrow_roles(d)
    kms = d.client("kms")
    roles = d.function_roles()
    wanted = key_policy(d.arn("iam", "root", region=False), [roles[f] for f in escrow_readers()],
                        [roles[f] for f in escrow_writers()], f"secretsmanager.{d.region}.amazonaws.com", d.account,
                        key_admin=d.role_arn(d.names.key_admin_role), break_glass=d.role_arn(d.names.break_glass_role),
                        direct_users={f: (roles[f], actions) for f, actions in key_users().items()})
    try:
        key_id = kms.describe_key(KeyId=d.names.kms_alias)["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if not _missing(exc, "NotFoundException"):
            raise
        key_id = kms.create_key(
            Description=f"CI Key Rotator escrow ({d.stage})", KeyUsage="ENCRYPT_DECRYPT",
            # The deployer is not the key admin, so KMS's lockout check would refuse the policy; the
            # key-admin role (created above) is what keeps the key manageable.
            Policy=json.dumps(wanted), BypassPolicyLockoutSafetyCheck=True, Tags=[{"TagKey": k, "TagValue": v} for k, v in d.names.tags().items()],
        )["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=d.names.kms_alias, TargetKeyId=key_id)
        d.changed(f"created KMS key {d.names.kms_alias}")
    current = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    if not _same_json(current, wanted):
        try:
            kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(wanted),
                               BypassPolicyLockoutSafetyCheck=True)
        except ClientError as exc:
            if _code(exc) != "AccessDeniedException":
                raise
            raise RuntimeError(f"the key policy of {d.names.kms_alias} must change, and only the role "
                               f"{d.names.key_admin_role} may change it: assume it and run apply again") from None
        d.changed(f"updated the key policy of {d.names.kms_alias}")
    if not kms.get_key_rotation_status(KeyId=key_id).get("KeyRotationEnabled"):
        kms.enable_key_rotation(KeyId=key_id)
        d.changed(f"enabled rotation of {d.names.kms_alias}")


def ensure_config(d: Deployment, config_text: str) -> None:
    """One parameter while the config fits in 4 KB, else parts it names (deploy/config_store.py)."""
    change = config_store.store(d.client("ssm"), d.names.config_parameter, config_text,
                                f"CI Key Rotator rotation config ({d.stage})")
    if change:
        d.changed(change)


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
    written = policies.put_role_policy(iam, name, "invoke-tasks", policy)
    if written:
        d.changed(f"{written} the policy of {name}")
    return str(role["Arn"])


def machine_name(d: Deployment, kind: str) -> str:
    """``rotation`` is the stage's state machine; every other definition (``undo``) sits beside it."""
    return machine_names(d.names)[list(infra.DEFINITIONS).index(kind)]


def ensure_state_machine(d: Deployment, role_arn: str, kind: str = "rotation") -> None:
    sfn = d.client("stepfunctions")
    definition = infra.render_definition(d.function_arns(), infra.DEFINITIONS[kind].read_text())
    name, arn = machine_name(d, kind), d.arn("states", f"stateMachine:{machine_name(d, kind)}")
    try:
        current = sfn.describe_state_machine(stateMachineArn=arn)
    except ClientError as exc:
        if not _missing(exc, "StateMachineDoesNotExist"):
            raise
        # The role was usually created a second ago: wait until Step Functions can assume it.
        retrying.call(f"create state machine {name}", retrying.ROLE_NOT_ASSUMABLE_YET,
                      sfn.create_state_machine, name=name, definition=definition, roleArn=role_arn,
                      type="STANDARD", tags=[{"key": k, "value": v} for k, v in d.names.tags().items()],
                      log=d.progress)
        d.changed(f"created state machine {name}")
        return
    if not _same_json(current["definition"], definition) or current["roleArn"] != role_arn:
        retrying.call(f"update state machine {name}", retrying.ROLE_NOT_ASSUMABLE_YET,
                      sfn.update_state_machine, stateMachineArn=arn, definition=definition,
                      roleArn=role_arn, log=d.progress)
        d.changed(f"updated state machine {name}")


def ensure_execution_rule(d: Deployment) -> None:
    events, name = d.client("events"), d.names.execution_rule
    pattern = execution_failed_pattern([d.arn("states", f"stateMachine:{name}") for name in machine_names(d.names)])
    try:
        rule = events.describe_rule(Name=name)
    except ClientError as exc:
        if not _missing(exc, "ResourceNotFoundException"):
            raise
        rule = None
    if rule is None or not _same_json(rule.get("EventPattern"), pattern) or rule.get("State") != "ENABLED":
        events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED",
                        Description="A rotation, undo or graduation that ended without reaching its Alert state",
                        Tags=[{"Key": k, "Value": v} for k, v in d.names.tags().items()] if rule is None else [])
        d.changed(f"{'created' if rule is None else 'updated'} EventBridge rule {name}")
    target = execution_failed_target(d.topic_arn)
    targets = events.list_targets_by_rule(Rule=name).get("Targets", [])
    if not any(_same_json(_target_view(t), _target_view(target)) for t in targets):
        events.put_targets(Rule=name, Targets=[target])
        d.changed(f"set the target of {name} to {d.names.topic}")
    sns = d.client("sns")
    wanted = topic_policy(d.topic_arn, d.rule_arn, d.account,
                          d.arn("cloudwatch", f"alarm:{protection.alarm_prefix(d.stage)}*"))
    current = sns.get_topic_attributes(TopicArn=d.topic_arn)["Attributes"].get("Policy")
    if not _same_json(current, wanted):
        sns.set_topic_attributes(TopicArn=d.topic_arn, AttributeName="Policy", AttributeValue=json.dumps(wanted))
        d.changed(f"set the policy of {d.names.topic}")


def _target_view(target: dict[str, Any]) -> dict[str, Any]:
    transformer = target.get("InputTransformer") or {}
    return {"Id": target.get("Id"), "Arn": target.get("Arn"),
            "InputPathsMap": transformer.get("InputPathsMap"), "InputTemplate": transformer.get("InputTemplate")}


def ensure_rule_states(d: Deployment) -> None:
    """Give each Chalice-made EventBridge rule the state it needs (``chalicelib.event_patterns.RULE_STATES``):
    Chalice's ``on_cw_event`` creates rules ENABLED, which withholds read-only CloudTrail events the audit
    needs (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail-management.html).
    Run after every ``chalice deploy`` (its PutRule resets the state)."""
    from chalicelib.event_patterns import rule_state

    events = d.client("events")
    for record in d.deployed.get("resources", []):
        if record.get("resource_type") != "cloudwatch_event" or "rule_name" not in record:
            continue
        name, wanted = record["rule_name"], rule_state(str(record.get("name", "")).removesuffix("-event"))
        try:
            rule = events.describe_rule(Name=name)
        except ClientError as exc:
            if not _missing(exc, "ResourceNotFoundException"):
                raise
            d.warnings.append(f"EventBridge rule {name} is missing: run `chalice deploy --stage {d.stage}`")
            continue
        if rule.get("State") != wanted:
            # PutRule replaces the rule: the pattern Chalice wrote goes back unchanged, with the state.
            events.put_rule(Name=name, EventPattern=rule["EventPattern"], State=wanted,
                            **({"Description": rule["Description"]} if rule.get("Description") else {}))
            d.changed(f"set EventBridge rule {name} to {wanted}")


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
    protection.ensure_alerts_key(d)
    ensure_escrow_key(d)
    if config_text is not None:
        ensure_config(d, config_text)
    role_arn = ensure_state_machine_role(d)
    for kind in infra.DEFINITIONS:
        ensure_state_machine(d, role_arn, kind)
    ensure_execution_rule(d)
    ensure_rule_states(d)
    protection.ensure_failure_destinations(d)
    protection.ensure_api_protection(d)
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
    protection.destroy(d)
    events = d.client("events")
    if _ignore_missing(events.describe_rule, "ResourceNotFoundException", Name=names.execution_rule):
        targets = [t["Id"] for t in events.list_targets_by_rule(Rule=names.execution_rule).get("Targets", [])]
        if targets:
            events.remove_targets(Rule=names.execution_rule, Ids=targets)
        events.delete_rule(Name=names.execution_rule)  # idempotent in AWS: check first to report truthfully
        d.changed(f"deleted EventBridge rule {names.execution_rule}")
    sfn = d.client("stepfunctions")
    for kind in infra.DEFINITIONS:
        name = machine_name(d, kind)
        try:
            sfn.describe_state_machine(stateMachineArn=d.arn("states", f"stateMachine:{name}"))
        except ClientError as exc:
            if not _missing(exc, "StateMachineDoesNotExist"):
                raise
        else:
            sfn.delete_state_machine(stateMachineArn=d.arn("states", f"stateMachine:{name}"))
            d.changed(f"deleted state machine {name}")
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
    if config_store.remove(d.client("ssm"), names.config_parameter):
        d.changed(f"deleted SSM parameter {names.config_parameter} (and its parts)")
    return d
