"""GraduateReport: the graduation succeeded; say so, with the number of access keys the user still holds.

Two ways here: the target graduated and other targets still hold the key (it stays Active for them), or
this was the last one and the key was retired, waited out its recovery window and was deleted. The message
(SNS and Slack, INFO) says "graduated <target>; <user> now holds N access keys", and at zero that the user
reached zero keys. A retried report does not announce twice (ledger outcome).
"""

from __future__ import annotations

from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.notify import publish
from chalicelib.workflow.graduate_state import GraduationState


def keys_phrase(keys_left: int) -> str:
    return f"{keys_left} access key" if keys_left == 1 else f"{keys_left} access keys"


def summary_line(user: str, target_id: str, keys_left: int) -> str:
    if keys_left == 0:
        return f"graduated {target_id}; {user} now holds 0 access keys: {user} reached zero keys"
    return f"graduated {target_id}; {user} now holds {keys_phrase(keys_left)}"


def run(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    state = GraduationState.model_validate(event)
    user, gid = state.user, state.rotation_id
    record = deps.ledger.rotation(user, gid) or {}
    left = keys.list_keys(user)
    line = summary_line(user, state.target_id, len(left))
    deps.ledger.update_rotation(user, gid, outcome="graduated", phase="done", keys_left=len(left),
                                completed_at=clock.iso(clock.now()))
    deps.ledger.release_lock(user, gid)
    if record.get("outcome") != "graduated":  # a retried report must not announce twice
        left_words = "zero keys left" if not left else f"{keys_phrase(len(left))} left"
        publish(deps.settings.topic_arn, f"Graduated {state.target_id} of {user}: {left_words}", {
            "kind": "graduated", "user": user, "graduation_id": gid, "target_id": state.target_id,
            "role_arn": state.role_arn, "graduated": line, "keys_left": len(left),
            "zero_keys": not left, "key_retired": state.old_key_id,
            "key_still_held_by": record.get("key_still_held_by") or [],
            "keys": {k.key_id: k.status for k in left}, "note": state.note, "execution_arn": state.execution_arn,
        }, "INFO")
    return state.out(keys_left=len(left))
