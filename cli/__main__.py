"""Entry point of the operator CLI (``ci-key-rotator``, or ``python -m cli``).

An operator's mistake (no credentials, no region, a setting not exported, a bad config file, an unknown
user) ends in one line naming the problem and the fix, and an exit code per kind of problem — never a
traceback. ``--debug`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from cli import audit, graduate, operations, rotation, status, undo
from cli.errors import Exit, OperatorError


def _region_from_aws_region() -> None:
    # boto3 reads only AWS_DEFAULT_REGION; AWS's own CLI and SDKs for other languages read AWS_REGION too.
    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]


def explain(exc: BaseException) -> tuple[str, Exit]:
    """One line and an exit code for an exception raised by a command."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )

    from chalicelib.errors import ConfigError

    if isinstance(exc, OperatorError):
        return str(exc), exc.code
    if isinstance(exc, ConfigError):
        return str(exc), Exit.CONFIG
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or run where a role is available", Exit.AWS_SETUP)
    if isinstance(exc, NoRegionError):
        return "no AWS region: export AWS_REGION (the stage's region, us-east-1 for the audit)", Exit.AWS_SETUP
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}: check AWS_ENDPOINT_URL and the network", \
            Exit.AWS_SETUP
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "the call")
        return f"AWS refused {operation}: {error.get('Code')}: {error.get('Message')}", Exit.AWS_REFUSED
    if isinstance(exc, ParamValidationError):
        return (f"a setting is missing or malformed ({str(exc).splitlines()[-1].strip()}): export the stage's "
                "ROTATOR_* settings (README: Operator CLI)", Exit.SETTINGS)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", Exit.INTERRUPTED
    return (f"unexpected error {type(exc).__name__}: {exc} — a bug; run again with --debug for the traceback",
            Exit.UNEXPECTED)


def run(func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure becomes one line and a code
        message, code = explain(exc)
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"ci-key-rotator: {message}", file=sys.stderr)
        return int(code)


def main(argv: list[str] | None = None) -> int:
    _region_from_aws_region()
    parser = argparse.ArgumentParser(prog="ci-key-rotator", description="CI Key Rotator operator CLI")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    rotation.register(subparsers)
    status.register(subparsers)
    operations.register(subparsers)
    undo.register(subparsers)
    graduate.register(subparsers)
    audit.register(subparsers)
    args = parser.parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
