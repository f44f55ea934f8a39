"""Invariant 3: no secret access key (nor CI token) outside the escrow and the targets.

Runs rotations that succeed, roll back and fail, then scans everything the product wrote: every execution
history with data, every log line, every SNS message, every DynamoDB item, and the CLI's output.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from chalicelib.cli.__main__ import main as cli
from chalicelib.local.emulators.base import emulators
from chalicelib.local.world import World, token_ref, webhook_ref
from chalicelib.targets.base import Credentials
from tests.conftest import new_user_name

SECRET_SHAPED = re.compile(r"[A-Za-z0-9/+=]{40}")


def corpus(world: World, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    runtime = world.runtime
    sfn = runtime.client("stepfunctions")
    texts: dict[str, str] = {}
    executions = sfn.list_executions(stateMachineArn=runtime.state_machine_arn)["executions"]
    for execution in executions:
        texts[f"history:{execution['name']}"] = json.dumps(runtime.history(execution["executionArn"]), default=str)
    texts["logs"] = runtime.log_stream.getvalue()
    texts["sns"] = json.dumps(runtime.alerts())
    items = runtime.client("dynamodb").scan(TableName=runtime.table_name)["Items"]
    texts["dynamodb"] = json.dumps(items)
    assert cli(["status", "--json"]) == 0
    texts["cli"] = capsys.readouterr().out
    return texts


def known_secrets(world: World) -> tuple[set[str], set[str]]:
    """(sha256 of every secret access key that exists or reached a CI, literal CI credentials)."""
    from moto.iam.models import iam_backends

    hashes = set(world.received_secret_sha256s())
    for account in iam_backends.values():
        for backend in account.values():
            for user in backend.users.values():
                for key in user.access_keys:
                    hashes.add(hashlib.sha256(key.secret_access_key.encode()).hexdigest())
    sm = world.runtime.client("secretsmanager")
    refs = [ref(p) for p in emulators() for ref in (token_ref, webhook_ref)]
    literals = set()
    for name in refs:
        try:
            literals.add(sm.get_secret_value(SecretId=name)["SecretString"])
        except sm.exceptions.ResourceNotFoundException:
            continue
    return hashes, literals


def test_no_secret_in_history_logs_alerts_ledger_or_cli(clean_world: World, capsys) -> None:
    ok, rolled_back, refused = new_user_name(), new_user_name(), new_user_name()
    for name in (ok, rolled_back, refused):
        clean_world.add_user(name, [f"acme/{name}"])
    assert clean_world.rotate(ok)["status"] == "SUCCEEDED"
    assert clean_world.rotate(rolled_back)["status"] == "SUCCEEDED"
    clean_world.github.fail_next_builds(f"acme/{rolled_back}", 1)
    assert clean_world.rotate(rolled_back)["status"] == "FAILED"
    clean_world.github.inject("PUT", rf"/repos/acme/{refused}/actions/secrets/.*", statuses=[422] * 4)
    assert clean_world.rotate(refused)["status"] == "FAILED"

    hashes, literals = known_secrets(clean_world)
    texts = corpus(clean_world, capsys)

    assert texts["logs"].count("\n") > 20 and len(texts) > 5, "the scan looked at real output"
    for where, text in texts.items():
        for token in set(SECRET_SHAPED.findall(text)):
            assert hashlib.sha256(token.encode()).hexdigest() not in hashes, f"secret access key in {where}"
        for literal in literals:
            assert literal not in text, f"CI credential in {where}"


def test_credentials_never_show_their_secret() -> None:
    credentials = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    for shown in (repr(credentials), str(credentials), f"{credentials}", str([credentials])):
        assert "wJalrXUtnFEMI" not in shown
        assert "AKIAIOSFODNN7EXAMPLE" in shown
