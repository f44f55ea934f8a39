"""``undo USER [--wait]``: put a user back on the key its last rotation retired, inside the recovery window.

What the undo state machine would refuse (no rotation in its recovery window, the old key deleted, a
rotation in progress) is refused here first: nothing starts, nothing pages.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import follow_execution, require_settings
from cli.errors import Exit, OperatorError


def register(subparsers: Any) -> None:
    undo = subparsers.add_parser(
        "undo", help="during the recovery window: the old key back on every target, verified, the new key off")
    undo.add_argument("user")
    undo.add_argument("--wait", action="store_true", help="follow it state by state until it ends")
    undo.add_argument("--timeout", type=float, default=3600)
    undo.set_defaults(func=undo_user)


def undo_user(args: argparse.Namespace) -> int:
    from chalicelib import clock
    from chalicelib.deps import get_deps
    from chalicelib.errors import RotatorError
    from chalicelib.workflow.state import execution_name
    from chalicelib.workflow.undo_plan import undoable

    require_settings("state_machine_arn", "table_name")
    deps = get_deps()
    deps.config.user(args.user)  # ConfigError naming the user before anything starts
    lock = deps.ledger.lock_holder(args.user)
    if lock:
        raise OperatorError(f"{args.user} is being rotated by {lock.get('rotation_id')} (since "
                            f"{lock.get('acquired_at')}); nothing was started", Exit.REFUSED)
    try:
        rotation = undoable(deps, args.user)
    except RotatorError as exc:
        raise OperatorError(str(exc), Exit.REFUSED) from None
    undo_id = f"undo-{clock.now():%Y%m%dT%H%M%S}"
    arn = deps.settings.undo_machine_arn
    started = deps.sfn.start_execution(stateMachineArn=arn, name=execution_name(args.user, undo_id),
                                       input=json.dumps({"user": args.user}))["executionArn"]
    print(f"started: {started} (undoing rotation {rotation['rotation_id']}: {rotation['old_key_id']} back, "
          f"{rotation['new_key_id']} off)", flush=True)
    if not args.wait:
        return 0
    return follow(deps, args.user, undo_id, started, args.timeout)


def follow(deps: Any, user: str, undo_id: str, execution_arn: str, timeout: float) -> int:
    """Print each state as it is entered; 0 once the undo succeeded, 1 if it failed or is still running."""
    return follow_execution(deps, user, undo_id, execution_arn, timeout, lambda record: (
        f"undone: {record.get('restore_key_id')} is Active and verified in every target "
        f"({', '.join(sorted(record.get('targets', {}))) or 'no target'}); {record.get('replace_key_id')} is Inactive"))
