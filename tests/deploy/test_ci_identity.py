"""The recommended CI identity (templates/ci-identity/), created in moto with IAM authentication on.

moto evaluates a role's trust policy on AssumeRole, but only partly: it compares an account-root
principal as a string (so it admits nobody) and knows no ``aws:PrincipalTag`` or ``aws:PrincipalArn``, and
it skips condition keys it does not know. ``aws_trust_rules`` fills those gaps with AWS's documented
behaviour for this test: an ``arn:aws:iam::<account>:root`` principal admits that account's principals,
``aws:PrincipalTag/*`` is the calling user's tag, ``aws:PrincipalArn`` the calling user's ARN (path
included) matched with ``ArnLike`` wildcards, and a key that is absent fails (as in AWS).
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from local.runtime import ACCOUNT, REGION, LocalRuntime

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "ci-identity"
PIPELINE = "web-app"
ROTATOR_STAGE = "prod"
#: The managed CI users of the rotator stage ``prod`` (naming.StageNames("prod").managed_path).
MANAGED_CI_USERS = f"arn:aws:iam::{ACCOUNT}:user/ci/{ROTATOR_STAGE}/*"


# -- a small CloudFormation renderer: Ref, Fn::Sub, Fn::GetAtt of what it created -----------------------


def render(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return values[node["Ref"]]
        if set(node) == {"Fn::Sub"}:
            return re.sub(r"\$\{([\w:]+)\}", lambda m: values[m.group(1)], node["Fn::Sub"])
        if set(node) == {"Fn::GetAtt"}:
            return values[".".join(node["Fn::GetAtt"])]
        return {k: render(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [render(v, values) for v in node]
    return node


def template(name: str, parameters: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    doc = yaml.safe_load((TEMPLATES / name).read_text())
    values = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
    for key, spec in doc.get("Parameters", {}).items():
        values[key] = parameters.get(key, spec.get("Default"))
    return doc["Resources"], values


def create_deploy_role(iam: Any, pipeline: str) -> str:
    resources, values = template("deploy-role.yaml", {
        "CiAccountId": ACCOUNT, "CiPrincipalArnPattern": MANAGED_CI_USERS, "PipelineName": pipeline,
        "ArtifactBucket": "artifacts",
        "CloudFormationExecutionRoleName": f"{pipeline}-cfn-execution"})
    props = render(resources["DeployRole"]["Properties"], values)
    import json

    role = iam.create_role(RoleName=props["RoleName"], AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]),
                           MaxSessionDuration=props["MaxSessionDuration"])["Role"]
    for policy in props["Policies"]:
        iam.put_role_policy(RoleName=props["RoleName"], PolicyName=policy["PolicyName"],
                            PolicyDocument=json.dumps(policy["PolicyDocument"]))
    return str(role["Arn"])


def create_ci_user(iam: Any, name: str, role_arn: str, tag: str | None) -> Any:
    import json

    resources, values = template("ci-user.yaml", {"UserName": name, "DeployRoleArn": role_arn,
                                                  "AccessToProduction": tag or "true", "RotatorStage": ROTATOR_STAGE})
    group = render(resources["AssumeDeployRoleGroup"]["Properties"], values)
    iam.create_group(GroupName=group["GroupName"], Path=group["Path"])
    for policy in group["Policies"]:
        iam.put_group_policy(GroupName=group["GroupName"], PolicyName=policy["PolicyName"],
                             PolicyDocument=json.dumps(policy["PolicyDocument"]))
    values["AssumeDeployRoleGroup"] = group["GroupName"]
    user = render(resources["CiUser"]["Properties"], values)
    tags = [t for t in user["Tags"] if tag is not None or t["Key"] != "access-to-production"]
    iam.create_user(UserName=user["UserName"], Path=user["Path"], Tags=tags)
    for g in user["Groups"]:
        iam.add_user_to_group(GroupName=g, UserName=user["UserName"])
    key = iam.create_access_key(UserName=user["UserName"])["AccessKey"]
    return live_session(key)


def live_session(key: dict[str, str]) -> boto3.session.Session:
    """A session with a new key once IAM has propagated it (as a CI using a freshly rotated key would wait)."""
    from local import sim_clock, strict

    sim_clock.advance(strict.current().key_propagation_seconds)
    return boto3.session.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                                 region_name=REGION)


# -- moto's trust evaluation, completed -------------------------------------------------------------------


def arn_like(pattern: str, arn: str) -> bool:
    """IAM's ArnLike: ``*`` any run of characters, ``?`` one, case-sensitive, on the whole ARN."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn) is not None


