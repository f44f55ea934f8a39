"""Run every benchmark, print one table, write BENCHMARKS.md and bench.json."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import audit, fleet_pacing, footprint, rotation

#: figure -> (direction, target, unit); None: no target, shown for information.
TARGETS = {
    "rotation_wall_s": ("", None, "s, one rotation, one target, build green at once"),
    "transitions_per_rotation": ("<=", 25, "state transitions"),
    "lambda_invocations_per_rotation": ("", None, "Lambda invocations"),
    "iam_calls_per_rotation": ("", None, "IAM API calls"),
    "seconds_verified_to_inactive": ("<=", 2, "s, verification result to old key Inactive"),
    "seconds_event_to_contained": ("", None, "s (simulated clock, strict IAM), AWS Health event to the leaked key "
                                             "refused"),
    "audit_events_per_second": (">=", 20_000, "events/s on one core"),
    "audit_cost_ratio": ("<=", 3, "× the parse + event-name floor, same run and corpus"),
    "audit_p50_ms": ("", None, "ms per event, p50"),
    "audit_p99_ms": ("", None, "ms per event, p99"),
    "app_import_ms": ("<=", 300, "ms, import app.py"),
    "first_invocation_import_ms": ("", None, "ms, import app.py + a function's first-call imports and Tracer "
                                             "(slowest of plan, api_handler, audit)"),
    "package_mb": ("<=", 10, "MB, deployment package"),
}


def verdict(op: str, target: float | None, value: float | None) -> str:
    if target is None or value is None:
        return ""
    met = value >= target if op == ">=" else value <= target
    return f"{op} {target:g}: {'met' if met else 'MISSED'}"


def machine() -> str:
    versions = ", ".join(f"{p} {version(p)}" for p in ("boto3", "moto", "aws-lambda-powertools", "pydantic"))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; {versions}")


NOTES = Path(__file__).with_name("notes.md")


def isolated(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()`` in a process of its own: moto's backends are process-global, so each benchmark that starts an
    embedded AWS (local/runtime.py) needs a fresh process, as each ``make test`` worker has."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run).result()


def main() -> int:
    started = time.monotonic()
    results = {**isolated(rotation.run), **isolated(fleet_pacing.run), **audit.run(), **footprint.run()}
    minutes = (time.monotonic() - started) / 60
    rows = []
    for name, (op, target, unit) in TARGETS.items():
        value = results.get(name)
        shown = "n/a" if value is None else f"{value:,}"
        rows.append(f"| {name} | {shown} | {unit} | {verdict(op, target, value)} |")
    for size in results["fleet"]:
        rows.append(f"| fleet of {size['users']} users | {size['wall_s']:,} s total | p50 {size['p50_s']} s, "
                    f"p95 {size['p95_s']} s per rotation | |")
    for mode, run in results["fleet_pacing"].items():
        refused = sum(run["refused_by_github"].values())
        target = "0 failed: " + ("met" if run["failed"] == 0 else "MISSED") if mode == "paced" else ""
        rows.append(f"| {run['users']} users, one GitHub token, documented limits on, {mode} | "
                    f"{run['completed']} completed, {run['failed']} failed, {run['not_started']} not started | "
                    f"{run['wall_s']:,} s real, {run['simulated_h']} h simulated, passes {run['passes']}; "
                    f"{refused} requests refused by GitHub's limits, {run['rotations_rate_limited']} rotations "
                    f"rate-limited | {target} |")
    table = "\n".join(["| figure | value | unit | target |", "|---|---|---|---|", *rows])
    print(table)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    Path("BENCHMARKS.md").write_text(
        f"# Benchmarks\n\n`make bench` on {stamp}: {machine()}. Medians of several runs; the whole run took "
        f"{minutes:.1f} minutes.\n\n{table}\n\n{NOTES.read_text()}"
    )
    results["bench_minutes"] = round(minutes, 1)
    Path("bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
