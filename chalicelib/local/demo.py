"""``make demo``: the whole product on this machine, no AWS account, no network beyond 127.0.0.1.

Runs the scenarios on the embedded runtime, prints a timeline of each, and writes under ``.demo/``:
``report.json`` (the contract other tools read), every execution's full history, every log line the
handlers wrote, and every SNS message published.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.local.runtime import LocalRuntime
from chalicelib.local.world import World

USER = "ci-deployer"
REPO = "acme/web-app"
#: Production-like timings, compressed for the demo: 24 h of recovery window pass in ~4 s.
TIMINGS = {"drain_period": "10m", "recovery_window": "24h", "verify_timeout": "5m"}
TIME_SCALE = 1 / 20000


@dataclass
class Scenario:
    name: str
    title: str
    prepare: Callable[[World], None]


def _fail_next_build(world: World) -> None:
    world.github.fail_next_builds(REPO, 1)


SCENARIOS = [
    Scenario("adoption", "Adopt a key created by hand and rotate it", lambda world: None),
    Scenario("rotation", "A normal, scheduled-style rotation of the rotator's own key", lambda world: None),
    Scenario("failed-verification", "The verification build fails: roll back, nothing broken", _fail_next_build),
]


def _key_status(world: World, key_id: str | None) -> str | None:
    if key_id is None:
        return None
    return world.key_statuses(USER).get(key_id, "Deleted")


def _timeline(world: World, history: list[dict[str, Any]], started: datetime) -> list[str]:
    lines = []
    for event in history:
        at = (event["timestamp"] - started).total_seconds()
        kind = event["type"]
        if kind.endswith("StateEntered"):
            details = event["stateEnteredEventDetails"]
            lines.append(f"  +{at:6.2f}s  ▶ {details['name']}")
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut"):
            details = next(v for k, v in event.items() if k.endswith("EventDetails"))
            lines.append(f"  +{at:6.2f}s    ✗ {details.get('error')}")
        elif kind == "TaskSucceeded" and "invoke.waitForTaskToken" in json.dumps(event, default=str):
            output = json.loads(event["taskSucceededEventDetails"].get("output") or "{}")
            lines.append(f"  +{at:6.2f}s    ✓ verification build {output.get('run_id')}: {output.get('result')}")
        elif kind in ("ExecutionSucceeded", "ExecutionFailed"):
            lines.append(f"  +{at:6.2f}s  ■ {kind.removeprefix('Execution').upper()}")
    return lines


def run_scenario(world: World, scenario: Scenario, out: Path) -> dict[str, Any]:
    runtime = world.runtime
    before = {a["subject"] for a in runtime.alerts()}
    scenario.prepare(world)
    old_key = next((k for k, s in world.key_statuses(USER).items() if s == "Active"), None)
    started = world.start_rotation(USER, reason="manual", rotation_id=f"{scenario.name}-{int(time.time())}")
    description = runtime.wait(started.execution_arn, timeout=300)
    history = runtime.history(started.execution_arn)
    (out / "histories").mkdir(exist_ok=True)
    (out / "histories" / f"{scenario.name}.json").write_text(json.dumps(history, indent=1, default=str))

    rotation = get_deps().ledger.rotation(USER, started.rotation_id) or {}
    new_key = rotation.get("new_key_id")
    seconds_verified_to_inactive = None
    verified = [t.get("verified_at") for t in rotation.get("targets", {}).values() if t.get("verified")]
    if verified and rotation.get("deactivated_at"):
        last_verified = max(clock.parse_iso(v) for v in verified)
        seconds_verified_to_inactive = round(
            (clock.parse_iso(rotation["deactivated_at"]) - last_verified).total_seconds(), 3)
    held = world.held_key(REPO)
    alerts = [a for a in runtime.alerts() if a["subject"] not in before]
    states = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    result = {
        "name": scenario.name,
        "execution_arn": started.execution_arn,
        "status": description["status"],
        "states": states,
        "old_key_id": old_key,
        "new_key_id": new_key,
        "key_status": {k: _key_status(world, k) for k in (old_key, new_key) if k},
        "ci_key_id": held,
        "ci_build_passes": world.run_build(REPO),
        "alerts": [{"subject": a["subject"], "severity": a["severity"]} for a in alerts],
        "transitions": len(states),
        "seconds_verified_to_inactive": seconds_verified_to_inactive,
        "targets": [{"id": t, "provider": "github", "key_id": world.held_key(REPO)}
                    for t in rotation.get("targets", {})],
    }
    print(f"\n■ {scenario.name}: {scenario.title}")
    print(f"  {USER}: {old_key} → {new_key or '(none)'}   execution {description['status']}")
    for line in _timeline(world, history, history[0]["timestamp"]):
        print(line)
    statuses = ", ".join(f"{k} {v}" for k, v in result["key_status"].items())
    print(f"  keys now: {statuses}")
    print(f"  {REPO} holds {held}; a build with it {'passes' if result['ci_build_passes'] else 'FAILS'}")
    for alert in result["alerts"]:
        print(f"  SNS [{alert['severity']}] {alert['subject']}")
    if seconds_verified_to_inactive is not None:
        print(f"  verification result → old key Inactive: {seconds_verified_to_inactive:.2f}s "
              f"(includes the {TIMINGS['drain_period']} drain period, time-compressed)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".demo"))
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "handler-logs.jsonl"
    print("CI Key Rotator demo — embedded AWS (moto) + local GitHub Actions emulator, all on 127.0.0.1")
    print(f"timings {TIMINGS}, time compressed ×{int(1 / TIME_SCALE)} (Wait states and retry backoff only)")
    with log_path.open("w") as logs, LocalRuntime(time_scale=TIME_SCALE, poll_interval=1.0,
                                                  log_stream=logs) as runtime:
        world = World(runtime, out).start()
        world.defaults = dict(TIMINGS)
        hand_made = world.add_user(USER, [REPO])
        print(f"\nsetup: IAM user {USER} with key {hand_made}, created by hand and pasted into {REPO}")
        scenarios = [run_scenario(world, scenario, out) for scenario in SCENARIOS]
        # The access key id is stored as a CI secret too, but it is an id, not secret material.
        key_ids = {hand_made} | {s[k] for s in scenarios for k in ("old_key_id", "new_key_id") if s[k]}
        id_hashes = {hashlib.sha256(k.encode()).hexdigest() for k in key_ids if k}
        secrets = [h for h in world.received_secret_sha256s() if h not in id_hashes]
        report = {"scenarios": scenarios, "secrets_sha256": secrets}
        (out / "sns-messages.json").write_text(json.dumps(runtime.alerts(), indent=1, default=str))
        world.stop()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    leaks = scan_for_secrets(out, report["secrets_sha256"])
    print(f"\nwrote {out}/report.json, histories/, handler-logs.jsonl, sns-messages.json")
    print(f"secret scan of {out}: {'no secret found' if not leaks else 'LEAKED in ' + ', '.join(leaks)}")
    ok = [s["status"] for s in scenarios] == ["SUCCEEDED", "SUCCEEDED", "FAILED"] and not leaks
    ok = ok and all(s["ci_build_passes"] for s in scenarios)
    print("demo", "OK" if ok else "FAILED")
    return 0 if ok else 1


def scan_for_secrets(out: Path, secret_hashes: list[str]) -> list[str]:
    """Files under ``out`` containing any 40-character token whose sha256 is a received secret."""
    import re

    wanted = set(secret_hashes)
    leaks = []
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for token in set(re.findall(r"[A-Za-z0-9/+=]{20,}", text)):
                if hashlib.sha256(token.encode()).hexdigest() in wanted:
                    leaks.append(str(path))
                    break
    return leaks


if __name__ == "__main__":
    sys.exit(main())
