"""Cold start (importing app.py, then what each function's first invocation imports) and package size."""

from __future__ import annotations

import ast
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Made on a handler's first run (chalicelib/observability.py): loads the X-Ray SDK and botocore.
_TRACER = "from chalicelib.observability import tracer\ntracer()"
#: One function of each kind: a rotation step, the webhook API (every CI target), the audit (every
#: detection). Measuring all 18 would add a minute for figures within a few percent of these.
SAMPLED = ("plan", "api_handler", "audit")


def _wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def _import_ms(code: str, runs: int, baseline: float) -> float:
    return round((statistics.median(_wall(code) for _ in range(runs)) - baseline) * 1000)


def first_call_imports() -> dict[str, str]:
    """Chalice function name → the import statements its handler in app.py runs on its first call."""
    from deploy.analysis import chalice_handlers

    bodies = {node.name: node for node in ast.parse((ROOT / "app.py").read_text()).body
              if isinstance(node, ast.FunctionDef)}
    return {function: "\n".join(ast.unparse(statement) for statement in bodies[handler.split(".")[-1]].body
                                if isinstance(statement, ast.Import | ast.ImportFrom))
            for function, handler in sorted(chalice_handlers().items())}


def import_ms(runs: int = 5) -> dict[str, object]:
    """Median wall time of ``import app`` in a fresh interpreter, minus an empty interpreter's; and per
    function, ``import app`` plus its handler's first-call imports and the Tracer (a Lambda's first
    invocation before any AWS call)."""
    baseline = statistics.median(_wall("pass") for _ in range(runs))
    per_function = {function: _import_ms(f"import app\n{imports}\n{_TRACER}", runs, baseline)
                    for function, imports in first_call_imports().items() if function in SAMPLED}
    slowest = max(per_function, key=per_function.__getitem__)
    return {"app_import_ms": _import_ms("import app", runs, baseline),
            "first_invocation_import_ms": per_function[slowest], "first_invocation_slowest": slowest,
            "first_invocation_import_ms_by_function": per_function}


def package_mb() -> float | None:
    """Size of the deployment zip ``chalice package`` builds (None if it cannot be built here)."""
    with tempfile.TemporaryDirectory() as out:
        chalice = Path(sys.executable).with_name("chalice")  # the console script of this virtualenv
        env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        done = subprocess.run([str(chalice), "package", "--stage", "dev", out],
                              cwd=ROOT, capture_output=True, text=True, check=False, env=env)
        archive = Path(out) / "deployment.zip"
        if done.returncode != 0 or not archive.exists():
            print(f"chalice package failed: {done.stderr[-500:]}", file=sys.stderr)
            return None
        with zipfile.ZipFile(archive) as zipped:
            assert zipped.testzip() is None
        return round(archive.stat().st_size / 1_000_000, 2)


def run() -> dict[str, object]:
    return {**import_ms(), "package_mb": package_mb()}
