"""``make package``: one CloudFormation/SAM template with everything ``make deploy`` creates.

``merge_template(stage)`` is the part Chalice cannot make — the ledger table, the outcomes topic, the
escrow's KMS key, the state machine (``statemachine/rotation.asl.json`` with ``DefinitionSubstitutions``
pointing at the Chalice functions), its role, the EventBridge rule for executions that end without an
alert, and the rotation config parameter — plus overrides of the Chalice resources (each function's
environment gets the topic and state machine ARNs and the Powertools layer, resolved from its public SSM
parameter when the stack is created; each role gets the name the audit recognises).
``chalice package --merge-template`` deep-merges it into Chalice's own template.

``package_offline`` runs Chalice's own template generation without building the dependency bundle
(which needs PyPI): the template is the one ``chalice package`` writes, with a placeholder CodeUri. The
tests and ``make test`` lint that one with cfn-lint; ``make package`` builds the real thing.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from deploy import config_store, infra, layer, naming, policies, protection, resources
from deploy.analysis import ROOT


def logical_id(function: str) -> str:
    """Chalice's CloudFormation name for a function (``create_key`` → ``CreateKey``)."""
    if function == "api_handler":
        return "APIHandler"
    return "".join(part[:1].upper() + part[1:] for part in function.replace("-", "_").split("_"))


