"""``audit classify``: every input shape, stdin, gzip, JSON Lines, empty results, bad input, exit codes."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.audit import main, register

from .conftest import (
    FIXTURES,
    MANAGED,
    ROTATOR_ROLE,
    assumed_role,
    create_access_key,
    ct,
    eventbridge,
    fixture,
)

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"detection", "category", "severity", "principal", "summary", "event_id"}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["audit", "classify", *argv])
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    for line in lines:
        assert REQUIRED <= set(line)
    return code, lines, out.err


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_eventbridge_event_file(tmp_path: Path, capsys) -> None:
    code, lines, err = run([write(tmp_path, "e.json", eventbridge(create_access_key()))], capsys)
    assert code == 0 and err == ""
    [line] = lines
    assert (line["detection"], line["category"], line["severity"]) == (
        "key-lifecycle.access-key-change", "key-lifecycle", "MEDIUM")  # no --managed-user given
    assert line["principal"].endswith(":user/alice") and line["event_id"]
    assert list(line)[:6] == ["detection", "category", "severity", "principal", "summary", "event_id"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("signin_ConsoleLogin_IAMUser_success_noMFA.raw.json", ["console-login.no-mfa"]),  # {"Records": [...]}
        ("signin_ConsoleLogin_Root_failure.raw.json", ["console-login.failure"]),  # a single raw record
        ("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json", ["exposure.health-risk"]),
        ("signin_CheckMfa_IAMUser.raw.json", []),
    ],
)
def test_real_fixture_files(name: str, expected: list[str], capsys) -> None:
    code, lines, err = run([str(FIXTURES / name)], capsys)
    assert code == 0 and err == "" and [line["detection"] for line in lines] == expected


def test_array_of_shapes_and_several_files(tmp_path: Path, capsys) -> None:
    array = [eventbridge(ct("StopLogging", "cloudtrail.amazonaws.com")), {"Records": [ct("DisableKey", "kms.amazonaws.com")]}]
    code, lines, _ = run([write(tmp_path, "a.json", array), str(FIXTURES / "iam_CreateUser.raw.json")], capsys)
    assert code == 0
    assert [line["detection"] for line in lines] == [
        "cloudtrail.logging-stopped", "kms.key-disabled-or-deleted", "iam-identity.user-created",
    ]


def test_gzipped_cloudtrail_log_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "111122223333_CloudTrail_us-east-1_20240501T1015Z_abc.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": [ct("DeleteTrail", "cloudtrail.amazonaws.com")]}).encode()))
    code, lines, _ = run([str(path)], capsys)
    assert code == 0 and [line["detection"] for line in lines] == ["cloudtrail.logging-stopped"]


def test_json_lines_with_a_bad_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(eventbridge(ct("StopLogging", "cloudtrail.amazonaws.com"))), "{oops",
                               "", json.dumps(ct("DeleteUser", params={"userName": "bob"}))]))
    code, lines, err = run([str(path)], capsys)
    assert code == 0
    assert [line["detection"] for line in lines] == ["cloudtrail.logging-stopped", "iam-identity.user-deleted"]
    assert f"{path}:2: skipped: not valid JSON" in err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data = json.dumps(fixture("health_AWS_RISK_CREDENTIALS_EXPOSED.eventbridge.json")).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, lines, _ = run(["-"], capsys)
    assert code == 0 and [line["detection"] for line in lines] == ["exposure.health-risk"]


def test_nothing_found_prints_nothing(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    code, lines, err = run([write(tmp_path, "q.json", eventbridge(ct("GetUser"))), str(empty)], capsys)
    assert (code, lines, err) == (0, [], "")


def test_malformed_events_inside_a_valid_file(tmp_path: Path, capsys) -> None:
    batch = {"Records": [{"eventName": 5}, "junk", ct("StopLogging", "cloudtrail.amazonaws.com")]}
    code, lines, err = run([write(tmp_path, "b.json", batch)], capsys)
    assert code == 0 and [line["detection"] for line in lines] == ["cloudtrail.logging-stopped"]
    assert "$.Records[0]: invalid" in err and "$.Records[1]: expected a CloudTrail record, got string" in err


@pytest.mark.parametrize("content", [b"this is not json", b"\x1f\x8bnot really gzip", b"\xff\xfe\x00bad"])
def test_unparsable_file_exits_2(tmp_path: Path, content: bytes, capsys) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, lines, err = run([str(path), str(FIXTURES / "iam_CreateUser.raw.json")], capsys)
    assert code == 2 and f"audit classify: {path}:" in err
    assert [line["detection"] for line in lines] == ["iam-identity.user-created"]  # the other file still ran


def test_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    code, lines, err = run([str(tmp_path / "nope.json")], capsys)
    assert code == 2 and lines == [] and "cannot read: No such file or directory" in err


def test_managed_users_and_rotator_role(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "k.json", eventbridge(create_access_key("bob")))
    assert run([path], capsys)[1][0]["severity"] == "MEDIUM"
    assert run([path, "--managed-user", "bob", "--managed-user", "carol"], capsys)[1][0]["severity"] == "HIGH"
    by_bot = write(tmp_path, "r.json", eventbridge(create_access_key(identity=assumed_role("key-bot"))))
    assert run([by_bot], capsys)[1][0]["detection"] == "key-lifecycle.access-key-change"
    # Offline there is no ledger: a change by the rotator's role cannot be confirmed, so it is reported.
    assert run([by_bot, "--rotator-role", "key-bot"], capsys)[1][0]["detection"] == (
        "self-protection.rotator-outside-rotation")


def test_repeats_fold_into_one_line_with_a_count(tmp_path: Path, capsys) -> None:
    events = [eventbridge(ct("GetObject", "s3.amazonaws.com", error_code="AccessDenied")) for _ in range(3)]
    path = write(tmp_path, "r.json", events)
    _, folded, _ = run([path], capsys)
    assert [(line["detection"], line["count"]) for line in folded] == [("unauthorized-call.access-denied", 3)]
    _, every, _ = run([path, "--dedup-window", "0"], capsys)
    assert [line["count"] for line in every] == [1, 1, 1]


def test_min_severity(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "m.json", [eventbridge(ct("GetObject", "s3.amazonaws.com", error_code="AccessDenied")),
                                      eventbridge(ct("StopLogging", "cloudtrail.amazonaws.com"))])
    _, lines, _ = run([path, "--min-severity", "high"], capsys)
    assert [line["severity"] for line in lines] == ["CRITICAL"]


def test_output_never_contains_a_secret(tmp_path: Path, capsys) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    event = eventbridge(ct("GetObject", "s3.amazonaws.com", error_code="AccessDenied", userAgent=f"evil {secret}"))
    code = main(["audit", "classify", write(tmp_path, "s.json", event)])
    assert code == 0 and secret not in capsys.readouterr().out


def test_register_plugs_into_a_parent_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="ci-key-rotator")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "classify", str(FIXTURES / "iam_CreateUser.raw.json"),
                              "--managed-user", MANAGED, "--rotator-role", ROTATOR_ROLE])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["detection"] == "iam-identity.user-created"


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.audit", "audit", "classify", "-"],
        input=json.dumps(fixture("signin_ConsoleLogin_Root_success_noMFA.raw.json")),
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["detection"] for line in result.stdout.splitlines()] == ["console-login.no-mfa"]
