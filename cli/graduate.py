"""``graduate USER [TARGET] [--wait]``: move a target from the user's access key to OIDC federation.

What the graduation state machine would refuse (a blocked or graduated target, a user being rotated) is
refused here first: nothing starts, nothing pages. Without TARGET every graduable target of the user
graduates, one execution after the other (each waited for): each target's switch is verified and
reversible on its own, the user's lock lets only one run at a time, and the last one retires the key.
``plan`` shows, per target, whether it can graduate and what blocks it (``graduation_lines``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import follow_execution, require_settings
from cli.errors import Exit, OperatorError


def register(subparsers: Any) -> None:
    graduate = subparsers.add_parser(
        "graduate", help="move a target from the access key to OIDC federation (role ARN in, key out, verified)")
    graduate.add_argument("user")
    graduate.add_argument("target", nargs="?", help="a target id (default: every target that can graduate, "
                                                    "one after the other)")
    graduate.add_argument("--wait", action="store_true", help="follow it state by state until it ends")
    graduate.add_argument("--timeout", type=float, default=3600)
    graduate.add_argument("--note", help="why, kept in the ledger and the messages")
    graduate.set_defaults(func=graduate_user)


def graduation_lines(user: str, verdicts: list[dict[str, Any]]) -> list[str]:
    """``plan``'s per-target graduation verdicts, one line each (and one per blocker)."""
    lines = []
    for v in verdicts:
        if v["verdict"] == "graduated":
            lines.append(f"  graduation: {v['target_id']} graduated ({v.get('role_arn')}, {v.get('graduated_at')})")
        elif v["verdict"] == "can graduate":
            lines.append(f"  graduation: {v['target_id']} can graduate (role {v.get('role_name')}, "
                         f"sub {v.get('subject')}): ci-key-rotator graduate {user} {v['target_id']}")
        else:
            lines.append(f"  graduation: {v['target_id']} blocked")
            lines.extend(f"    blocked by: {why}" for why in v["blocked_by"])
    return lines


def graduate_user(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps
    from chalicelib.errors import RotatorError
    from chalicelib.graduation import target_verdicts
    from chalicelib.workflow.graduate_plan import choose
    from chalicelib.workflow.plan import NOTE_MAX

    require_settings("state_machine_arn", "table_name")
    deps = get_deps()
    deps.config.user(args.user)  # ConfigError naming the user before anything starts
    if args.note and len(args.note) > NOTE_MAX:
        raise OperatorError(f"--note has {len(args.note)} characters; at most {NOTE_MAX}", Exit.REFUSED)
    lock = deps.ledger.lock_holder(args.user)
    if lock:
        raise OperatorError(f"{args.user} is being rotated by {lock.get('rotation_id')} (since "
                            f"{lock.get('acquired_at')}); nothing was started", Exit.REFUSED)
    if args.target:
        targets = [args.target]
    else:
        targets = [v["target_id"] for v in target_verdicts(deps, args.user) if v["verdict"] == "can graduate"]
        if not targets:
            raise OperatorError(f"no target of {args.user} can graduate now (ci-key-rotator plan {args.user} says "
                                "why); nothing was started", Exit.REFUSED)
    for i, target in enumerate(targets):
        try:
            choose(deps, args.user, target)
        except RotatorError as exc:
            raise OperatorError(str(exc), Exit.REFUSED) from None
        gid, arn = start(deps, args.user, target, args.note)
        print(f"started: {arn} (graduating {target} of {args.user} to OIDC)", flush=True)
        if not args.wait and args.target:  # several targets run one after the other: each is waited for
            return 0
        code = follow(deps, args.user, gid, arn, args.timeout)
        if code != Exit.OK:
            if i + 1 < len(targets):
                print(f"not started: {', '.join(targets[i + 1:])} (fix the failure first)")
            return code
    return int(Exit.OK)


def start(deps: Any, user: str, target: str, note: str | None) -> tuple[str, str]:
    from chalicelib import clock
    from chalicelib.workflow.state import execution_name

    gid = f"grad-{target[:24]}-{clock.now():%Y%m%dT%H%M%S%f}"
    payload: dict[str, Any] = {"user": user, "target": target}
    if note:
        payload["note"] = note
    arn = deps.sfn.start_execution(stateMachineArn=deps.settings.graduate_machine_arn,
                                   name=execution_name(user, gid), input=json.dumps(payload))["executionArn"]
    return gid, str(arn)


def follow(deps: Any, user: str, gid: str, execution_arn: str, timeout: float) -> int:
    """Print each state as it is entered; 0 once the graduation succeeded, 1 if it failed or still runs."""
    def succeeded(record: dict[str, Any]) -> str:
        left = record.get("keys_left")
        zero = f"; {user} reached zero access keys" if left == 0 else ""
        return (f"graduated: {record.get('target_id')} assumes {record.get('role_arn')} through OIDC; "
                f"{user} now holds {left} access key(s){zero}")

    return follow_execution(deps, user, gid, execution_arn, timeout, succeeded)
