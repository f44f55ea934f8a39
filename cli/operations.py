"""``pause USER``, ``unpause USER`` and ``plan [USER...]`` (a dry run: it only reads)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import require_settings


def register(subparsers: Any) -> None:
    pause = subparsers.add_parser("pause", help="stop scheduled and console rotations of a user (not exposure)")
    pause.add_argument("user")
    pause.add_argument("--note", help="why, shown by status, plan and the refusal alert")
    pause.set_defaults(func=pause_user)

    unpause = subparsers.add_parser("unpause", help="let a paused user rotate again")
    unpause.add_argument("user")
    unpause.set_defaults(func=unpause_user)

    plan = subparsers.add_parser("plan", help="dry run: what would rotate now, why, and what would block it; "
                                              "which targets can graduate to OIDC")
    plan.add_argument("user", nargs="*")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=plan_users)


def _operator(deps: Any) -> str:
    """Who paused: the caller's AWS identity, which CloudTrail names for the same write."""
    from chalicelib.aws import client

    return str(client("sts").get_caller_identity()["Arn"])


def pause_user(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps
    from chalicelib.workflow.plan import NOTE_MAX
    from cli.errors import Exit, OperatorError

    require_settings("table_name")
    deps = get_deps()
    deps.config.user(args.user)
    if args.note and len(args.note) > NOTE_MAX:
        raise OperatorError(f"--note has {len(args.note)} characters; at most {NOTE_MAX}", Exit.REFUSED)
    deps.ledger.set_pause(args.user, _operator(deps), args.note)
    lock = deps.ledger.lock_holder(args.user)
    running = f"; rotation {lock['rotation_id']} in progress goes on to its end" if lock else ""
    print(f"{args.user}: paused (no scheduled or console rotation; an exposure rotation still runs){running}. "
          f"Undo with: ci-key-rotator unpause {args.user}")
    return 0


def unpause_user(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps

    require_settings("table_name")
    deps = get_deps()
    user = deps.config.user(args.user)
    was = deps.ledger.clear_pause(args.user)
    print(f"{args.user}: " + ("unpaused" if was else "was not paused")
          + ("; still paused by paused: true in the configuration" if user.paused else ""))
    return 0


def plan_users(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps
    from chalicelib.graduation import target_verdicts
    from cli.graduate import graduation_lines
    from cli.view import blockers, reasons, user_view

    require_settings("table_name")
    deps = get_deps()
    users = args.user or [u.name for u in deps.config.users]
    for name in users:
        deps.config.user(name)
    verdicts = []
    for name in users:
        view = user_view(deps, name)
        blocked = blockers(view)
        due = view["due"] or bool(view["pending_exposure"])
        verdicts.append({"user": name, "would_rotate": due and not blocked, "due": due, "why": reasons(view),
                         "blocked_by": blocked, "graduation": target_verdicts(deps, name)})
    if args.json:
        print(json.dumps(verdicts, indent=2))
        return 0
    for verdict in verdicts:
        if verdict["would_rotate"]:
            head = "would rotate"
        elif verdict["due"]:
            head = "due but blocked"
        else:
            head = "not due"
        print(f"{verdict['user']}: {head}")
        for why in verdict["why"]:
            print(f"  why: {why}")
        for block in verdict["blocked_by"]:
            print(f"  blocked by: {block}")
        for line in graduation_lines(verdict["user"], verdict["graduation"]):
            print(line)
    print("(dry run: nothing was changed)")
    return 0
