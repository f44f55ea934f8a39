"""200 users on one GitHub token, with the GitHub emulator's documented limits on.

The hourly schedule paces the fleet (chalicelib/pacing.py): each pass starts the rotations that fit in its
hour, in 27 s slots, and leaves the rest due for the next pass. The real state machine waits each slot out
(AwaitStartSlot) on the simulated clock that the emulator's rate windows also run on (local/sim_clock.py),
so two simulated hours take a few real minutes. The same fleet is then started all at once, unpaced, to
show what pacing avoids: GitHub's secondary limit refusing content-creating requests, each of which the
client before the rate-limit parking (issue 11) turned into a rollback.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib import clock
from chalicelib.deps import get_deps
from chalicelib.scheduler import Started, run_schedule
from local import sim_clock
from local.runtime import LocalRuntime
from local.world import World

USERS = 200
#: Rotations working at once before the clock moves to the next slot: a local rotation takes about a second,
#: a real one a few minutes (its verification build), so real ones overlap like this at 27 s slots.
OVERLAP = 4


def _backdate_keys(world: World, names: list[str], days: int) -> None:
    """Make the hand-made keys old enough to be due, so a rotated user is not due again the next hour
    (faking the scheduler's ``now`` instead would make the new keys look old too)."""
    from moto.iam.models import iam_backends

    from local.runtime import ACCOUNT

    backend = iam_backends[ACCOUNT]["aws"]
    for name in names:
        for key in backend.users[name].access_keys:
            key.create_date = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
    del world


def _rate_limited_rotations(world: World, started: list[Started]) -> int:
    """Rotations with at least one request refused as RateLimited (parked and retried by the state machine;
    the client before issue 11 rolled each of these back)."""
    count = 0
    for s in started:
        history = world.runtime.history(s.execution_arn)
        if any((e.get("taskFailedEventDetails") or e.get("lambdaFunctionFailedEventDetails") or {}).get("error")
               == "RateLimited" for e in history):
            count += 1
    return count


def _run_passes(world: World, names: list[str], *, pace: bool, hours: int, base: datetime) -> dict[str, Any]:
    github = world.github
    github.limit_rates_as_documented()
    sim_started, wall_started = sim_clock.now(), time.perf_counter()
    started: list[Started] = []
    per_pass: list[int] = []
    for hour in range(hours):
        with sim_clock.busy():  # every slot of a pass is measured from the same start
            launched = run_schedule(get_deps(), base + timedelta(hours=hour), pace=pace)
        launched = [s for s in launched if not s.duplicate]
        if not launched:
            break
        per_pass.append(len(launched))
        started += launched
        for s in launched:
            world.runtime.wait(s.execution_arn, timeout=900)
        if not pace:
            break
    statuses = Counter(world.runtime.client("stepfunctions").describe_execution(executionArn=s.execution_arn)
                       ["status"] for s in started)
    return {
        "users": len(names),
        "passes": per_pass,
        "completed": statuses.get("SUCCEEDED", 0),
        "failed": sum(n for status, n in statuses.items() if status != "SUCCEEDED"),
        "not_started": len(names) - len({s.user for s in started}),
        "wall_s": round(time.perf_counter() - wall_started, 1),
        "simulated_h": round((sim_clock.now() - sim_started) / 3600, 2),
        "refused_by_github": dict(github.rate_limited),
        "rotations_rate_limited": _rate_limited_rotations(world, started),
    }


def run(users: int = USERS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, LocalRuntime(time_scale=0.0, poll_interval=5.0) as runtime:
        world = World(runtime, Path(workdir)).start()
        world.defaults = {"drain_period": "0s", "recovery_window": "0s", "verify_timeout": "300s"}
        # Builds still call AWS with the pushed key, in threads (as bench/rotation.py's fleet).
        world.github.in_process_builds = True
        names = [f"paced-{i:03d}" for i in range(users)]
        for name in names:
            world.add_user(name, [f"acme/{name}"])
        _backdate_keys(world, names, days=40)
        with sim_clock.overlap(OVERLAP):
            paced = _run_passes(world, names, pace=True, hours=3, base=clock.now())
        # The same fleet, due again, started at once on fresh rate windows (a later day: new rotation ids).
        _backdate_keys(world, names, days=40)
        unpaced = _run_passes(world, names, pace=False, hours=1, base=clock.now() + timedelta(days=1))
        world.stop()
    return {"fleet_pacing": {"paced": paced, "unpaced": unpaced}}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else USERS), indent=2))
