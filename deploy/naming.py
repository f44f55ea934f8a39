"""Every name the deployment uses, derived from the app name and the stage: one place, so the policy
files, ``.chalice/config.json``, the boto3 step, the merged template, the local runtime and the tests
cannot drift.

Every name and every policy Resource carries the stage, so two stages in one account cannot touch each
other's table, topic, state machine, escrow, CI tokens, config or managed users. Managed CI users are
attributed to a stage by their IAM path, ``/ci/<stage>/``: the path is part of the user's ARN, which is
what IAM matches a policy's Resource against for the access-key actions, so no condition key is needed
(and an IAM path cannot be changed by anyone the rotator's policies let through). The policy files in
``.chalice/policy-<function>.json`` are templates written with ``STAGE_TOKEN`` in place of the stage;
``deploy.policies`` renders them per stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APP = "ci-key-rotator"
#: Written in the policy templates where the stage goes (``.chalice/policy-<function>.json``).
STAGE_TOKEN = "${Stage}"
#: Stage names are one lowercase word: with a hyphen, ``ci-key-rotator-dev-*`` would match stage ``dev-eu``.
STAGE_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
#: Parent IAM path of the CI users the rotator manages; each stage's users live under ``/ci/<stage>/``.
MANAGED_ROOT = "/ci/"
#: Audit rules (IAM and console sign-in events, AWS Health global events) need this region.
AUDIT_REGION = "us-east-1"


@dataclass(frozen=True)
class StageNames:
    stage: str

    def __post_init__(self) -> None:
        if self.stage != STAGE_TOKEN and not STAGE_NAME.match(self.stage):
            raise ValueError(f"stage name {self.stage!r}: one lowercase word of letters and digits "
                             "(it is part of every resource name and policy pattern)")

    @property
    def prefix(self) -> str:
        return f"{APP}-{self.stage}"

    @property
    def table(self) -> str:
        return self.prefix

    @property
    def topic(self) -> str:
        return f"{self.prefix}-outcomes"

    @property
    def state_machine(self) -> str:
        return f"{self.prefix}-rotation"

    @property
    def state_machine_role(self) -> str:
        return f"{self.prefix}-states"

    @property
    def execution_rule(self) -> str:
        """EventBridge rule: an execution that ended FAILED/TIMED_OUT/ABORTED → the outcomes topic."""
        return f"{self.prefix}-execution-failed"

    @property
    def kms_alias(self) -> str:
        return f"alias/{self.prefix}-escrow"

    @property
    def escrow_prefix(self) -> str:
        return f"{APP}-escrow/{self.stage}"

    @property
    def config_parameter(self) -> str:
        return f"/{APP}/{self.stage}/rotation-config"

    @property
    def slack_webhook_secret(self) -> str:
        return f"{APP}/{self.stage}/slack-webhook"

    @property
    def break_glass_role(self) -> str:
        """The only role besides the escrow's functions that may read an escrowed secret (README)."""
        return f"{self.prefix}-break-glass"

    @property
    def key_admin_role(self) -> str:
        """Administers the escrow key (policy, rotation, deletion) but can neither decrypt nor read."""
        return f"{self.prefix}-key-admin"

    @property
    def managed_path(self) -> str:
        return f"{MANAGED_ROOT}{self.stage}/"

    @property
    def secret_reference_prefix(self) -> str:
        """Where the config's ``secretsmanager:`` references must live for this stage's functions."""
        return f"{APP}/{self.stage}/"

    @property
    def parameter_reference_prefix(self) -> str:
        return f"/{APP}/{self.stage}/"

    # -- the Resource patterns of the stage's policies --------------------------------------------------

    @property
    def table_pattern(self) -> str:
        return f"arn:aws:dynamodb:*:*:table/{self.table}"

    @property
    def topic_pattern(self) -> str:
        return f"arn:aws:sns:*:*:{self.topic}"

    @property
    def state_machine_pattern(self) -> str:
        return f"arn:aws:states:*:*:stateMachine:{self.state_machine}"

    @property
    def execution_pattern(self) -> str:
        return f"arn:aws:states:*:*:execution:{self.state_machine}:*"

    @property
    def escrow_pattern(self) -> str:
        return f"arn:aws:secretsmanager:*:*:secret:{self.escrow_prefix}/*"

    @property
    def reference_secret_pattern(self) -> str:
        """CI tokens, webhook secrets, the Slack webhook URL: ``secretsmanager:ci-key-rotator/<stage>/...``."""
        return f"arn:aws:secretsmanager:*:*:secret:{self.secret_reference_prefix}*"

    @property
    def parameter_pattern(self) -> str:
        """The rotation config and ``ssm:/ci-key-rotator/<stage>/...`` references."""
        return f"arn:aws:ssm:*:*:parameter{self.parameter_reference_prefix}*"

    @property
    def managed_users_pattern(self) -> str:
        return f"arn:aws:iam::*:user{self.managed_path}*"

    @property
    def log_group_pattern(self) -> str:
        return f"arn:aws:logs:*:*:log-group:/aws/lambda/{self.prefix}-*"

    def function(self, name: str) -> str:
        """A Lambda's name, and its role's name (Chalice names both ``<app>-<stage>-<function>``)."""
        return f"{self.prefix}-{name}"

    def tags(self) -> dict[str, str]:
        return {"app": APP, "stage": self.stage, "managed-by": f"{APP}-deploy"}


#: The policy templates' patterns (``STAGE_TOKEN`` where the stage goes).
TEMPLATE = StageNames(STAGE_TOKEN)
TABLE_PATTERN = TEMPLATE.table_pattern
TOPIC_PATTERN = TEMPLATE.topic_pattern
STATE_MACHINE_PATTERN = TEMPLATE.state_machine_pattern
EXECUTION_PATTERN = TEMPLATE.execution_pattern
ESCROW_PATTERN = TEMPLATE.escrow_pattern
REFERENCE_SECRET_PATTERN = TEMPLATE.reference_secret_pattern
PARAMETER_PATTERN = TEMPLATE.parameter_pattern
MANAGED_USERS_PATTERN = TEMPLATE.managed_users_pattern
LOG_GROUP_PATTERN = TEMPLATE.log_group_pattern
#: Kept for the checks that do not know the stage; ``StageNames(stage).managed_path`` is the stage's.
MANAGED_PATH = MANAGED_ROOT
SECRET_REFERENCE_PREFIX = f"{APP}/"
PARAMETER_REFERENCE_PREFIX = f"/{APP}/"
