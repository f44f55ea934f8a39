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
    invoke = res["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert invoke["Resource"] == [{"Fn::GetAtt": [template.logical_id(t), "Arn"]} for t in resources.task_functions()]


def test_the_template_and_the_boto3_step_share_their_documents() -> None:
    merged = template.merge_template("prod")["Resources"]
    rule = merged["ExecutionFailedRule"]["Properties"]
    state_machine = {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:"
                               "ci-key-rotator-prod-rotation"}
    assert rule["EventPattern"] == resources.execution_failed_pattern(state_machine)
    readers = merged["EscrowKey"]["Properties"]["KeyPolicy"]["Statement"][1]["Principal"]["AWS"]
    assert readers == [{"Fn::GetAtt": [template.role_logical_id(f), "Arn"]} for f in resources.escrow_readers()]


def test_the_cli_writes_the_merge_template(tmp_path: Path) -> None:
    from deploy import __main__ as cli

    out = tmp_path / "merge.json"
    assert cli.main(["merge-template", "--stage", "dev", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert "RotationConfig" not in merged["Resources"], "without --config the parameter is managed by make deploy"
    assert merged["Resources"]["RotationStateMachine"]["Properties"]["StateMachineName"] == "ci-key-rotator-dev-rotation"
