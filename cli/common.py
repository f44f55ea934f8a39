"""What every rotation command needs before it calls AWS: the region and the ROTATOR_* settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cli.errors import Exit, OperatorError

_POLL_SECONDS = 0.5


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


def follow_execution(deps: Any, user: str, run_id: str, execution_arn: str, timeout: float,
                     succeeded: Callable[[dict[str, Any]], str]) -> int:
    """Print each state of a second machine's execution (undo, graduation) as it is entered; 0 once it
    succeeded, printing ``succeeded(its ledger record)``, 1 if it failed or still runs after ``timeout``."""
    from cli.rotation import _history

    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        status = deps.sfn.describe_execution(executionArn=execution_arn)["status"]
        for event in sorted(_history(deps, execution_arn), key=lambda e: e["id"]):
            if event["id"] not in seen:
                seen.add(event["id"])
                if event["type"].endswith("StateEntered"):
                    print(f"  {event['timestamp']:%H:%M:%S} {event['stateEnteredEventDetails']['name']}", flush=True)
        record = deps.ledger.rotation(user, run_id) or {}
        if status == "SUCCEEDED":
            print(succeeded(record))
            return int(Exit.OK)
        if status != "RUNNING":
            cause = f": {record.get('error')}: {record.get('cause')}" if record.get("error") else ""
            print(f"{status}{cause} (see its alert; ci-key-rotator status {user})")
            return int(Exit.FAILED)
        if time.monotonic() > deadline:
            print(f"still RUNNING after {timeout:g} s; ci-key-rotator status {user} follows it")
            return int(Exit.FAILED)
        time.sleep(_POLL_SECONDS)
