"""Keep secrets out of everything the audit pipeline emits (findings, Slack, SNS, logs, CLI output).

CloudTrail never logs a secret access key, but request parameters, error messages and user agents are
attacker-controlled text, and AssumeRole responses carry session tokens. So every string that leaves the
pipeline goes through :func:`mask_text`, and every structure through :func:`mask_obj`.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "****"

# A secret access key is exactly 40 base64 characters; demanding upper, lower and a digit or / or + keeps
# ordinary 40-character words and hex digests from being mangled.
_SECRET_KEY = (
    r"(?<![A-Za-z0-9/+=])"
    r"(?=[A-Za-z0-9/+=]{0,39}[A-Z])(?=[A-Za-z0-9/+=]{0,39}[a-z])(?=[A-Za-z0-9/+=]{0,39}[0-9/+])"
    r"[A-Za-z0-9/+=]{40}"
    r"(?![A-Za-z0-9/+=])"
)
# STS session tokens are hundreds of base64 characters; nothing legitimate in an event is that long.
_SESSION_TOKEN = r"[A-Za-z0-9/+=]{100,}"
_SLACK_WEBHOOK = r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>|]+"
_SLACK_TOKEN = r"xox[abposr]-[A-Za-z0-9-]{10,}"
_GITHUB_TOKEN = r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"

_PATTERN = re.compile("|".join((_SLACK_WEBHOOK, _SLACK_TOKEN, _GITHUB_TOKEN, _SESSION_TOKEN, _SECRET_KEY)))

#: Keys whose values are secret whatever they look like.
SECRET_KEYS = frozenset(
    {
        "secretaccesskey", "sessiontoken", "password", "newpassword", "oldpassword", "secretstring",
        "secretbinary", "privatekey", "token", "webhookurl", "webhook_url", "authorization",
    }
)
# Shorter strings cannot hold any of the patterns above (the shortest is the 40-char secret key).
_MIN_LEN = 40


def _replace(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("http"):
        return "/".join(text.split("/", 3)[:3]) + "/" + MASK
    return MASK


def mask_text(value: str) -> str:
    """``value`` with anything that looks like a secret replaced by ``****``."""
    if len(value) < _MIN_LEN:
        return value
    return _PATTERN.sub(_replace, value)


def mask_obj(value: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like structure with secret-looking strings and secret-named keys masked."""
    if isinstance(value, str):
        return mask_text(value)
    if _depth > 20:
        return MASK
    if isinstance(value, dict):
        return {
            key: (MASK if isinstance(key, str) and key.lower() in SECRET_KEYS and value[key] not in (None, "")
                  else mask_obj(value[key], _depth + 1))
            for key in value
        }
    if isinstance(value, (list, tuple)):
        return [mask_obj(item, _depth + 1) for item in value]
    return value


def looks_secret(value: str) -> bool:
    return mask_text(value) != value
