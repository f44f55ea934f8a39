"""What an organisation checks before it adopts the tool: a licence, an honest answer to "why not OIDC?", and an
install that refuses an unsupported Python by name before it creates anything."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_project_is_licensed_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"


def test_the_readme_answers_this_tool_or_oidc_near_the_top() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[0] == "## This tool or OIDC?", headings[:3]
    section = readme.split("## This tool or OIDC?", 1)[1].split("\n## ", 1)[0]
    for must in ("AssumeRoleWithWebIdentity", "Travis", "sub", "migration"):
        assert must in section, must


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_an_old_python_is_refused_by_name_before_anything_is_installed(tmp_path: Path) -> None:
    for name in ("Makefile", "requirements.txt", "requirements-layer.txt", "requirements-dev.txt",
                 "requirements-security.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\n"
                   "if [ \"$1\" = \"--version\" ]; then echo 'Python 3.10.14'; exit 0; fi\n"
                   "if [ \"$1\" = \"-c\" ]; then exit 1; fi\n"
                   "echo \"unexpected: $*\" >&2; exit 3\n")
    old.chmod(old.stat().st_mode | stat.S_IEXEC)
    done = subprocess.run(["make", "install", f"PYTHON={old}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "MAKEFLAGS": ""})
    assert done.returncode != 0
    assert "needs Python 3.11 or newer" in done.stderr and "Python 3.10.14" in done.stderr, done.stderr
    assert not (tmp_path / ".venv").exists(), "a virtualenv was created before the version was checked"
    assert "unexpected" not in done.stderr
