"""``validate-config`` and ``rotate USER``: the same boto3 code against AWS or the local runtime.

``rotate --wait`` follows the execution state by state and returns when the rotation is *live*: every
target verified the new key and the old key is Inactive. The old key is deleted after the recovery
window (24 h by default); waiting for that would make a good rotation look stuck for a day.

Which AWS is used comes from the environment (credentials, ``AWS_ENDPOINT_URL`` for the local runtime)
and the ``ROTATOR_*`` settings; nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from chalicelib.config import load_config, timing_seconds
from chalicelib.durations import human
from cli.common import require_settings
from cli.errors import Exit, OperatorError

#: The state after which the old key is Inactive: from here on the rotation is live.
LIVE_AFTER = "DeactivateOldKey"
_POLL_SECONDS = 0.5


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser("validate-config", help="check a rotation configuration file")
    validate.add_argument("path", nargs="?", help="default: $ROTATOR_CONFIG_PATH")
    validate.set_defaults(func=validate_config)

    rotate = subparsers.add_parser("rotate", help="start a rotation of one CI user now")
    rotate.add_argument("user")
    rotate.add_argument("--wait", action="store_true",
                        help="follow it state by state until the new key is live (the old key Inactive)")
    rotate.add_argument("--timeout", type=float, default=3600)
    rotate.add_argument("--resume", metavar="ROTATION_ID",
                        help="continue a rotation that failed after verification (see its alert)")
    rotate.add_argument("--note", help="why, in your words: kept with the rotation and shown in its alerts")
    rotate.set_defaults(func=rotate_user)


def validate_config(args: argparse.Namespace) -> int:
    from chalicelib.settings import get_settings

    path = args.path or get_settings().config_path
    config = load_config(path)
    for user in config.users:
        timing = {name: human(value) for name, value in timing_seconds(config.timings(user.name)).items()}
        targets = ", ".join(f"{t.id} ({t.provider})" for t in user.targets)
        paused = "; PAUSED" if user.paused else ""
        print(f"{user.name}: rotate after {timing['rotate_after']}, drain {timing['drain_period']}, verify timeout "
              f"{timing['verify_timeout']}, recovery window {timing['recovery_window']}; targets: {targets}{paused}")
    print(f"{path}: OK, {len(config.users)} user(s)")
    return 0


def check_request(deps: Any, user: str, resume: str | None, note: str | None) -> None:
    """Everything Plan would refuse, refused here first: nothing starts, nothing pages."""
    from chalicelib.workflow.plan import NOTE_MAX, ResumeRefused, _check_resumable, _running

    user_config = deps.config.user(user)  # ConfigError naming the user before anything starts
    if note is not None and len(note) > NOTE_MAX:
        raise OperatorError(f"--note has {len(note)} characters; at most {NOTE_MAX}", Exit.REFUSED)
    pause = deps.ledger.pause(user)
    if pause:
        raise OperatorError(f"{user} is paused since {pause.get('paused_at')} by {pause.get('paused_by')}: "
                            f"run ci-key-rotator unpause {user} first", Exit.REFUSED)
    if user_config.paused:
        raise OperatorError(f"{user} is paused in the configuration (paused: true): remove it first", Exit.REFUSED)
    if resume is None:
        return
    rotation = deps.ledger.rotation(user, resume)
    if not rotation or not rotation.get("plan"):
        raise OperatorError(f"{user} has no rotation {resume!r}: ci-key-rotator history {user} lists its "
                            "rotations; nothing was started", Exit.REFUSED)
    try:
        _check_resumable(rotation)
    except ResumeRefused as exc:
        raise OperatorError(f"{exc}; nothing was started", Exit.REFUSED) from None
    if _running(deps, rotation.get("execution_arn")):
        raise OperatorError(f"rotation {resume} of {user} is still running; nothing to resume", Exit.REFUSED)


def rotate_user(args: argparse.Namespace) -> int:
    from chalicelib.deps import get_deps
    from chalicelib.scheduler import start_rotation

    require_settings("state_machine_arn", "table_name")
    deps = get_deps()
    check_request(deps, args.user, args.resume, args.note)
    started = start_rotation(deps, args.user, "manual", rotation_id=args.resume, resume=bool(args.resume),
                             note=args.note)
    print(("already running: " if started.duplicate else "started: ") + started.execution_arn, flush=True)
    if not args.wait:
        return 0
    return follow(deps, args.user, started.rotation_id, started.execution_arn, args.timeout)


def _history(deps: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = deps.sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def follow(deps: Any, user: str, rotation_id: str, execution_arn: str, timeout: float) -> int:
    """Print each state as it is entered; 0 once the new key is live, 1 if the rotation failed or is
    still short of live after ``timeout`` seconds."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    current = None
    while True:
        status = deps.sfn.describe_execution(executionArn=execution_arn)["status"]
        live = False
        for event in sorted(_history(deps, execution_arn), key=lambda e: e["id"]):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            if event["type"].endswith("StateEntered"):
                current = event["stateEnteredEventDetails"]["name"]
                print(f"  {event['timestamp']:%H:%M:%S} {current}", flush=True)
            elif event["type"].endswith("StateExited") and event["stateExitedEventDetails"]["name"] == LIVE_AFTER:
                live = True
        if live and status == "RUNNING" and not _recovery_ahead(deps, user, rotation_id):
            live = False  # no recovery window: the old key is being deleted now; report the end instead
        if live or status == "SUCCEEDED":
            print(_live_line(deps, user, rotation_id, deleted=status == "SUCCEEDED"), flush=True)
            if status != "RUNNING":
                print(status)
            return int(Exit.OK)
        if status != "RUNNING":
            rotation = deps.ledger.rotation(user, rotation_id) or {}
            cause = f": {rotation.get('error')}: {rotation.get('cause')}" if rotation.get("error") else ""
            print(f"{status}{cause} (see its alert; ci-key-rotator status {user})")
            return int(Exit.FAILED)
        if time.monotonic() > deadline:
            print(f"still RUNNING (in {current}) after {timeout:g} s: not live yet; ci-key-rotator status {user} "
                  "follows it")
            return int(Exit.FAILED)
        time.sleep(_POLL_SECONDS)


def _recovery_ahead(deps: Any, user: str, rotation_id: str) -> bool:
    """Whether the old key waits Inactive for a while (a recovery window still to run)."""
    from chalicelib import clock

    old = (deps.ledger.rotation(user, rotation_id) or {}).get("old_key_id")
    until = (deps.ledger.key(user, old) or {}).get("recovery_until") if old else None
    return isinstance(until, str) and clock.parse_iso(until) > clock.now()


def _live_line(deps: Any, user: str, rotation_id: str, deleted: bool) -> str:
    rotation = deps.ledger.rotation(user, rotation_id) or {}
    new, old = rotation.get("new_key_id"), rotation.get("old_key_id")
    targets = ", ".join(sorted(rotation.get("targets", {}))) or "no target"
    text = f"live: {new} is Active and verified in every target ({targets})"
    if not old:
        return text + "; there was no old key"
    if deleted:
        return text + f"; old key {old} was deleted (the rotation ended)"
    record = deps.ledger.key(user, old) or {}
    until = record.get("recovery_until")
    return text + (f"; old key {old} is Inactive and will be deleted at {until} (until then "
                   f"aws iam update-access-key --user-name {user} --access-key-id {old} --status Active "
                   "brings it back)" if until else
                   f"; old key {old} is Inactive")
