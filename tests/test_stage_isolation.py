"""Two stages in one account cannot touch each other, and each function can do only what its policy says,
with the resources: every probe below goes through moto's authorizer as patched by
local/iam_resources.py (the request's real ARN, IAM wildcards), signed by each function's own identity.

Stage ``local`` is the runtime's; stage ``other`` gets its own table, topic, escrow secret, CI token, config
parameter and managed user in the same account. For every function and every probe, the local answer
(refused or not) must equal what the function's policy, rendered for ``local``, says about that ARN; and
no function of ``local`` may reach anything of ``other``.

With the patch removed (moto authorizing everything against ``*``) a scoped policy denies every probe,
and with the old widening to ``Resource: "*"`` every ``other`` probe was allowed: both fail here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy import infra, policies
from deploy.naming import StageNames
from local import iam_consistency
from local.runtime import ACCOUNT, REGION, LocalRuntime, function_policy
from local.world import World, token_ref
from tests.conftest import new_user_name

OTHER = StageNames("other")
DENIED = ("AccessDenied", "AccessDeniedException")


@dataclass(frozen=True)
class Probe:
    name: str
    action: str
    arn: str
    call: Callable[[Callable[[str], Any]], Any]  # given a client factory, makes the call


def _session(identity: Any) -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id=identity.access_key_id,
                                 aws_secret_access_key=identity.secret_access_key,
                                 aws_session_token=identity.session_token, region_name=REGION)


def refused(client_for: Callable[[str], Any], call: Callable[[Callable[[str], Any]], Any]) -> bool:
    try:
        call(client_for)
    except ClientError as exc:
        error = exc.response["Error"]
        # moto answers JSON-protocol services' denials with an XML body botocore reads as code "403"; an
        # unknown or not yet propagated key (InvalidClientTokenId) is not a policy decision.
        return error["Code"] in DENIED or (error["Code"] == "403" and "<Code>AccessDenied</Code>" in error["Message"])
    return False


@pytest.fixture(scope="module")
def stages(world: World, runtime: LocalRuntime) -> dict[str, dict[str, str]]:
    """The ARNs of one resource of each kind in each stage (the other stage's made by the operator)."""
    own_user = new_user_name("iso")
    world.add_user(own_user, [f"acme/{own_user}"])
    assert world.rotate(own_user)["status"] == "SUCCEEDED"  # the escrow now holds its secret
    op = runtime.client
    other_user = new_user_name("iso")
    op("iam").create_user(UserName=other_user, Path=OTHER.managed_path)
    infra.ensure_table(op("dynamodb"), OTHER.table)
    other_topic = op("sns").create_topic(Name=OTHER.topic)["TopicArn"]
    other_escrow = op("secretsmanager").create_secret(
        Name=f"{OTHER.escrow_prefix}/{other_user}", SecretString='{"AccessKeyId": "AKIAOTHER"}')["ARN"]
    other_token = op("secretsmanager").create_secret(
        Name=f"{OTHER.secret_reference_prefix}github-token", SecretString="other-token")["ARN"]
    ssm = op("ssm")
    for names in (runtime.names, OTHER):
        ssm.put_parameter(Name=f"{names.parameter_reference_prefix}probe", Value="x", Type="String", Overwrite=True)
    sm = op("secretsmanager")
    own_escrow = sm.describe_secret(SecretId=f"{runtime.names.escrow_prefix}/{own_user}")["ARN"]
    own_token = sm.describe_secret(SecretId=token_ref("github"))["ARN"]
    execution = "arn:aws:states:{}:{}:execution:{}:no-such-execution"
    return {
        "local": {"user": own_user, "user_arn": f"arn:aws:iam::{ACCOUNT}:user{runtime.names.managed_path}{own_user}",
                  "table": runtime.names.table, "topic": runtime.topic_arn, "escrow": own_escrow, "token": own_token,
                  "parameter": f"{runtime.names.parameter_reference_prefix}probe",
                  "execution": execution.format(REGION, ACCOUNT, runtime.names.state_machine)},
        "other": {"user": other_user, "user_arn": f"arn:aws:iam::{ACCOUNT}:user{OTHER.managed_path}{other_user}",
                  "table": OTHER.table, "topic": other_topic, "escrow": other_escrow, "token": other_token,
                  "parameter": f"{OTHER.parameter_reference_prefix}probe",
                  "execution": execution.format(REGION, ACCOUNT, OTHER.state_machine)},
    }


def probes(stage: dict[str, str]) -> list[Probe]:
    """Calls that change nothing when allowed (reads, or writes AWS then refuses as invalid)."""
    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{stage['table']}"
    parameter_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{stage['parameter']}"
    return [
        Probe("list the user's keys", "iam:ListAccessKeys", stage["user_arn"],
              lambda c: c("iam").list_access_keys(UserName=stage["user"])),
        Probe("deactivate a key of the user", "iam:UpdateAccessKey", stage["user_arn"],
              lambda c: c("iam").update_access_key(UserName=stage["user"], AccessKeyId="AKIANOSUCHKEY0000000",
                                                   Status="Inactive")),
        Probe("delete a key of the user", "iam:DeleteAccessKey", stage["user_arn"],
              lambda c: c("iam").delete_access_key(UserName=stage["user"], AccessKeyId="AKIANOSUCHKEY0000000")),
        Probe("read the escrow", "secretsmanager:GetSecretValue", stage["escrow"],
              lambda c: c("secretsmanager").get_secret_value(SecretId=stage["escrow"])),
        Probe("read a CI token", "secretsmanager:GetSecretValue", stage["token"],
              lambda c: c("secretsmanager").get_secret_value(SecretId=stage["token"])),
        Probe("read the ledger", "dynamodb:GetItem", table_arn,
              lambda c: c("dynamodb").get_item(TableName=stage["table"], Key={"pk": {"S": "x"}, "sk": {"S": "x"}})),
        Probe("query the ledger", "dynamodb:Query", table_arn,
              lambda c: c("dynamodb").query(TableName=stage["table"], KeyConditionExpression="pk = :p",
                                            ExpressionAttributeValues={":p": {"S": "x"}})),
        Probe("publish an outcome", "sns:Publish", stage["topic"],
              # A subject over 100 characters: authorized first, then refused as invalid; nothing is published.
              lambda c: c("sns").publish(TopicArn=stage["topic"], Message="probe", Subject="x" * 101)),
        Probe("read the config", "ssm:GetParameter", parameter_arn,
              lambda c: c("ssm").get_parameter(Name=stage["parameter"])),
        Probe("describe an execution", "states:DescribeExecution", stage["execution"],
              lambda c: c("stepfunctions").describe_execution(executionArn=stage["execution"])),
    ]


def _client_factory(runtime: LocalRuntime, function: str) -> Callable[[str], Any]:
    session = _session(runtime.identity_of(function))
    return lambda service: session.client(service, endpoint_url=runtime.endpoint)


@pytest.mark.parametrize("function", policies.functions())
def test_no_function_reaches_the_other_stage(function: str, stages: dict, runtime: LocalRuntime) -> None:
    client_for = _client_factory(runtime, function)
    reached = [p.name for p in probes(stages["other"]) if not refused(client_for, p.call)]
    assert reached == [], f"{function} of stage local reached stage other: {reached}"


@pytest.mark.parametrize("function", policies.functions())
def test_each_function_gets_exactly_its_grants_on_its_own_stage(function: str, stages: dict,
                                                                runtime: LocalRuntime) -> None:
    policy = function_policy(function)
    client_for = _client_factory(runtime, function)
    wrong = []
    for probe in probes(stages["local"]):
        expected = policies.allows(policy, probe.action, probe.arn)
        if refused(client_for, probe.call) == expected:
            wrong.append(f"{probe.name} ({probe.action} on {probe.arn}): policy says "
                         f"{'allow' if expected else 'deny'}, the local AWS did the opposite")
    assert wrong == [], wrong


def test_the_probes_cover_grants_and_refusals(stages: dict) -> None:
    """Every probe is allowed to some function and refused to another, so both answers are exercised."""
    for probe in probes(stages["local"]):
        answers = {policies.allows(function_policy(f), probe.action, probe.arn) for f in policies.functions()}
        assert answers == {True, False}, probe.name


def test_a_function_of_the_other_stage_cannot_reach_this_one(stages: dict, runtime: LocalRuntime) -> None:
    """The same policy template rendered for ``other``, on an identity of its own: refused on ``local``."""
    iam = runtime.client("iam")
    name = OTHER.function("create_key")
    iam.create_user(UserName=name, Path="/service/")
    iam.put_user_policy(UserName=name, PolicyName="p",
                        PolicyDocument=json.dumps(policies.for_stage("create_key", OTHER.stage)))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    iam_consistency.settle()  # the new key has reached every endpoint
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                    aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)

    def client_for(service: str) -> Any:
        return session.client(service, endpoint_url=runtime.endpoint)

    local = stages["local"]
    assert refused(client_for, lambda c: c("iam").create_access_key(UserName=local["user"]))
    assert refused(client_for, lambda c: c("secretsmanager").get_secret_value(SecretId=local["escrow"]))
    assert refused(client_for, lambda c: c("dynamodb").get_item(
        TableName=local["table"], Key={"pk": {"S": "x"}, "sk": {"S": "x"}}))
    # ...and it is a working identity on its own stage.
    assert not refused(client_for, lambda c: c("iam").list_access_keys(UserName=stages["other"]["user"]))


@pytest.mark.parametrize(("resource", "allowed"), [("*", True), ("state-machine", False)])
def test_task_token_calls_match_only_a_star_resource(runtime: LocalRuntime, resource: str, allowed: bool) -> None:
    """SendTaskSuccess/Failure have no resource type (Service Authorization Reference): on AWS a grant scoped to
    the state machine never matches them, so the webhook and the poller would be refused. Locally too."""
    iam = runtime.client("iam")
    name = f"sendtask-{'star' if allowed else 'scoped'}"
    iam.create_user(UserName=name, Path="/service/")
    scoped = runtime.state_machine_arn if resource == "state-machine" else "*"
    iam.put_user_policy(UserName=name, PolicyName="tokens", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["states:SendTaskSuccess"],
                                                "Resource": scoped}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    iam_consistency.settle()
    sfn = boto3.session.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                                region_name="us-east-1").client("stepfunctions", endpoint_url=runtime.endpoint)
    with pytest.raises(ClientError) as raised:
        sfn.send_task_success(taskToken="not-a-token-of-any-task", output="{}")
    denied = raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied is not allowed, raised.value.response["Error"]
