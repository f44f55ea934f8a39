"""``status [USER...]`` and ``history USER``: what the rotator knows, read-only."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import require_settings


def register(subparsers: Any) -> None:
    status = subparsers.add_parser("status", help="keys, targets, rotations in progress or in recovery, next due")
    status.add_argument("user", nargs="*")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=show_status)

    history = subparsers.add_parser("history", help="every rotation of one user, oldest first")
    history.add_argument("user")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=show_history)


def _users(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from chalicelib.deps import get_deps

    require_settings("table_name")
    deps = get_deps()
    users = args.user or [u.name for u in deps.config.users]
    for user in users:
        deps.config.user(user)  # every unknown user refused before AWS is asked anything
    return deps, users


def show_status(args: argparse.Namespace) -> int:
    from cli.view import user_view

    deps, users = _users(args)
    views = [user_view(deps, u) for u in users]
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    for view in views:
        print("\n".join(status_lines(view)))
    return 0


def status_lines(view: dict[str, Any]) -> list[str]:
    active = [k for k in view["keys"] if k["status"] == "Active"]
    key = ", ".join(f"{k['key_id']} ({k['age_days']} d)" for k in active) or "no Active key"
    last = view["last_rotation"]
    last_text = f"{last['outcome']} {last['completed_at']}" if last else "never rotated"
    lines = [f"{view['user']}: {key}; last rotation {last_text}"]
    holdings, graduated = view["holdings"], view.get("graduated") or {}
    lines.append("  targets: " + ", ".join(
        f"{t} graduated (OIDC, {graduated[t]['role_arn']})" if t in graduated
        else f"{t} holds {holdings.get(t) or 'a key the rotator did not put there'}" for t in view["targets"]))
    if graduated:
        keys_held = len(view["keys"])
        lines.append(f"  graduated to OIDC: {len(graduated)} of {len(view['targets'])} targets; {keys_held} access "
                     f"key(s) left" + (" (zero keys)" if not keys_held else ""))
    if view["in_progress"]:
        running = view["in_progress"]
        where = f", in {running['state']}" if running.get("state") else ""
        lines.append(f"  rotating now: {running['rotation_id']} since {running['since']}{where}")
    for window in view["recovery"]:
        if window["open"]:
            lines.append(f"  in its recovery window until {window['until']}: old key {window['key_id']} Inactive "
                         f"(rotation {window['rotation_id']}), deleted then")
    if view["paused"] or view["paused_in_config"]:
        how = (f"by {view['paused']['by']} since {view['paused']['since']}"
               + (f": {view['paused']['note']}" if view["paused"].get("note") else "")
               if view["paused"] else "in the configuration")
        lines.append(f"  paused {how}")
        lines.append("  next due: not while paused")
    elif view["targets"] and set(view["targets"]) <= set(graduated):
        lines.append("  next due: never (every target graduated to OIDC: no key to rotate)")
    elif view["next_due"]:
        lines.append(f"  next due: {view['next_due']} (rotate_after {view['rotate_after']})")
    else:
        lines.append("  next due: now (no Active key)")
    failure = view["last_failure"]
    if failure:
        lines.append(f"  last failure: {failure['rotation_id']} {failure.get('completed_at')} {failure['error']}: "
                     f"{failure.get('cause') or '(no cause recorded)'}")
    return lines


def show_history(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps

    require_settings("table_name")
    deps = get_deps()
    deps.config.user(args.user)
    rows = [{"rotation_id": r["rotation_id"], "reason": r.get("reason"), "note": r.get("note"),
             "started_at": r.get("started_at"), "completed_at": r.get("completed_at"),
             "outcome": r.get("outcome") or _unfinished(r), "old_key_id": r.get("old_key_id"),
             "new_key_id": r.get("new_key_id"), "error": r.get("error"), "cause": r.get("cause"),
             "targets": {t: {"verified": v.get("verified"), "pushed_key_id": v.get("pushed_key_id")}
                         for t, v in r.get("targets", {}).items()}}
            for r in deps.ledger.history(args.user)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.user}: never rotated")
    for row in rows:
        error = f"  {row['error']}: {row['cause'] or ''}".rstrip(": ") if row["error"] else ""
        note = f"  note: {row['note']}" if row["note"] else ""
        print(f"{row['rotation_id']}  {row['reason'] or '?'}  started {row['started_at'] or '?'}  {row['outcome']}  "
              f"{row['old_key_id'] or 'no key'} -> {row['new_key_id'] or '-'}{error}{note}")
    return 0


def _unfinished(rotation: dict[str, Any]) -> str:
    return "in recovery window" if rotation.get("phase") == "retired" else "in progress"
