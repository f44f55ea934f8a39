"""Importing app.py (every Lambda's init) loads no handler's code: each pays only for its own imports.

Not timed (``make bench`` measures the milliseconds); this checks which modules an import loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def on_import() -> set[str]:
    return modules_after("import app")


@pytest.mark.parametrize("heavy", ["boto3", "botocore.session", "aws_xray_sdk", "pydantic", "yaml", "nacl", "cryptography",
                                   "slack_sdk", "chalicelib.workflow", "chalicelib.audit.detections",
                                   "chalicelib.targets"])
def test_importing_app_loads_no_handler_code(on_import: set[str], heavy: str) -> None:
    assert heavy not in on_import


def test_a_handler_loads_its_own_code_not_the_others() -> None:
    plan = modules_after("import app\nfrom chalicelib.workflow import plan")
    assert "chalicelib.workflow.plan" in plan
    assert not {"chalicelib.audit.detections", "slack_sdk"} & plan, "the plan function never loads the audit"
    audit = modules_after("import app\nfrom chalicelib import audit_handlers")
    assert "chalicelib.audit.detections" in audit
    assert not {"chalicelib.workflow.plan", "chalicelib.workflow.retire"} & audit, "nor the audit the workflow"