@pytest.fixture
def aws_trust_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto.iam import access_control
    from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase
    from moto.iam.utils import format_incoming_conditional_values

    def check_principal(self: Any, principal: str) -> bool:
        expected = (self._statement.get("Principal") or {}).get("AWS")
        for allowed in [expected] if isinstance(expected, str) else expected or []:
            root = re.fullmatch(r"arn:aws:iam::(\d{12}):root", allowed)
            if allowed in ("*", principal) or (root and principal.split(":")[4] == root.group(1)):
                return True
        return False

    def check_conditions(self: Any, incoming: dict[str, str] | None) -> bool:
        for operator, keys in (self._statement.get("Condition") or {}).items():
            if operator not in ("StringEquals", "ArnLike"):
                return False  # fail closed: only what this test needs is evaluated
            for key, wanted in keys.items():
                actual = (incoming or {}).get(key)
                allowed = [wanted] if isinstance(wanted, str) else wanted
                if actual is None:
                    return False
                if operator == "StringEquals" and actual not in allowed:
                    return False
                if operator == "ArnLike" and not any(arn_like(pattern, actual) for pattern in allowed):
                    return False
        return True

    def check_trust(self: Any, role_arn: str) -> bool:
        incoming = format_incoming_conditional_values(self._data)
        user = getattr(self._access_key, "_owner_user_name", None)
        # The user's ARN with its IAM path, as AWS puts it in aws:PrincipalArn (moto's access key drops the path).
        incoming["aws:PrincipalArn"] = self.backend.get_user(user).arn if user else self._access_key.arn
        if user:
            for tag in self.backend.list_user_tags(user):
                incoming[f"aws:PrincipalTag/{tag['Key']}"] = tag["Value"]
        role = self.backend.get_role_by_arn(role_arn)
        result = access_control.IAMPolicy(role.assume_role_policy_document).is_action_permitted(
            self._action, role_arn, self._access_key.arn, incoming)
        return bool(result == access_control.PermissionResult.PERMITTED)

    monkeypatch.setattr(IAMPolicyStatement, "_check_principal", check_principal)
    monkeypatch.setattr(IAMPolicyStatement, "_check_conditions", check_conditions)
    monkeypatch.setattr(IAMRequestBase, "_check_role_trust_relationship", check_trust)
    yield


@pytest.fixture(scope="module")
def identity(runtime: LocalRuntime) -> dict[str, Any]:
    iam = runtime.client("iam")
    role_arn = create_deploy_role(iam, PIPELINE)
    return {
        "role_arn": role_arn,
        "tagged": create_ci_user(iam, "ci-web-app", role_arn, "true"),
        "untagged": create_ci_user(iam, "ci-untagged", role_arn, None),
        "not-production": create_ci_user(iam, "ci-staging-only", role_arn, "false"),
        # Tagged like a CI user by someone who may tag principals, but not a managed CI user of this stage.
        "tagged-human": tagged_outsider(iam, "jane", "/humans/", role_arn),
        "other-stage": tagged_outsider(iam, "ci-other-stage", "/ci/staging/", role_arn),
    }


def tagged_outsider(iam: Any, name: str, path: str, role_arn: str) -> boto3.session.Session:
    """A user outside ``MANAGED_CI_USERS`` that carries the production tag and may call sts:AssumeRole."""
    import json

    iam.create_user(UserName=name, Path=path, Tags=[{"Key": "access-to-production", "Value": "true"}])
    iam.put_user_policy(UserName=name, PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}]}))
    return live_session(iam.create_access_key(UserName=name)["AccessKey"])


def assume(session: boto3.session.Session, runtime: LocalRuntime, role_arn: str, **kwargs: Any) -> dict[str, Any]:
    sts = session.client("sts", endpoint_url=runtime.endpoint)
    return dict(sts.assume_role(RoleArn=role_arn, RoleSessionName="ci-web-app-1", DurationSeconds=900, **kwargs))


