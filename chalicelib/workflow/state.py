"""The data that travels through the state machine: ids and timings, never a secret."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Literal["scheduled", "manual", "exposure"]
#: Kept as they are: characters StartExecution accepts and CloudWatch Logs can name a stream after.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=@-]")
#: StartExecution: a name has 1-80 characters.
NAME_MAX = 80
#: 16 hex digits (64 bits) of SHA-256: a collision among one account's rotations is not a practical risk.
_DIGEST_CHARS = 16


def execution_name(user: str, rotation_id: str) -> str:
    """``<user>-<rotation id>`` when it is a valid name as it is; otherwise a readable prefix of it and a
    digest of the whole, so two rotations never share a name (truncation made long user names collide,
    and the later rotation was skipped as a "duplicate") while a duplicate trigger still maps to the same
    name and Step Functions refuses the copy."""
    full = f"{user}-{rotation_id}"
    safe = _NAME_UNSAFE.sub("_", full)
    if safe == full and len(full) <= NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{safe[:NAME_MAX - _DIGEST_CHARS - 1]}-{digest}"


def rotation_id_from_execution(user: str, name: str) -> str:
    """The rotation id of an execution started without one (from the console): the name after
    ``<user>-``, or the whole name."""
    prefix = _NAME_UNSAFE.sub("_", f"{user}-")
    return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else name


class RotationState(BaseModel):
    """The state after Plan. Unknown keys (``error`` from a Catch, ...) pass through untouched."""

    model_config = ConfigDict(extra="allow")

    user: str
    rotation_id: str
    execution_arn: str = ""
    reason: Reason = "manual"
    targets: list[str] = Field(default_factory=list)
    old_key_id: str | None = None
    new_key_id: str | None = None
    adoption: bool = False
    emergency: bool = False
    compromised_key_id: str | None = None
    drain_seconds: int = 0
    recovery_seconds: int = 0
    verify_timeout_seconds: int = 1800

    def out(self, **changes: Any) -> dict[str, Any]:
        return self.model_copy(update=changes).model_dump(mode="json")


class TargetTask(BaseModel):
    """One Map iteration: a target of a rotation."""

    model_config = ConfigDict(extra="ignore")

    user: str
    rotation_id: str
    target_id: str
    new_key_id: str | None = None
    task_token: str | None = None
    verify_timeout_seconds: int = 1800