def role_logical_id(function: str) -> str:
    """Chalice's CloudFormation name for a function's role (``api_handler`` → ``ApiHandlerRole``)."""
    return "".join(part[:1].upper() + part[1:] for part in f"{function}_role".split("_"))


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def merge_template(stage: str, config_text: str | None = None) -> dict[str, Any]:
    names = naming.StageNames(stage)
    functions = policies.functions()
    tasks = resources.task_functions()
    state_machine_arn = _sub(
        "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:" + names.state_machine)
    tags = [{"Key": k, "Value": v} for k, v in names.tags().items()]
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"CI Key Rotator ({stage}): Chalice functions plus the ledger, escrow key, outcomes "
                       "topic and rotation state machine. Deploy in us-east-1 for the audit rules.",
        "Parameters": {
            "PowertoolsLayerArn": {
                "Type": "AWS::SSM::Parameter::Value<String>",
                "Default": layer.parameter_name(),
                "Description": "The AWS-managed Powertools layer: pydantic, cryptography and the X-Ray SDK (deploy/layer.py)",
            },
        },
        "Resources": {},
        "Outputs": {
            "StateMachineArn": {"Value": {"Ref": "RotationStateMachine"}},
            "UndoStateMachineArn": {"Value": {"Ref": "UndoStateMachine"}},
            "OutcomesTopicArn": {"Value": {"Ref": "OutcomesTopic"}},
            "LedgerTableName": {"Value": {"Ref": "LedgerTable"}},
        },
    }
    res = template["Resources"]
    res["LedgerTable"] = {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": names.table,
            **infra.table_schema(),
            "TimeToLiveSpecification": dict(infra.TTL_SPECIFICATION),
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "DeletionProtectionEnabled": True,
            "SSESpecification": {"SSEEnabled": True},
            "Tags": tags,
        },
    }
    res["OutcomesTopic"] = {
        "Type": "AWS::SNS::Topic",
        "Properties": {"TopicName": names.topic, "Tags": tags},
    }
    res["OutcomesTopicPolicy"] = {
        "Type": "AWS::SNS::TopicPolicy",
        "Properties": {
            "Topics": [{"Ref": "OutcomesTopic"}],
            "PolicyDocument": resources.topic_policy(
                {"Ref": "OutcomesTopic"}, {"Fn::GetAtt": ["ExecutionFailedRule", "Arn"]}, {"Ref": "AWS::AccountId"},
                _sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
                     + protection.alarm_prefix(stage) + "*")),
        },
    }
    def role_arns(functions: list[str]) -> list[Any]:
        return [{"Fn::GetAtt": [role_logical_id(f), "Arn"]} for f in functions]

    res["EscrowKey"] = {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": f"CI Key Rotator escrow ({stage})",
            "EnableKeyRotation": True,
            "KeyPolicy": resources.key_policy(
                _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"),
                role_arns(resources.escrow_readers()), role_arns(resources.escrow_writers()),
                _sub("secretsmanager.${AWS::Region}.amazonaws.com"), {"Ref": "AWS::AccountId"},
                key_admin={"Fn::GetAtt": ["EscrowKeyAdminRole", "Arn"]},
                break_glass={"Fn::GetAtt": ["EscrowBreakGlassRole", "Arn"]},
                direct_users={f: ({"Fn::GetAtt": [role_logical_id(f), "Arn"]}, actions)
                              for f, actions in resources.key_users().items()}),
            "Tags": tags,
        },
    }
    for role_id, role_name, policy in (
            ("EscrowBreakGlassRole", names.break_glass_role, resources.break_glass_policy(stage)),
            ("EscrowKeyAdminRole", names.key_admin_role, None)):
        properties: dict[str, Any] = {
            "RoleName": role_name, "MaxSessionDuration": 3600,
            "AssumeRolePolicyDocument": resources.escrow_role_trust({"Ref": "AWS::AccountId"}),
            "Description": f"CI Key Rotator escrow ({stage})", "Tags": tags}
        if policy is not None:
            properties["Policies"] = [{"PolicyName": "escrow", "PolicyDocument": policy}]
        res[role_id] = {"Type": "AWS::IAM::Role", "Properties": properties}
    res["EscrowKeyAlias"] = {
        "Type": "AWS::KMS::Alias",
        "Properties": {"AliasName": names.kms_alias, "TargetKeyId": {"Ref": "EscrowKey"}},
    }
    res["StateMachineRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": names.state_machine_role,
            "AssumeRolePolicyDocument": resources.states_trust_policy({"Ref": "AWS::AccountId"}),
            "Policies": [{"PolicyName": "invoke-tasks", "PolicyDocument": resources.states_policy(
                [{"Fn::GetAtt": [logical_id(t), "Arn"]} for t in tasks])}],
            "Tags": tags,
        },
    }
    # One machine per definition (rotation, undo, graduate), all invoking tasks through the same role.
    for (kind, path), machine in zip(infra.DEFINITIONS.items(), resources.machine_names(names), strict=True):
        text = path.read_text()
        res[f"{kind.capitalize()}StateMachine"] = {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": machine,
                "DefinitionString": text,
                "DefinitionSubstitutions": {
                    f"{logical_id(t)}FunctionArn": {"Fn::GetAtt": [logical_id(t), "Arn"]}
                    for t in infra.task_handlers(text)},
                "RoleArn": {"Fn::GetAtt": ["StateMachineRole", "Arn"]},
                "Tags": tags,
            },
        }
    res["ExecutionFailedRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": names.execution_rule,
            "Description": "A rotation, undo or graduation that ended without reaching its Alert state "
                           "(aborted, timed out, crashed)",
            "EventPattern": resources.execution_failed_pattern([
                _sub("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:" + name)
                for name in resources.machine_names(names)]),
            "State": "ENABLED",
            "Targets": [resources.execution_failed_target({"Ref": "OutcomesTopic"})],
        },
    }
    if config_text is not None:
        # Over 4 KB the config is stored in parts the parameter names (deploy/config_store.py); a new
        # config has new part names, so CloudFormation creates them before it updates the parameter and
        # deletes the old ones only after.
        layout = config_store.plan(names.config_parameter, config_text)
        for i, (part, value) in enumerate(layout.parts.items()):
            res[f"RotationConfigPart{i}"] = {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": part, "Type": "String", "Tier": "Standard", "Value": value,
                               "Description": f"part of {names.config_parameter} (do not edit)"},
            }
        res["RotationConfig"] = {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": names.config_parameter, "Type": "String", "Tier": config_store.HEAD_TIER,
                           "Description": f"CI Key Rotator rotation config ({stage})", "Value": layout.head},
        }
        if layout.parts:
            res["RotationConfig"]["DependsOn"] = [f"RotationConfigPart{i}" for i in range(len(layout.parts))]
    environment = {
        "ROTATOR_TOPIC_ARN": {"Ref": "OutcomesTopic"},
        "ROTATOR_STATE_MACHINE_ARN": state_machine_arn,
        "ROTATOR_ESCROW_KMS_KEY_ID": {"Ref": "EscrowKeyAlias"},
    }
    for function in functions:
        res[logical_id(function)] = {"Properties": {"Environment": {"Variables": dict(environment)},
                                                    "Layers": [{"Ref": "PowertoolsLayerArn"}]}}
        res[role_logical_id(function)] = {"Properties": {"RoleName": names.function(function)}}
    # Chalice's SAM event (``<Function>Event``, the AWS::Events::Rule) has no state; the audit's rule must
    # admit read-only CloudTrail events (chalicelib/event_patterns.RULE_STATES). SAM's CloudWatchEvent
    # takes ``State``: https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-cloudwatchevent.html
    from chalicelib.event_patterns import RULE_STATES

    for function, state in RULE_STATES.items():
        if function in functions:
            res[logical_id(function)]["Properties"]["Events"] = {
                f"{logical_id(function)}Event": {"Properties": {"State": state}}}
    protection.add_to_template(res, stage, logical_id, role_logical_id)
    return template


