"""``validate-config``, ``rotate USER`` and ``status``: the same boto3 code against AWS or the local runtime.

Which AWS is used comes from the environment (credentials, ``AWS_ENDPOINT_URL`` for the local runtime)
and the ``ROTATOR_*`` settings; nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chalicelib import clock, keys
from chalicelib.config import load_config, timing_seconds
from chalicelib.durations import human
from cli.errors import Exit, OperatorError


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser("validate-config", help="check a rotation configuration file")
    validate.add_argument("path", nargs="?", help="default: $ROTATOR_CONFIG_PATH")
    validate.set_defaults(func=validate_config)

    rotate = subparsers.add_parser("rotate", help="start a rotation of one CI user now")
    rotate.add_argument("user")
    rotate.add_argument("--wait", action="store_true", help="wait for the execution to finish")
    rotate.add_argument("--timeout", type=float, default=3600)
    rotate.add_argument("--resume", metavar="ROTATION_ID",
                        help="continue a rotation that failed after verification (see its alert)")
    rotate.set_defaults(func=rotate_user)

    status = subparsers.add_parser("status", help="keys, last rotation and rotations in progress")
    status.add_argument("user", nargs="*")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=show_status)


def validate_config(args: argparse.Namespace) -> int:
    from chalicelib.settings import get_settings

    path = args.path or get_settings().config_path
    config = load_config(path)
    for user in config.users:
        timing = {name: human(value) for name, value in timing_seconds(config.timings(user.name)).items()}
        targets = ", ".join(f"{t.id} ({t.provider})" for t in user.targets)
        print(f"{user.name}: rotate after {timing['rotate_after']}, drain {timing['drain_period']}, verify timeout "
              f"{timing['verify_timeout']}, recovery window {timing['recovery_window']}; targets: {targets}")
    print(f"{path}: OK, {len(config.users)} user(s)")
    return 0


def rotate_user(args: argparse.Namespace) -> int:
    import time

    from chalicelib.deps import get_deps
    from chalicelib.scheduler import start_rotation

    require_settings("state_machine_arn", "table_name")
    deps = get_deps()
    deps.config.user(args.user)  # ConfigError naming the user before anything starts
    started = start_rotation(deps, args.user, "manual", rotation_id=args.resume, resume=bool(args.resume))
    print(("already running: " if started.duplicate else "started: ") + started.execution_arn)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        status = deps.sfn.describe_execution(executionArn=started.execution_arn)["status"]
        if status != "RUNNING":
            print(status)
            return 0 if status == "SUCCEEDED" else 1
        time.sleep(1)
    print("still RUNNING", file=sys.stderr)
    return 1


def require_settings(*names: str) -> None:
    """The region and the ROTATOR_* settings a command needs, or one line saying which to export."""
    import boto3

    from chalicelib.settings import Settings, get_settings

    if boto3.session.Session().region_name is None:
        raise OperatorError("no AWS region: export AWS_REGION (the stage's region, us-east-1 for the audit)",
                            Exit.AWS_SETUP)
    settings = get_settings()
    missing = [f"ROTATOR_{n.upper()}" for n in names
               if getattr(settings, n) in ("", None) or getattr(settings, n) == Settings.model_fields[n].default]
    if missing:
        raise OperatorError(f"{', '.join(missing)} not set: export the stage's settings (README: Operator CLI)",
                            Exit.SETTINGS)


def user_status(user: str) -> dict[str, Any]:
    from chalicelib.deps import get_deps

    deps = get_deps()
    deps.config.user(user)  # ConfigError for a user the configuration does not manage
    now = clock.now()
    present = keys.list_keys(user)
    rotations = deps.ledger.rotations(user)
    last = next((r for r in reversed(rotations) if r.get("outcome")), None)
    lock = deps.ledger.lock_holder(user)
    return {
        "user": user,
        "keys": [{"key_id": k.key_id, "status": k.status, "age_days": round((now - k.created).total_seconds()
                                                                             / 86400, 1)} for k in present],
        "last_rotation": {k: last.get(k) for k in ("rotation_id", "outcome", "error", "completed_at",
                                                    "new_key_id")} if last else None,
        "in_progress": {"rotation_id": lock["rotation_id"], "since": lock["acquired_at"]} if lock else None,
    }


def show_status(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps

    require_settings("table_name")
    users = args.user or [u.name for u in get_deps().config.users]
    statuses = [user_status(u) for u in users]
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    for s in statuses:
        active = [k for k in s["keys"] if k["status"] == "Active"]
        key = ", ".join(f"{k['key_id']} ({k['age_days']} d)" for k in active) or "no Active key"
        last = s["last_rotation"]
        last_text = f"{last['outcome']} {last['completed_at']}" if last else "never rotated"
        running = f"; rotating now ({s['in_progress']['rotation_id']})" if s["in_progress"] else ""
        print(f"{s['user']}: {key}; last rotation {last_text}{running}")
    return 0
