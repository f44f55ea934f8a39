"""Operator mistakes end in one line naming the problem and the fix, and a distinct exit code — never a
traceback. Each case runs the real CLI in a fresh interpreter with only the environment the case gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import Exit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ("users:\n- name: ci-a\n  targets:\n"
          "  - {provider: github, id: repo, repository: acme/a, token: 'secretsmanager:t'}\n")


def _run(args: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"), "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=home, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "rotation.yaml").write_text(CONFIG)
    (tmp_path / "latin1.yaml").write_bytes("users: [{name: caf\xe9}]\n".encode("latin-1"))
    return tmp_path


KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00", "AWS_SECRET_ACCESS_KEY": "example"}
SETTINGS = {"ROTATOR_CONFIG_PATH": "rotation.yaml", "ROTATOR_TABLE_NAME": "ci-key-rotator-dev",
            "ROTATOR_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:x"}
UNREACHABLE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

CASES = [
    ("no credentials", ["status", "ci-a"], {**SETTINGS, "AWS_DEFAULT_REGION": "us-east-1", **UNREACHABLE},
     Exit.AWS_SETUP, "no AWS credentials found"),
    ("no region", ["status", "ci-a"], {**SETTINGS, **KEYS}, Exit.AWS_SETUP, "export AWS_REGION"),
    ("AWS_REGION is honoured", ["status", "ci-a"], {**SETTINGS, **KEYS, "AWS_REGION": "us-east-1", **UNREACHABLE},
     Exit.AWS_SETUP, "cannot reach AWS at http://127.0.0.1:9"),
    ("settings not exported: rotate", ["rotate", "ci-a"], {"AWS_REGION": "us-east-1", **KEYS},
     Exit.SETTINGS, "ROTATOR_STATE_MACHINE_ARN, ROTATOR_TABLE_NAME not set"),
    ("settings not exported: status", ["status"], {"AWS_REGION": "us-east-1", **KEYS},
     Exit.SETTINGS, "ROTATOR_TABLE_NAME not set"),
    ("status of an unknown user", ["status", "ci-nobody"], {**SETTINGS, **KEYS, "AWS_REGION": "us-east-1"},
     Exit.CONFIG, "'ci-nobody' is not in the rotation configuration"),
    ("rotate an unknown user", ["rotate", "ci-nobody"], {**SETTINGS, **KEYS, "AWS_REGION": "us-east-1"},
     Exit.CONFIG, "'ci-nobody' is not in the rotation configuration"),
    ("a config that is not UTF-8", ["validate-config", "latin1.yaml"], {}, Exit.CONFIG, "is not UTF-8 text"),
    ("a config that does not exist", ["validate-config", "missing.yaml"], {}, Exit.CONFIG,
     "cannot read configuration missing.yaml"),
]


@pytest.mark.parametrize(("args", "env", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_operator_mistakes(home: Path, args: list[str], env: dict[str, str], code: Exit, message: str) -> None:
    done = _run(args, env, home)
    assert "Traceback" not in done.stderr + done.stdout
    assert message in done.stderr, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len([line for line in done.stderr.splitlines() if line.startswith("ci-key-rotator:")]) == 1


def test_exit_codes_are_distinct() -> None:
    assert len({int(e) for e in Exit}) == len(Exit)
