"""The local world's clock: real monotonic time plus every second a Wait state or Retry interval stood for.

With ``time_scale`` 0 (tests) a ``Wait`` of 10 minutes or a Retry interval of 2 s is not slept at all, so
AWS behaviours that play out over seconds (IAM propagating a new key, a revoked key still working, last-used
data arriving late) cannot be measured on the real clock: AwaitKeyLive's Retry would spin through its
attempts in milliseconds and give up. Measured on this clock they keep their real meaning and cost no
real time: a 2 s Retry interval moves it 2 s forward whether or not it was slept.

One clock for the whole process. Two executions waiting at once both move it, so it can run ahead of
either one; that only ever makes a consistency window end sooner, never later, so nothing is stricter
than AWS because of it. Wall-clock timestamps (CreateDate, ``pushed_at``) stay real: this is a duration
clock only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

_lock = threading.Lock()
_skipped = [0.0]


def now() -> float:
    """Seconds on the simulated monotonic clock."""
    return time.monotonic() + _skipped[0]


def advance(seconds: float) -> None:
    """Account for ``seconds`` that passed in the simulated world without being slept."""
    if seconds > 0:
        with _lock:
            _skipped[0] += seconds
        with _idle:  # a start slot may have been reached (sleep_until)
            _idle.notify_all()


def skipped() -> float:
    """Total simulated seconds not slept so far (for reports and tests)."""
    return _skipped[0]



# -- absolute waits (the scheduler's start slots) -----------------------------------------------------------
#
# Adding each Wait's length to one clock is right for one execution, but a fleet paced into slots 27 s apart
# would then move the clock by the *sum* of its waits (hours per slot) and start every rotation at once in
# real time. An absolute wait (a Wait state with Timestamp/TimestampPath) therefore sleeps until the clock
# reaches its time; the clock runs in real time while any execution works, and jumps to the earliest
# sleeper's time as soon as every running execution is asleep here: a discrete-event simulation, so
# rotations start in their slots in order and each takes its real time inside its slot.

_idle = threading.Condition()
#: Executions that may still do work (local/moto_patches.py counts them), and ``busy()`` callers.
_running = [0]
_holds = [0]
_sleepers: list[float] = []
#: Jump to the next slot once fewer than this many executions are working (``overlap``).
_overlap = [1]


def execution_started() -> None:
    with _idle:
        _running[0] += 1


def execution_ended() -> None:
    with _idle:
        _running[0] -= 1
        _idle.notify_all()


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """Hold the clock while a caller starts executions, so the first ones' slots are not jumped to before
    the last one has started (its slot is computed from the same start of the pass)."""
    with _idle:
        _holds[0] += 1
    try:
        yield
    finally:
        with _idle:
            _holds[0] -= 1
            _idle.notify_all()


@contextlib.contextmanager
def overlap(executions: int) -> Iterator[None]:
    """Jump to the next slot while up to ``executions - 1`` others are still working (default 1: only when
    all are asleep). A local rotation takes a second, a real one minutes (its verification build): with
    overlap their requests interleave as real ones would, and a fleet is benched in parallel."""
    with _idle:
        saved, _overlap[0] = _overlap[0], executions
    try:
        yield
    finally:
        with _idle:
            _overlap[0] = saved
            _idle.notify_all()


def sleep_until(target: float, stopped: Callable[[], bool] = lambda: False) -> None:
    """Block until ``now()`` reaches ``target`` (or ``stopped()``), jumping the clock when nothing else runs."""
    with _idle:
        _sleepers.append(target)
        try:
            while not stopped():
                current = now()
                if current >= target:
                    return
                working = _running[0] - len(_sleepers)
                if not _holds[0] and working < _overlap[0] and target <= min(_sleepers):
                    advance(target - current)
                    return
                # Every change that can end this wait notifies; the timeout covers the clock's real-time run.
                _idle.wait(timeout=min(1.0, target - current))
        finally:
            _sleepers.remove(target)
            _idle.notify_all()


def sleepers() -> int:
    """Executions asleep until their slot right now (for tests)."""
    with _idle:
        return len(_sleepers)


def running() -> int:
    """Executions whose program has not ended yet, in this process (for tests: one left running moves this
    clock when its Wait ends, in whatever test runs then)."""
    with _idle:
        return _running[0]
