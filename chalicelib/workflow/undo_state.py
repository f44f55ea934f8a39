"""What travels through the undo state machine (``statemachine/undo.asl.json``): ids, never a secret.

An undo puts a user back on the key a rotation retired, inside that rotation's recovery window. It runs
under the user's lock with an id of its own, so its per-target results never mix with the rotation's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.deps import Deps
from chalicelib.errors import EscrowError, RotatorError
from chalicelib.keys import CURRENT, PREVIOUS, version_id
from chalicelib.targets.base import Credentials


class NothingToUndo(RotatorError):
    """No rotation of the user is in its recovery window (or it cannot be undone): nothing was changed."""


class OldKeyDeleted(RotatorError):
    """The key the rotation retired no longer exists: there is nothing to go back to."""


#: Refusals: raised by UndoPlan before it took the lock or changed anything (LOW, no ledger write).
UNDO_REFUSALS = frozenset({NothingToUndo.__name__, OldKeyDeleted.__name__, "RotationInProgress",
                           "InvalidExecutionInput"})
#: Target statuses after which a target may hold the key the undo pushed.
MAY_HOLD_PUSHED = frozenset({"pushing", "pushed", "verifying", "verified", "verification-failed"})


class UndoState(BaseModel):
    """The state after UndoPlan. Unknown keys (``error`` from a Catch, ...) pass through untouched."""

    model_config = ConfigDict(extra="allow")

    user: str
    undo_id: str
    #: The rotation being undone.
    rotation_id: str
    execution_arn: str = ""
    #: The key the rotation retired: re-activated and pushed back.
    old_key_id: str
    #: The key the rotation created: deactivated once every target verified the old one.
    new_key_id: str
    targets: list[str] = Field(default_factory=list)
    verify_timeout_seconds: int = 1800
    recovery_seconds: int = 0

    def out(self, **changes: Any) -> dict[str, Any]:
        return self.model_copy(update=changes).model_dump(mode="json")


def escrowed(deps: Deps, user: str, key_id: str) -> Credentials:
    """The escrowed secret of ``key_id`` (CURRENT or PREVIOUS), or EscrowError."""
    credentials = deps.escrow.current_for(user, key_id)
    if credentials is None:
        raise EscrowError(f"escrow of {user!r} holds no secret of key {key_id}")
    return credentials


def make_current_previous(deps: Deps, user: str, rotation_id: str) -> None:
    """Swap the escrow's labels back: CURRENT on the old key's version (PREVIOUS since the rotation
    promoted its own), PREVIOUS on the rotation's. A later rotation's rollback then restores the key the
    pipelines really hold. By labels alone (no secret is read); re-running is a no-op."""
    escrow = deps.escrow
    rotated = version_id(rotation_id)
    # Escrow's own label helpers (keys.py, which this change does not own): the same calls as promote().
    stages = escrow._stages(user)
    if CURRENT not in stages.get(rotated, []):
        return
    previous = next((v for v, s in stages.items() if PREVIOUS in s and v != rotated), None)
    if previous is None:
        raise EscrowError(f"escrow of {user!r} has no previous version to make current again")
    escrow._move(user, PREVIOUS, to=rotated, away_from=previous)
    escrow._move(user, CURRENT, to=previous, away_from=rotated)