# -- Chalice's template, without the dependency build ------------------------------------------------


def package_offline(stage: str, outdir: Path, merge: Path | None = None) -> Path:
    """What ``chalice package --stage S [--merge-template M] OUTDIR`` writes, with an app-only zip."""
    from chalice.cli.factory import CLIFactory
    from chalice.deploy import models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
    from chalice.deploy.deployer import (
        BaseDeployStep,
        BuildStage,
        InjectDefaults,
        LambdaEventSourcePolicyInjector,
        PolicyGenerator,
        SwaggerBuilder,
        WebsocketPolicyInjector,
    )
    from chalice.deploy.swagger import CFNSwaggerGenerator
    from chalice.package import (
        AppPackager,
        CompositePostProcessor,
        JSONTemplateSerializer,
        ResourceBuilder,
        SAMCodeLocationPostProcessor,
        SAMTemplateGenerator,
        TemplateDeepMerger,
        TemplateMergePostProcessor,
    )
    from chalice.policy import AppPolicyGenerator
    from chalice.utils import OSUtils

    outdir.mkdir(parents=True, exist_ok=True)
    bundle = outdir / "app-only.zip"

    class AppOnlyPackage(BaseDeployStep):
        def handle_deploymentpackage(self, config: Any, resource: Any) -> None:
            if isinstance(resource.filename, models.Placeholder):
                with zipfile.ZipFile(bundle, "w") as archive:
                    archive.write(ROOT / "app.py", "app.py")
                    for path in sorted((ROOT / "chalicelib").rglob("*.py")):
                        archive.write(path, path.relative_to(ROOT).as_posix())
                resource.filename = str(bundle)

    os.environ.setdefault("AWS_DEFAULT_REGION", naming.AUDIT_REGION)
    factory = CLIFactory(project_dir=str(ROOT))
    config = factory.create_config_obj(chalice_stage_name=stage)
    options = factory.create_package_options()
    osutils = OSUtils()
    build_stage = BuildStage(steps=[
        InjectDefaults(), AppOnlyPackage(), PolicyGenerator(policy_gen=AppPolicyGenerator(osutils=osutils),
                                                            osutils=osutils),
        SwaggerBuilder(swagger_generator=CFNSwaggerGenerator()), LambdaEventSourcePolicyInjector(),
        WebsocketPolicyInjector(),
    ])
    serializer = JSONTemplateSerializer()
    packager = AppPackager(
        SAMTemplateGenerator(config, options),
        ResourceBuilder(ApplicationGraphBuilder(), DependencyBuilder(), build_stage),
        CompositePostProcessor([
            SAMCodeLocationPostProcessor(osutils=osutils),
            TemplateMergePostProcessor(osutils=osutils, merger=TemplateDeepMerger(), template_serializer=serializer,
                                       merge_template=str(merge) if merge else None),
        ]),
        serializer, osutils)
    packager.package_app(config, str(outdir), stage)
    return outdir / "sam.json"


def write_merge_template(stage: str, path: Path, config_text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merge_template(stage, config_text), indent=2) + "\n")
    return path
