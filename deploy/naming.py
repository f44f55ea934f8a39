"""Every name the deployment uses, derived from the app name and the stage: one place, so the policy
files, ``.chalice/config.json``, the boto3 step, the merged template and the tests cannot drift.

The policy files in ``.chalice/`` cannot depend on the stage (Chalice reads them as they are), so they
are scoped to the app's prefixes below; stages that share an account share that boundary (one account
per stage is the recommended setup, see README "Deploy to AWS").
"""

from __future__ import annotations

from dataclasses import dataclass

APP = "ci-key-rotator"
#: IAM path of the CI users the rotator manages; its key actions are scoped to ``user<MANAGED_PATH>*``.
MANAGED_PATH = "/ci/"
#: Audit rules (IAM and console sign-in events, AWS Health global events) need this region.
AUDIT_REGION = "us-east-1"

# Resource patterns (stage-independent) the policy files are scoped to.
TABLE_PATTERN = f"arn:aws:dynamodb:*:*:table/{APP}-*"
TOPIC_PATTERN = f"arn:aws:sns:*:*:{APP}-*"
STATE_MACHINE_PATTERN = f"arn:aws:states:*:*:stateMachine:{APP}-*"
EXECUTION_PATTERN = f"arn:aws:states:*:*:execution:{APP}-*:*"
ESCROW_PATTERN = f"arn:aws:secretsmanager:*:*:secret:{APP}-escrow/*"
#: CI tokens, webhook secrets, the Slack webhook URL: ``secretsmanager:ci-key-rotator/...``.
REFERENCE_SECRET_PATTERN = f"arn:aws:secretsmanager:*:*:secret:{APP}/*"
#: The rotation config and ``ssm:/ci-key-rotator/...`` references.
PARAMETER_PATTERN = f"arn:aws:ssm:*:*:parameter/{APP}/*"
MANAGED_USERS_PATTERN = f"arn:aws:iam::*:user{MANAGED_PATH}*"
LOG_GROUP_PATTERN = f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP}-*"

#: What references in the rotation config must look like to be readable under those patterns.
SECRET_REFERENCE_PREFIX = f"{APP}/"
PARAMETER_REFERENCE_PREFIX = f"/{APP}/"


@dataclass(frozen=True)
class StageNames:
    stage: str

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

    def function(self, name: str) -> str:
        """A Lambda's name, and its role's name (Chalice names both ``<app>-<stage>-<function>``)."""
        return f"{self.prefix}-{name}"

    def tags(self) -> dict[str, str]:
        return {"app": APP, "stage": self.stage, "managed-by": f"{APP}-deploy"}
