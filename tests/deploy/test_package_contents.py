"""What ships is what runs: the deployment package holds Lambda code only.

Chalice packages ``app.py`` and the whole of ``chalicelib/`` (and the requirements, which come from PyPI
and are not ours to check here). The embedded runtime, the emulators, the demo, the operator CLI and the
benchmark helpers live outside it; these tests build the real package with ``chalice package`` (with an
empty requirements file, so nothing is downloaded) and fail if anything else got in, or if a module in
``chalicelib/`` is one no handler can reach.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What Chalice adds of its own to every package.
CHALICE_RUNTIME = "chalice/"
#: Data files the Lambda code reads at run time.
RUNTIME_DATA = {"chalicelib/event_patterns.json"}


@pytest.fixture(scope="module")
def package_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".chalice", project / ".chalice", ignore=shutil.ignore_patterns("deployments"))
    (project / "requirements.txt").write_text("")
    chalice = Path(sys.executable).with_name("chalice")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([str(chalice), "package", "--stage", "dev", str(project / "out")], cwd=project,
                          capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with zipfile.ZipFile(project / "out" / "deployment.zip") as archive:
        return [name for name in archive.namelist() if not name.endswith("/")]


def test_the_package_holds_only_the_app_and_chalicelib(package_names: list[str]) -> None:
    ours = [n for n in package_names if not n.startswith(CHALICE_RUNTIME)]
    assert "app.py" in ours
    stray = [n for n in ours if n != "app.py" and not n.startswith("chalicelib/")]
    assert not stray, f"not Lambda code, yet packaged: {stray}"
    data = {n for n in ours if not n.endswith(".py")}
    assert data <= RUNTIME_DATA, f"non-code files packaged (docs belong in docs/): {sorted(data - RUNTIME_DATA)}"


def test_no_harness_is_packaged(package_names: list[str]) -> None:
    for harness in ("local/", "cli/", "bench/", "tests/", "deploy/", "chalicelib/local/", "chalicelib/cli/"):
        assert not any(n.startswith(harness) for n in package_names), harness


def _imports(path: Path, package: str) -> set[str]:
    """Every chalicelib module ``path`` imports (at top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "chalicelib"}


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _reached_from_app() -> set[Path]:
    todo = [(ROOT / "app.py", "")]
    seen: set[Path] = set()
    while todo:
        path, package = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, package):
            parts = name.split(".")
            # importing a.b.c imports a and a.b too
            for i in range(1, len(parts) + 1):
                module = _module_path(".".join(parts[:i]))
                if module is not None:
                    pkg = ".".join(parts[:i]) if module.name == "__init__.py" else ".".join(parts[: i - 1])
                    todo.append((module, pkg))
    return seen


def _registered_modules() -> set[Path]:
    """Modules loaded by a registry's discovery (one module per provider or detection family)."""
    return {p for folder in ("targets", "audit/detections", "audit/notifiers")
            for p in (ROOT / "chalicelib" / folder).glob("*.py")}


def test_every_chalicelib_module_is_reachable_from_a_handler() -> None:
    reached = _reached_from_app() | _registered_modules()
    modules = {p for p in (ROOT / "chalicelib").rglob("*.py") if "__pycache__" not in p.parts}
    unreachable = sorted(str(p.relative_to(ROOT)) for p in modules - reached)
    assert not unreachable, f"in chalicelib/ but no Lambda handler reaches it (move it out): {unreachable}"
