"""What travels through the graduation state machine (``statemachine/graduate.asl.json``): ids, never a secret.

One execution graduates one target of one user from the access key to OIDC federation::

    GraduatePlan ─▶ EnsureOidcProvider ─▶ EnsureRole ─▶ SwitchTarget ─▶ VerifyBuild (.waitForTaskToken)
      ─▶ GraduateRecord ─▶ Retire? ─ no ──────────────────────────────────────────────────────▶ GraduateReport ─▶ ✓
                                    └ yes ─▶ DrainPeriod ─▶ DrainCheck ─▶ GraduateRetireKey ─▶ RecoveryWindow
                                                                           ─▶ DeleteOldKey ─▶ GraduateReport ─▶ ✓
    refusal in GraduatePlan                          ─▶ GraduateAlert (LOW, nothing changed) ─▶ Fail
    failure from EnsureOidcProvider to GraduateRecord ─▶ GraduateRollback ─▶ GraduateAlert (HIGH) ─▶ Fail
    failure from DrainCheck on                       ─▶ GraduateAlert (HIGH; the target stays graduated, the
                                                        key stays Active and no target holds it) ─▶ Fail

The graduation id plays the rotation id's part (field ``rotation_id``): the shared VerifyBuild, DrainCheck
and DeleteOldKey tasks read it, and the per-target results live under it in the ledger like a rotation's
(record ``kind: graduation``). ``old_key_id`` is set only when this graduation retires the key.

Decisions: one execution per target (``graduate USER`` without a target starts them one after another),
because each target's switch is verified and reversible on its own and the user's lock serialises them;
the key is retired by the graduation of the user's last key-holding target, through the rotation's own
DrainCheck and DeleteOldKey; the IAM OIDC provider is shared by every target of an issuer and is never
removed (harmless without a role that trusts it); the role is deleted by a rollback only if this execution
created it (its ``ci-key-rotator:graduation`` tag).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.errors import RotatorError


class GraduationRefused(RotatorError):
    """The target cannot graduate now (blocked, already graduated, unknown): nothing was changed."""


class RoleNotOurs(RotatorError):
    """A role of that name exists and the rotator did not create it for this user and target: not touched."""


class NotFederated(RotatorError):
    """The verification build passed, but not through OIDC (it authenticated with an access key)."""


#: Refusals: raised by GraduatePlan before it took the lock or changed anything (LOW, no ledger write).
GRADUATE_REFUSALS = frozenset({GraduationRefused.__name__, "RotationInProgress", "InvalidExecutionInput"})
#: Target statuses after which the target may differ from its key setup (SwitchTarget wrote to it).
MAY_HAVE_SWITCHED = frozenset({"switching", "switched", "verifying", "verified", "verification-failed"})


class GraduationState(BaseModel):
    """The state after GraduatePlan. Unknown keys (``error`` from a Catch, ...) pass through untouched."""

    model_config = ConfigDict(extra="allow")

    user: str
    #: The graduation id (named as the shared tasks read it).
    rotation_id: str
    execution_arn: str = ""
    target_id: str
    provider: str
    #: The Active key the target holds until it graduates; its secret is what a rollback restores.
    key_id: str
    #: The CI variables that carry the key pair (deleted by SwitchTarget, restored by a rollback).
    key_variables: list[str] = Field(default_factory=list)
    issuer: str
    audience: str
    provider_arn: str
    role_name: str
    role_arn: str
    #: Set by GraduateRecord when no other target holds the key: this graduation retires it.
    retire: bool = False
    old_key_id: str | None = None
    keys_left: int | None = None
    note: str | None = None
    drain_seconds: int = 0
    recovery_seconds: int = 0
    verify_timeout_seconds: int = 1800

    def out(self, **changes: Any) -> dict[str, Any]:
        return self.model_copy(update=changes).model_dump(mode="json")


def account_of(execution_arn: str) -> tuple[str, str]:
    """(partition, account id) of an execution ARN: where the provider and the role live."""
    parts = execution_arn.split(":")
    if len(parts) < 5 or not parts[4].isdigit():
        raise GraduationRefused(f"cannot tell the account from the execution ARN {execution_arn!r}")
    return parts[1], parts[4]
