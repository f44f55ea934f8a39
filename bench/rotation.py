"""One rotation and a fleet of rotations on the embedded runtime (moto + GitHub emulator, real builds)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from chalicelib import clock, exposure
from chalicelib.deps import get_deps
from chalicelib.scheduler import run_schedule
from local import demo, sim_clock
from local.runtime import LocalRuntime
from local.world import World

# The two ends of the scale the issue asks about; every size in between costs another minute or two.
FLEET_SIZES = (50, 200)


class IamCallCounter:
    """Counts IAM API requests served by moto (reads and writes)."""

    def __init__(self) -> None:
        from moto.iam.responses import IamResponse

        self.count = 0
        original = IamResponse.call_action
        counter = self

        def call_action(response: Any) -> Any:
            counter.count += 1
            return original(response)

        IamResponse.call_action = call_action


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def single(world: World, iam: IamCallCounter, runs: int) -> dict[str, Any]:
    runtime = world.runtime
    world.add_user("bench-one", ["acme/bench-one"])
    world.rotate("bench-one")  # adopt the hand-made key; also warms the executor
    walls, transitions, invocations, iam_calls, verified_to_inactive = [], [], [], [], []
    for _ in range(runs):
        before_inv, before_iam = Counter(runtime.invocations), iam.count
        started = time.perf_counter()
        result = world.rotate("bench-one")
        walls.append(time.perf_counter() - started)
        assert result["status"] == "SUCCEEDED"
        history = runtime.history(result["executionArn"])
        transitions.append(sum(1 for e in history if e["type"].endswith("StateEntered")))
        invocations.append(sum((runtime.invocations - before_inv).values()))
        iam_calls.append(iam.count - before_iam)
        rotation = get_deps().ledger.rotations("bench-one")[-1]
        rotation = get_deps().ledger.rotation("bench-one", rotation["rotation_id"])
        verified = max(clock.parse_iso(t["verified_at"]) for t in rotation["targets"].values())
        verified_to_inactive.append((clock.parse_iso(rotation["deactivated_at"]) - verified).total_seconds())
    return {
        "rotation_wall_s": round(statistics.median(walls), 2),
        "transitions_per_rotation": int(statistics.median(transitions)),
        "lambda_invocations_per_rotation": int(statistics.median(invocations)),
        "iam_calls_per_rotation": int(statistics.median(iam_calls)),
        "seconds_verified_to_inactive": round(statistics.median(verified_to_inactive), 3),
        "seconds_event_to_contained": event_to_contained(world, "bench-one"),
    }


def event_to_contained(world: World, user: str) -> float | None:
    """An AWS Health exposure event for ``user``'s key → the first moment IAM refuses that key, on the
    simulated clock (IAM propagation of the new key and the revocation window included)."""
    (leaked,) = (k for k, s in world.key_statuses(user).items() if s == "Active")
    event_at = sim_clock.now()
    (outcome,) = exposure.respond(get_deps(), demo.health_event(leaked))
    assert world.runtime.wait(outcome["execution_arn"])["status"] == "SUCCEEDED"
    return demo.seconds_to_contained(leaked, event_at)


def fleet(world: World, size: int) -> dict[str, Any]:
    runtime = world.runtime
    names = [f"fleet{size}-{i:03d}" for i in range(size)]
    world.users.clear()
    for name in names:
        world.add_user(name, [f"acme/{name}"], timings={"rotate_after": "1d"})
    sfn = runtime.client("stepfunctions")
    started = time.perf_counter()
    # Unpaced: this measures the runtime with every rotation at once; bench/fleet_pacing.py measures pacing.
    launched = run_schedule(get_deps(), clock.now() + timedelta(days=2), pace=False)
    descriptions = [runtime.wait(s.execution_arn, timeout=900) for s in launched]
    wall = time.perf_counter() - started
    assert len(launched) == size and all(d["status"] == "SUCCEEDED" for d in descriptions), \
        Counter(d["status"] for d in descriptions)
    durations = [(d["stopDate"] - d["startDate"]).total_seconds()
                 for d in (sfn.describe_execution(executionArn=s.execution_arn) for s in launched)]
    return {"users": size, "wall_s": round(wall, 1), "p50_s": round(_percentile(durations, 0.5), 2),
            "p95_s": round(_percentile(durations, 0.95), 2)}


def run(runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, LocalRuntime(time_scale=0.0, poll_interval=5.0) as runtime:
        iam = IamCallCounter()
        world = World(runtime, Path(workdir)).start()
        world.defaults = {"drain_period": "0s", "recovery_window": "0s", "verify_timeout": "300s"}
        results = single(world, iam, runs)
        # Builds still call AWS with the pushed key, in threads: 200 interpreter start-ups would measure
        # Python, not the rotator.
        world.github.in_process_builds = True
        results["fleet"] = [fleet(world, size) for size in FLEET_SIZES]
        world.stop()
    return results
