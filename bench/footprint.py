"""Cold start (importing app.py) and the size of the deployment package."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def import_ms(runs: int = 5) -> float:
    """Median wall time of ``import app`` in a fresh interpreter, minus an empty interpreter's."""
    baseline = statistics.median(_wall("pass") for _ in range(runs))
    return round((statistics.median(_wall("import app") for _ in range(runs)) - baseline) * 1000)


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


def run() -> dict[str, float | None]:
    return {"app_import_ms": import_ms(), "package_mb": package_mb()}
