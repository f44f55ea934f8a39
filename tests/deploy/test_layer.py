"""The Powertools layer (deploy/layer.py): what the package leaves out, resolved per region."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy import chalice_config, layer, policies, template

ARN = "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:21"


class StubbedSession:
    """A session whose SSM client answers from a botocore Stubber (no network)."""

    def __init__(self, answer: dict[str, Any] | str) -> None:
        self.ssm = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x",
                                         region_name="us-east-1").client("ssm")
        self.stubber = Stubber(self.ssm)
        expected = {"Name": layer.parameter_name()}
        if isinstance(answer, str):
            self.stubber.add_client_error("get_parameter", service_error_code=answer, expected_params=expected)
        else:
            self.stubber.add_response("get_parameter", answer, expected)
        self.stubber.activate()

    def client(self, service: str) -> Any:
        assert service == "ssm"
        return self.ssm


def test_the_parameter_names_the_bundled_powertools_version_and_this_python() -> None:
    pinned = [line for line in layer.REQUIREMENTS.read_text().splitlines() if line.startswith("aws-lambda-powertools")]
    assert pinned == [f"aws-lambda-powertools=={layer.powertools_version()}"]
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert layer.parameter_name() == f"/aws/service/powertools/python/x86_64/{python}/{layer.powertools_version()}"


def test_the_package_leaves_out_what_the_runtime_and_the_layer_provide() -> None:
    bundled = layer.pins(layer.REQUIREMENTS)
    assert "aws-lambda-powertools" in bundled, "the Tracer extra ([tracer]) would bundle botocore"
    assert not {"boto3", "botocore"} & set(bundled)
    from_layer = layer.pins(layer.LAYER_REQUIREMENTS)
    assert {"pydantic", "cryptography", "aws-xray-sdk"} <= set(from_layer)
    assert not set(from_layer) & set(bundled)


def test_the_layer_supplies_every_pin_of_requirements_layer() -> None:
    """AWS builds the layer from aws-lambda-powertools[all]: a pin outside that extra's ranges would run
    locally with one version and in Lambda with another (or not at all)."""
    assert layer.pins_the_layer_does_not_supply() == []
    assert layer.pins_the_layer_does_not_supply({"pydantic": "1.10.13", "requests": "2.32.3"}) == [
        "pydantic==1.10.13", "requests==2.32.3"]


def test_resolve_reads_the_public_parameter() -> None:
    assert layer.resolve(StubbedSession({"Parameter": {"Name": layer.parameter_name(), "Value": ARN,
                                                       "Type": "String"}})) == ARN


@pytest.mark.parametrize("answer", ["ParameterNotFound", "AccessDeniedException"])
def test_no_layer_published_or_readable_means_none(answer: str) -> None:
    assert layer.resolve(StubbedSession(answer)) is None


def test_a_value_that_is_not_a_powertools_layer_is_not_used() -> None:
    answer = {"Parameter": {"Name": layer.parameter_name(), "Value": "arn:aws:lambda:us-east-1:999999999999:layer:x:1",
                            "Type": "String"}}
    assert layer.resolve(StubbedSession(answer)) is None


def test_config_json_accepts_one_layer_version(tmp_path: Path) -> None:
    config = chalice_config.load()
    stage = next(iter(config["stages"]))
    config["stages"][stage]["layers"] = [ARN]
    assert chalice_config.problems(config) == []
    config["stages"][stage]["layers"] = ["arn:aws:lambda:us-east-1:999999999999:layer:powertools-all:1"]
    assert chalice_config.problems(config) == [], "a layer built from the same extra under another name (--layer-arn)"
    config["stages"][stage]["layers"] = [ARN, "arn:aws:lambda:us-east-1:999999999999:layer:powertools-all:1"]
    assert any("layers" in p for p in chalice_config.problems(config))
    config["stages"][stage]["layers"] = ["powertools"]
    assert any("layers" in p for p in chalice_config.problems(config))


def test_prepare_writes_the_layer_into_the_stage(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(chalice_config.load()))
    assert chalice_config.write_stage("layertest", "", "", path=path, layers=[ARN])
    assert json.loads(path.read_text())["stages"]["layertest"]["layers"] == [ARN]
    assert not chalice_config.write_stage("layertest", "", "", path=path, layers=[ARN]), "idempotent"


def test_the_packaged_template_resolves_the_layer_at_stack_creation() -> None:
    merged = template.merge_template("dev")
    assert merged["Parameters"]["PowertoolsLayerArn"] == {
        "Type": "AWS::SSM::Parameter::Value<String>", "Default": layer.parameter_name(),
        "Description": merged["Parameters"]["PowertoolsLayerArn"]["Description"]}
    functions = [r for r in merged["Resources"].values() if "Layers" in r.get("Properties", {})]
    assert functions and all(r["Properties"]["Layers"] == [{"Ref": "PowertoolsLayerArn"}] for r in functions)
    assert len(functions) == len(policies.functions())
