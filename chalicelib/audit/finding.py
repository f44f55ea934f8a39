"""The one finding model every detection produces and every notifier consumes.

Every string is masked on the way in (see ``masking.py``), so nothing downstream (Slack, SNS, logs, the
CLI, DynamoDB) can receive a secret from a finding, whatever a detection put into it.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, model_validator

from chalicelib.audit.masking import MIN_LEN, mask_text


class Severity(enum.StrEnum):
    INFO = "INFO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Severity | str) -> bool:
        return _RANK[self] >= _RANK[Severity(other)]


_RANK = {severity: index for index, severity in enumerate(Severity)}


class Category(enum.StrEnum):
    KEY_LIFECYCLE = "key-lifecycle"
    ROOT = "root"
    CONSOLE_LOGIN = "console-login"
    UNAUTHORIZED_CALL = "unauthorized-call"
    IAM_POLICY = "iam-policy"
    IAM_IDENTITY = "iam-identity"
    CLOUDTRAIL = "cloudtrail"
    KMS = "kms"
    S3_POLICY = "s3-policy"
    CONFIG = "config"
    NETWORK = "network"
    ORGANIZATIONS = "organizations"
    STS = "sts"
    EXPOSURE = "exposure"
    SELF_PROTECTION = "self-protection"
    MANAGED_USER = "managed-user"
    DEFENSE_EVASION = "defense-evasion"
    PERSISTENCE = "persistence"
    EXFILTRATION = "exfiltration"
    ALLOW_LIST = "allow-list"


#: Longest string a finding keeps; Slack and SNS truncate further to their own limits.
MAX_TEXT = 4000
MAX_RESOURCES = 50


class Finding(BaseModel):
    """What was detected, about which event, and how to find it in the console."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detection: str
    category: Category
    severity: Severity
    title: str
    principal: str
    #: ``<service>:<eventName>``, e.g. ``iam:CreateAccessKey``; ``health:<eventTypeCode>`` for Health.
    action: str
    summary: str
    event_id: str | None = None
    event_time: datetime | None = None
    account: str | None = None
    region: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    #: CloudTrail errorCode when the call failed (an *attempt*).
    error: str | None = None
    resources: list[str] = []
    dedup_key: str
    console_url: str | None = None
    #: How many times this finding was seen within the dedup window (1 = first).
    count: int = 1

    @model_validator(mode="before")
    @classmethod
    def _mask(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        clean = dict(data)
        for name in _FREE_TEXT:
            value = clean.get(name)
            # Most fields are short ids; only strings long enough to hide a secret are scanned.
            if value.__class__ is str and len(value) >= MIN_SECRET_LEN:
                clean[name] = _clean(value)
        resources = clean.get("resources")
        if isinstance(resources, (list, tuple)):
            clean["resources"] = [
                _clean(v) if len(v) >= MIN_SECRET_LEN else v
                for v in (r if isinstance(r, str) else str(r) for r in resources[:MAX_RESOURCES])
            ]
        return clean

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Fields that can carry event text (attacker-controlled) and so must be masked. The others are built by
# the pipeline from ids and hashes (detection, dedup_key, console_url) or are not strings.
_FREE_TEXT = ("title", "principal", "action", "summary", "event_id", "account", "region", "source_ip",
              "user_agent", "error")
# Read the threshold once: below it mask_text returns its input unchanged anyway.
MIN_SECRET_LEN = MIN_LEN


# Principals, user agents and titles repeat across events; masking each distinct string once is the
# cheapest way to mask everything.
@lru_cache(maxsize=4096)
def _clean(value: str) -> str:
    value = mask_text(value)
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


_URL_SAFE = re.compile(r"[A-Za-z0-9._-]+\Z")


def _q(value: str) -> str:
    return value if _URL_SAFE.match(value) else quote(value, safe="")


def cloudtrail_console_url(event_id: str | None, region: str | None) -> str | None:
    """CloudTrail Event history link; it resolves only in the account that logged the event."""
    if not event_id:
        return None
    region = _q(region or "us-east-1")
    return f"https://{region}.console.aws.amazon.com/cloudtrailv2/home?region={region}#/events/{_q(event_id)}"


def health_console_url(event_arn: str | None) -> str:
    base = "https://health.aws.amazon.com/health/home#/account/dashboard/open-issues"
    return f"{base}?eventID={quote(event_arn, safe='')}" if event_arn else base
