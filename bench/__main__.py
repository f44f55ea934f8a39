"""Run every benchmark, print one table, write BENCHMARKS.md and bench.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import audit

TARGETS = {
    "audit_events_per_second": (">=", 20_000, "events/s per core"),
    "audit_p99_ms": ("", None, "ms per event, p99"),
    "audit_p50_ms": ("", None, "ms per event, p50"),
}


def machine() -> str:
    versions = ", ".join(f"{p} {version(p)}" for p in ("boto3", "moto", "aws-lambda-powertools", "pydantic"))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; {versions}")


def main() -> int:
    results = {**audit.run()}
    rows = []
    for name, value in results.items():
        op, target, unit = TARGETS.get(name, ("", None, ""))
        verdict = "" if target is None else ("met" if value >= target else "MISSED")
        rows.append(f"| {name} | {value:,} | {unit} | {op} {target or ''} {verdict} |".replace("  ", " "))
    table = "\n".join(["| figure | value | unit | target |", "|---|---|---|---|", *rows])
    print(table)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    Path("BENCHMARKS.md").write_text(
        f"# Benchmarks\n\n`make bench` on {stamp}: {machine()}. Medians of several runs.\n\n{table}\n"
    )
    Path("bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
