"""No secret in any log line at any level: rotations, a rollback, webhooks and an audit with every logger at
DEBUG (Lambda's ``ApplicationLogLevel=DEBUG``, ``POWERTOOLS_LOG_LEVEL=DEBUG``, an engineer who turned
botocore's debug logging on), every record captured, whatever handler or level it would reach.

botocore logs request parameters and response bodies at DEBUG: the CreateAccessKey response, the
PutSecretValue SecretString and GetSecretValue responses (the new key, CI tokens, webhook secrets, the
Slack webhook URL). ``chalicelib/log_safety.py`` holds every library logger at WARNING at handler start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from chalicelib import aws
from chalicelib.observability import SERVICE
from local.runtime import LocalRuntime
from local.world import World
from tests.leak_scan import known_secrets, leaks

#: Loggers this test turns to DEBUG (restored afterwards), besides the root.
DEBUGGED = ("botocore", "boto3", "urllib3", "slack_sdk", SERVICE, "chalicelib")


@pytest.fixture
def everything_at_debug(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, logging.LogRecord]]]:
    """(function, record) for every record a Lambda function's code emits: made while acting as that
    function's identity (not moto's own logging, not the test's)."""
    records: list[tuple[str, logging.LogRecord]] = []
    original = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        identity = aws.current_identity()
        if identity is not None:
            records.append((identity.name, record))
        original(self, record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("AWS_LAMBDA_LOG_LEVEL", "DEBUG")
    touched = [logging.getLogger(), *(logging.getLogger(name) for name in DEBUGGED)]
    levels = [logger.level for logger in touched]
    for logger in touched:
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(touched, levels, strict=True):
            logger.setLevel(level)


def text_of(record: logging.LogRecord) -> str:
    """The message and everything attached to it (args, extras, exception text)."""
    try:
        message = record.getMessage()
    except Exception:  # a record whose args do not format still counts, as its raw parts
        message = f"{record.msg} {record.args}"
    return f"{record.name} {message} {json.dumps(vars(record), default=str)}"


def test_no_secret_reaches_any_log_record_at_debug(clean_world: World, runtime: LocalRuntime, user: str,
                                                   everything_at_debug: list[tuple[str, logging.LogRecord]]) -> None:
    runtime.enable_audit()
    try:
        assert clean_world.rotate(user)["status"] == "SUCCEEDED"  # create, escrow, push, webhook, poller
        clean_world.github.fail_next_builds(f"acme/{user}", 1)
        assert clean_world.rotate(user)["status"] == "FAILED"  # rollback: the escrowed secret read back
        runtime.client("iam").create_access_key(UserName=user)  # a HIGH finding: Slack and SNS
        runtime.bus.drain()
    finally:
        runtime.bus.drain()
        runtime.disable_audit()

    functions = {function for function, _ in everything_at_debug}
    records = [record for _, record in everything_at_debug]
    assert any(r.name == SERVICE for r in records), "the functions' own log lines were captured"
    assert {"create_key", "push_target", "rollback", "audit"} <= functions, functions
    # A verification is resolved by the webhook route or by the poller, whichever sees the finished run first.
    assert functions & {"api_handler", "poller"}, functions
    hashes, literals = known_secrets(runtime, set(clean_world.received_secret_sha256s()))
    literals.add(runtime.slack.url)
    found = leaks({f"record {i} ({r.name}, {r.levelname})": text_of(r) for i, r in enumerate(records)},
                  hashes, literals)
    assert not found, found[:10]
