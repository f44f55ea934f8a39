"""What the rotator knows about one user, read from IAM, the ledger and the configuration — never written.

``status`` prints it, ``plan`` judges from it what a rotation would do now; both only read (IAM
ListAccessKeys, DynamoDB Query/GetItem, Step Functions Describe/GetExecutionHistory), so running them
changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib import clock, keys
from chalicelib.deps import Deps
from chalicelib.durations import human


def _age_days(created: datetime, now: datetime) -> float:
    return round((now - created).total_seconds() / 86400, 1)


def current_state(deps: Deps, execution_arn: str) -> str | None:
    """The state an execution is in now (the newest state entered), or None."""
    events = deps.sfn.get_execution_history(executionArn=execution_arn, reverseOrder=True,
                                            maxResults=50)["events"]
    for event in events:
        if event["type"].endswith("StateEntered"):
            return str(event["stateEnteredEventDetails"]["name"])
    return None


def user_view(deps: Deps, user: str, now: datetime | None = None) -> dict[str, Any]:
    """Keys, holdings, pause, lock, recovery windows, last rotation and failure, next due date."""
    config = deps.config
    user_config = config.user(user)  # ConfigError for a user the configuration does not manage
    now = now or clock.now()
    rotate_after = config.timings(user).rotate_after
    present = keys.list_keys(user)
    known = deps.ledger.keys(user)
    rotations = deps.ledger.rotations(user)
    lock = deps.ledger.lock_holder(user)
    pause = deps.ledger.pause(user)
    active = [k for k in present if k.status == "Active"]
    # A rotation is live once its old key is Inactive (phase "retired"), days before it "succeeds".
    ended = [r for r in rotations if r.get("outcome") in ("succeeded", "failed", "abandoned")
             or (not r.get("outcome") and r.get("phase") == "retired")]
    last = ended[-1] if ended else None
    failure = next((r for r in reversed(rotations) if r.get("outcome") == "failed"), None)
    recovery = []
    for key in (k for k in present if k.status != "Active"):
        record = known.get(key.key_id) or {}
        if record.get("status") == "retired" and record.get("recovery_until"):
            recovery.append({"key_id": key.key_id, "rotation_id": record.get("retired_by"),
                             "until": record["recovery_until"],
                             "open": clock.parse_iso(record["recovery_until"]) > now})
    in_progress = None
    if lock:
        in_progress = {"rotation_id": lock["rotation_id"], "since": lock["acquired_at"],
                       "state": _safe_state(deps, lock.get("execution_arn"))}
    oldest = min((k.created for k in active), default=None)
    return {
        "user": user,
        "keys": [{"key_id": k.key_id, "status": k.status, "age_days": _age_days(k.created, now),
                  "known": k.key_id in known} for k in present],
        "holdings": deps.ledger.holdings(user),
        "graduated": {tid: {"role_arn": g.get("role_arn"), "graduated_at": g.get("graduated_at"),
                            "graduation_id": g.get("graduation_id")}
                      for tid, g in deps.ledger.graduations(user).items()},
        "targets": [t.id for t in user_config.targets],
        "paused": ({"by": pause.get("paused_by"), "since": pause.get("paused_at"), "note": pause.get("note")}
                   if pause else None),
        "paused_in_config": user_config.paused,
        "adopt_existing_key": user_config.adopt_existing_key,
        "rotate_after": human(int(rotate_after.total_seconds())),
        "next_due": clock.iso(oldest + rotate_after) if oldest else None,
        "due": not active or any(now - k.created >= rotate_after for k in active),
        "in_progress": in_progress,
        "recovery": recovery,
        "last_rotation": ({**{k: last.get(k) for k in ("rotation_id", "reason", "error", "old_key_id",
                                                       "new_key_id")},
                           "outcome": last.get("outcome") or "live",
                           "completed_at": last.get("completed_at") or last.get("deactivated_at")}
                          if last else None),
        "last_failure": ({k: failure.get(k) for k in ("rotation_id", "reason", "error", "cause", "completed_at")}
                         if failure else None),
        "pending_exposure": _pending_exposure(rotations, active),
    }


def _safe_state(deps: Deps, execution_arn: str | None) -> str | None:
    if not execution_arn:
        return None
    try:
        return current_state(deps, execution_arn)
    except Exception:  # noqa: BLE001 - the state is a nicety; status must still print
        return None


def _pending_exposure(rotations: list[dict[str, Any]], active: list[Any]) -> dict[str, Any] | None:
    """The newest exposure rotation that did not succeed while its compromised key is still Active."""
    active_ids = {k.key_id for k in active}
    for rotation in reversed(rotations):
        if rotation.get("reason") != "exposure":
            continue
        compromised = (rotation.get("plan") or {}).get("compromised_key_id") or rotation.get("old_key_id")
        if rotation.get("outcome") != "succeeded" and compromised in active_ids:
            return {"rotation_id": rotation["rotation_id"], "key_id": compromised,
                    "outcome": rotation.get("outcome") or "in progress"}
        return None
    return None


def blockers(view: dict[str, Any]) -> list[str]:
    """Why a (non-exposure) rotation started now would be refused, in the words Plan would use."""
    found = []
    user = view["user"]
    if view["paused"]:
        found.append(f"paused since {view['paused']['since']} by {view['paused']['by']}"
                     + (f" ({view['paused']['note']})" if view["paused"].get("note") else "")
                     + f": ci-key-rotator unpause {user}")
    if view["paused_in_config"]:
        found.append("paused: true in the configuration")
    active = [k for k in view["keys"] if k["status"] == "Active"]
    if len(active) > 1:
        found.append(f"two Active keys ({', '.join(k['key_id'] for k in active)}): retire the one no pipeline uses")
    if view["in_progress"]:
        found.append(f"lock held by rotation {view['in_progress']['rotation_id']} since "
                     f"{view['in_progress']['since']}")
    for window in view["recovery"]:
        if window["open"]:
            found.append(f"recovery window of {window['key_id']} open until {window['until']}")
    known_inactive = {w["key_id"] for w in view["recovery"]}
    for key in view["keys"]:
        if key["status"] != "Active" and key["key_id"] not in known_inactive:
            found.append(f"Inactive key {key['key_id']} the rotator did not retire")
    if len(active) == 1 and not active[0]["known"] and not view["adopt_existing_key"]:
        found.append(f"Active key {active[0]['key_id']} was not created by the rotator and adopt_existing_key "
                     "is off")
    return found


def reasons(view: dict[str, Any]) -> list[str]:
    """Why a rotation is (or is not) due."""
    active = [k for k in view["keys"] if k["status"] == "Active"]
    found = []
    if view["pending_exposure"]:
        exposure = view["pending_exposure"]
        found.append(f"exposure pending: key {exposure['key_id']} was reported exposed (rotation "
                     f"{exposure['rotation_id']} {exposure['outcome']}); an exposure rotation is not blocked "
                     "by a pause")
    if not active:
        found.append("no Active key: a first key would be created")
    for key in active:
        state = "older than" if view["due"] else "younger than"
        found.append(f"key {key['key_id']} is {key['age_days']} d old, {state} rotate_after "
                     f"{view['rotate_after']}" + ("" if view["due"] else f" (due {view['next_due']})"))
        if not key["known"]:
            found.append(f"key {key['key_id']} was not created by the rotator: it would be adopted")
    return found
