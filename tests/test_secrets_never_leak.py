"""Invariant 3: no secret access key (nor CI token, GitHub App key or installation token) outside the escrow and the targets.

Runs rotations that succeed, roll back and fail, then scans everything the product wrote: every execution
history with data, every log line, every SNS message, every DynamoDB item, and the CLI's output.
"""

from __future__ import annotations

from chalicelib.targets.base import Credentials
from cli.__main__ import main as cli
from local.world import World
from tests.conftest import new_user_name
from tests.leak_scan import corpus, known_secrets, leaks


def test_no_secret_in_history_logs_alerts_ledger_or_cli(clean_world: World, capsys) -> None:
    ok, rolled_back, refused, as_app = new_user_name(), new_user_name(), new_user_name(), new_user_name()
    clean_world.use_github_app(f"acme/{as_app}")  # its target holds a GitHub App key, not a token
    for name in (ok, rolled_back, refused, as_app):
        clean_world.add_user(name, [f"acme/{name}"])
    assert clean_world.rotate(ok)["status"] == "SUCCEEDED"
    assert clean_world.rotate(as_app)["status"] == "SUCCEEDED"
    assert clean_world.rotate(rolled_back)["status"] == "SUCCEEDED"
    clean_world.github.fail_next_builds(f"acme/{rolled_back}", 1)
    assert clean_world.rotate(rolled_back)["status"] == "FAILED"
    clean_world.github.inject("PUT", rf"/repos/acme/{refused}/actions/secrets/.*", statuses=[422] * 4)
    assert clean_world.rotate(refused)["status"] == "FAILED"

    hashes, literals = known_secrets(clean_world.runtime, set(clean_world.received_secret_sha256s()),
                                     clean_world.credential_literals())
    texts = corpus(clean_world.runtime)
    assert cli(["status", "--json"]) == 0
    texts["cli"] = capsys.readouterr().out

    assert texts["logs"].count("\n") > 20 and len(texts) > 5, "the scan looked at real output"
    assert len(hashes) > 6 and literals, "the scan knew real secrets"
    assert any(lit.startswith("ghs_") for lit in literals) and any("PRIVATE KEY" in lit for lit in literals)
    assert leaks(texts, hashes, literals) == []


def test_credentials_never_show_their_secret() -> None:
    credentials = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    for shown in (repr(credentials), str(credentials), f"{credentials}", str([credentials])):
        assert "wJalrXUtnFEMI" not in shown
        assert "AKIAIOSFODNN7EXAMPLE" in shown
