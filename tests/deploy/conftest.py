"""Fixtures for the deployment tests: a stage deployed into the session's moto (IAM authentication on)
with the same boto3 code ``make deploy`` runs; Chalice's part is simulated by creating its functions and
roles the way ``chalice deploy`` names them."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from deploy import chalice_config, naming, policies
from deploy.resources import Deployment
from local.runtime import REGION, LocalRuntime

LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def operator_session(runtime: LocalRuntime) -> boto3.session.Session:
    """The deployer: an administrator of the (moto) account; the endpoint comes from AWS_ENDPOINT_URL."""
    return boto3.session.Session(aws_access_key_id=runtime.operator.access_key_id,
                                 aws_secret_access_key=runtime.operator.secret_access_key, region_name=REGION)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# deployment test\n")
    return buffer.getvalue()


def chalice_deploy(session: boto3.session.Session, stage: str) -> dict[str, Any]:
    """What ``chalice deploy --stage`` leaves behind: one role per function (its policy file) and the
    functions with the stage's environment; returns the ``.chalice/deployed/<stage>.json`` content."""
    names = naming.StageNames(stage)
    iam, lam = session.client("iam"), session.client("lambda")
    d = Deployment(stage, session)
    environment = chalice_config.stage_environment(stage, d.topic_arn, d.state_machine_arn)
    resources = []
    for function in policies.functions():
        role_name = names.function(function)
        role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]["Arn"]
        iam.put_role_policy(RoleName=role_name, PolicyName=role_name,
                            PolicyDocument=policies.policy_path(function).read_text())
        arn = lam.create_function(FunctionName=names.function(function), Runtime="python3.12", Role=role_arn,
                                  Handler="app.app", Code={"ZipFile": _zip()},
                                  Environment={"Variables": environment})["FunctionArn"]
        resources += [{"name": f"{function}_role", "resource_type": "iam_role", "role_name": role_name,
                       "role_arn": role_arn},
                      {"name": function, "resource_type": "lambda_function", "lambda_arn": arn}]
    return {"resources": resources, "schema_version": "2.0", "backend": "api"}


@pytest.fixture(scope="session")
def deployer(runtime: LocalRuntime) -> Iterator[boto3.session.Session]:
    yield operator_session(runtime)
