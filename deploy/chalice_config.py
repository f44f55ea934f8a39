""".chalice/config.json: what each stage must say, derived from deploy/naming.py and the policy files.

``autogen_policy`` is off and every function names its own policy file, rendered for the stage from the
template ``policy-<function>.json`` (``stages/<stage>/policy-<function>.json``, see deploy/policies.py);
Chalice then makes one role per function, ``ci-key-rotator-<stage>-<function>``. ``python -m deploy prepare --stage S`` writes
the stage's section (the two ARNs need the account and region, so they are filled in at deploy time and
are empty in the committed file until then), and the Powertools layer of the region (deploy/layer.py);
the tests check the file against ``expected``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy import layer, naming, policies, resources

CONFIG_PATH = policies.CHALICE_DIR / "config.json"
#: IAM actions that change a key, or a graduated role (chalicelib/workflow/graduate_ensure_role.py and
#: graduate_rollback.py): the functions holding one are "the rotator" for the audit.
KEY_WRITES = ("iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:CreateRole",
              "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DeleteRolePolicy",
              "iam:DetachRolePolicy", "iam:DeleteRole")

COMMON_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": naming.APP,
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_METRICS_NAMESPACE": "CIKeyRotator",
}


def key_writers() -> list[str]:
    """Functions whose policy may change an access key (their roles are the rotator's identity)."""
    writers = []
    for function in policies.functions():
        policy = policies.load(function)
        if any(action in KEY_WRITES for action, _, _ in policies.grants(policy)):
            writers.append(function)
    return writers


def stage_environment(stage: str, topic_arn: str = "", state_machine_arn: str = "") -> dict[str, str]:
    names = naming.StageNames(stage)
    return {
        "ROTATOR_TABLE_NAME": names.table,
        "ROTATOR_TOPIC_ARN": topic_arn,
        "ROTATOR_STATE_MACHINE_ARN": state_machine_arn,
        "ROTATOR_ESCROW_PREFIX": names.escrow_prefix,
        "ROTATOR_ESCROW_KMS_KEY_ID": names.kms_alias,
        "ROTATOR_ESCROW_PRINCIPALS": ",".join(resources.escrow_principal_patterns(stage)),
        "ROTATOR_CONFIG_PATH": f"ssm:{names.config_parameter}",
        "ROTATOR_AUDIT_ROTATOR_ROLE": ",".join(names.function(f) for f in key_writers()),
        "ROTATOR_AUDIT_RESOURCE_PREFIX": naming.APP,
        "ROTATOR_AUDIT_SLACK_WEBHOOK": f"secretsmanager:{names.slack_webhook_secret}",
    }


def expected_stage(stage: str, topic_arn: str = "", state_machine_arn: str = "",
                   layers: list[str] | None = None) -> dict[str, Any]:
    return {
        "api_gateway_stage": "api",
        "layers": list(layers or []),
        "autogen_policy": False,
        "environment_variables": stage_environment(stage, topic_arn, state_machine_arn),
        "lambda_functions": {f: {"iam_policy_file": policies.stage_policy_file(f, stage)}
                             for f in policies.functions()},
    }


def load(path: Path | None = None) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((path or CONFIG_PATH).read_text())
    return config


def problems(config: dict[str, Any] | None = None) -> list[str]:
    """How config.json departs from what the stages need (ARNs may be empty or filled)."""
    config = config if config is not None else load()
    found = []
    if config.get("autogen_policy") is not False:
        found.append("autogen_policy must be false (one policy file per function)")
    if not config.get("xray"):
        found.append("xray must be true (Tracer on every handler needs active tracing)")
    for stage, section in (config.get("stages") or {}).items():
        env = section.get("environment_variables", {})
        layers = section.get("layers") or []
        want = expected_stage(stage, env.get("ROTATOR_TOPIC_ARN", ""), env.get("ROTATOR_STATE_MACHINE_ARN", ""),
                              layers)
        if [arn for arn in layers if not layer.is_layer_version_arn(arn)] or len(layers) > 1:
            found.append(f"stages.{stage}.layers: only the Powertools layer (deploy/layer.py), found {layers}")
        for key, value in want.items():
            if section.get(key) != value:
                found.append(f"stages.{stage}.{key}: expected {json.dumps(value)}, found {json.dumps(section.get(key))}")
        for function in policies.functions():
            rendered = policies.stage_policy_path(function, stage)
            if not rendered.exists() or json.loads(rendered.read_text()) != policies.for_stage(function, stage):
                found.append(f"{rendered.relative_to(policies.CHALICE_DIR.parent)}: not the rendering of "
                             f"{policies.policy_path(function).name} for {stage} (python -m deploy policies --write)")
    return found


def write_stage(stage: str, topic_arn: str, state_machine_arn: str, path: Path | None = None,
                layers: list[str] | None = None) -> bool:
    """Set the stage's section and render its policy files; True if config.json changed."""
    path = path or CONFIG_PATH
    policies.write_stage(stage, path.parent)
    config = load(path)
    stages = config.setdefault("stages", {})
    section = stages.setdefault(stage, {})
    updated = {**section, **expected_stage(stage, topic_arn, state_machine_arn, layers)}
    if updated == section:
        return False
    stages[stage] = updated
    path.write_text(json.dumps(config, indent=2) + "\n")
    return True
