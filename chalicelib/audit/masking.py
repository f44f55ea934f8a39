"""Keep secrets out of everything the audit pipeline emits (findings, Slack, SNS, logs, CLI output).

CloudTrail never logs a secret access key, but request parameters, error messages and user agents are
attacker-controlled text, and AssumeRole responses carry session tokens. So every string that leaves the
pipeline goes through :func:`mask_text`, and every structure through :func:`mask_obj`.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "****"

# Runs of base64 characters are found with one linear scan; only runs of 40+ characters (rare outside
# credentials) are examined further. Nested quantifiers and lookaheads at every position cost ~10x more.
_RUN = re.compile(r"[A-Za-z0-9/+=]{40,}")
# A secret access key is exactly 40 characters of [A-Za-z0-9/+] (no padding).
_KEY40 = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")
# STS session tokens are hundreds of base64 characters; nothing legitimate in an event is that long.
_TOKEN_MIN = 100
_KEY_LEN = 40
_PREFIXED = re.compile(
    r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>|]+"  # Slack incoming webhook
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub tokens
)


def _looks_like_key(text: str) -> bool:
    # Upper, lower and a digit or / or +: keeps 40-letter words and hex digests readable.
    return (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() or c in "/+" for c in text)
    )


def _mask_key(match: re.Match[str]) -> str:
    return MASK if _looks_like_key(match.group(0)) else match.group(0)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if len(run) >= _TOKEN_MIN:
        return MASK
    return _KEY40.sub(_mask_key, run)


#: Keys whose values are secret whatever they look like.
SECRET_KEYS = frozenset(
    {
        "secretaccesskey", "sessiontoken", "password", "newpassword", "oldpassword", "secretstring",
        "secretbinary", "privatekey", "token", "webhookurl", "webhook_url", "authorization",
    }
)
#: Shorter strings cannot hold a secret key (40), a session token or a prefixed token (30+ characters).
MIN_LEN = 30


def _mask_prefixed(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("http"):
        return "/".join(text.split("/", 3)[:3]) + "/" + MASK
    return MASK


def mask_text(value: str) -> str:
    """``value`` with anything that looks like a secret replaced by ``****``."""
    if len(value) < MIN_LEN:
        return value
    # Cheap substring tests first: this runs on every string of every finding.
    if "hooks.slack" in value or "xox" in value or ("gh" in value and "_" in value):
        value = _PREFIXED.sub(_mask_prefixed, value)
    if len(value) >= _KEY_LEN and max(map(len, value.split())) >= _KEY_LEN:
        value = _RUN.sub(_mask_run, value)
    return value


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