def denied(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def test_the_tagged_ci_user_with_the_external_id_gets_a_short_session(identity: dict, runtime: LocalRuntime,
                                                                      aws_trust_rules: None) -> None:
    credentials = assume(identity["tagged"], runtime, identity["role_arn"], ExternalId=PIPELINE)["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    role = runtime.client("iam").get_role(RoleName=f"{PIPELINE}-deploy")["Role"]
    assert role["MaxSessionDuration"] == 3600


def test_without_the_principal_tag_assume_role_is_refused(identity: dict, runtime: LocalRuntime,
                                                          aws_trust_rules: None) -> None:
    for user in ("untagged", "not-production"):
        code = denied(lambda u=user: assume(identity[u], runtime, identity["role_arn"], ExternalId=PIPELINE))
        assert code == "AccessDenied", user


def test_a_tagged_principal_that_is_not_a_managed_ci_user_is_refused(identity: dict, runtime: LocalRuntime,
                                                                     aws_trust_rules: None) -> None:
    """Tagging is not identity: whoever may tag a principal in the CI account could give it the tag. The
    trust policy also requires aws:PrincipalArn to be a managed CI user of this stage."""
    for user in ("tagged-human", "other-stage"):
        code = denied(lambda u=user: assume(identity[u], runtime, identity["role_arn"], ExternalId=PIPELINE))
        assert code == "AccessDenied", user


def test_the_trust_policy_names_the_managed_ci_users() -> None:
    resources, values = template("deploy-role.yaml", {"CiAccountId": ACCOUNT, "CiPrincipalArnPattern": MANAGED_CI_USERS,
                                                      "PipelineName": PIPELINE})
    (statement,) = render(resources["DeployRole"]["Properties"], values)["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"]["ArnLike"] == {"aws:PrincipalArn": MANAGED_CI_USERS}
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"] == PIPELINE
    parameter = yaml.safe_load((TEMPLATES / "deploy-role.yaml").read_text())["Parameters"]["CiPrincipalArnPattern"]
    assert "Default" not in parameter, "no default: every deployment names its CI users"
    assert re.fullmatch(parameter["AllowedPattern"], MANAGED_CI_USERS)
    assert not re.fullmatch(parameter["AllowedPattern"], f"arn:aws:iam::{ACCOUNT}:root")
    assert not re.fullmatch(parameter["AllowedPattern"], f"arn:aws:iam::{ACCOUNT}:role/ci/anything")


def test_a_wrong_or_missing_external_id_is_refused(identity: dict, runtime: LocalRuntime,
                                                   aws_trust_rules: None) -> None:
    assert denied(lambda: assume(identity["tagged"], runtime, identity["role_arn"], ExternalId="other-app")) == "AccessDenied"
    assert denied(lambda: assume(identity["tagged"], runtime, identity["role_arn"])) == "AccessDenied"


def test_the_ci_user_may_do_nothing_but_assume_the_role(identity: dict, runtime: LocalRuntime) -> None:
    tagged = identity["tagged"]
    for call in (lambda: tagged.client("iam", endpoint_url=runtime.endpoint).list_users(),
                 lambda: tagged.client("s3", endpoint_url=runtime.endpoint).list_buckets(),
                 lambda: tagged.client("secretsmanager", endpoint_url=runtime.endpoint).list_secrets()):
        assert denied(call) in ("AccessDenied", "AccessDeniedException", "403")
    other = runtime.client("iam").create_role(RoleName="someone-elses-role", AssumeRolePolicyDocument=(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}'
    ))["Role"]["Arn"]
    assert denied(lambda: assume(tagged, runtime, other, ExternalId=PIPELINE)) == "AccessDenied"


def test_the_ci_user_is_under_the_managed_path_so_the_rotator_may_rotate_it(identity: dict, runtime: LocalRuntime) -> None:
    user = runtime.client("iam").get_user(UserName="ci-web-app")["User"]
    assert user["Path"] == f"/ci/{ROTATOR_STAGE}/"
    assert user["Arn"].endswith(f":user/ci/{ROTATOR_STAGE}/ci-web-app")


def test_moto_alone_would_not_prove_it(identity: dict, runtime: LocalRuntime) -> None:
    """Why aws_trust_rules exists: stock moto refuses the tagged user too (account-root principal)."""
    assert denied(lambda: assume(identity["tagged"], runtime, identity["role_arn"], ExternalId=PIPELINE)) == "AccessDenied"
