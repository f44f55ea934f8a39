"""The data that travels through the state machine: ids and timings, never a secret."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Literal["scheduled", "manual", "exposure"]
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=@-]")


def execution_name(user: str, rotation_id: str) -> str:
    """``<user>-<rotation id>``: a duplicate trigger reuses it and Step Functions refuses the copy."""
    return _NAME_UNSAFE.sub("_", f"{user}-{rotation_id}")[:80]


def rotation_id_from_execution(user: str, name: str) -> str:
    prefix = execution_name(user, "")
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
