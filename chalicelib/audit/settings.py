"""Audit settings from the environment (prefix ROTATOR_, like chalicelib.settings).

Kept apart from the product's Settings so the audit pipeline can be configured and tested alone;
``table_name`` and ``topic_arn`` read the same variables as the product's settings.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

from chalicelib.audit.context import DEFAULT_RESOURCE_PREFIX, DEFAULT_ROTATOR_ROLE
from chalicelib.audit.finding import Severity
from chalicelib.secret_ref import SecretRef


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROTATOR_", frozen=True, extra="ignore")

    #: ROTATOR_TABLE_NAME: the product's single table; dedup items live under pk FINDING#...
    table_name: str = "ci-key-rotator"
    #: ROTATOR_TOPIC_ARN: the product's alert topic, used for findings unless ROTATOR_AUDIT_TOPIC_ARN is set.
    topic_arn: str = ""
    #: ROTATOR_AUDIT_TOPIC_ARN: a separate topic for audit findings (e.g. a paging topic).
    audit_topic_arn: str = ""
    #: ROTATOR_AUDIT_SLACK_WEBHOOK: where the Slack webhook URL is stored: secretsmanager:<name> / ssm:<name>.
    audit_slack_webhook: str = ""
    #: ROTATOR_AUDIT_ROTATOR_ROLE: IAM role (or local IAM user) name(s) the rotator's calls are made with;
    #: comma-separated when each Lambda has its own role.
    audit_rotator_role: str = DEFAULT_ROTATOR_ROLE
    #: ROTATOR_AUDIT_RESOURCE_PREFIX: name prefix of the product's Lambdas, rules, state machine, table.
    audit_resource_prefix: str = DEFAULT_RESOURCE_PREFIX
    #: ROTATOR_AUDIT_DEDUP_WINDOW_SECONDS: repeats within this window are counted, not re-notified.
    audit_dedup_window_seconds: int = 900
    #: ROTATOR_AUDIT_MIN_SEVERITY: below this, findings are logged but not notified.
    audit_min_severity: Severity = Severity.LOW
    #: ROTATOR_AUDIT_SLACK_MIN_SEVERITY: Slack gets only findings at or above this.
    audit_slack_min_severity: Severity = Severity.MEDIUM
    #: ROTATOR_AUDIT_KEY_MAX_AGE_DAYS / ROTATOR_AUDIT_KEY_UNUSED_DAYS: credential-report policy.
    audit_key_max_age_days: int = 90
    audit_key_unused_days: int = 45

    @property
    def findings_topic_arn(self) -> str:
        return self.audit_topic_arn or self.topic_arn

    @property
    def slack_webhook_ref(self) -> SecretRef | None:
        return SecretRef.model_validate(self.audit_slack_webhook) if self.audit_slack_webhook else None


@lru_cache(maxsize=1)
def get_audit_settings() -> AuditSettings:
    return AuditSettings()
