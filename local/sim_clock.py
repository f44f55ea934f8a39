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

import threading
import time

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


def skipped() -> float:
    """Total simulated seconds not slept so far (for reports and tests)."""
    return _skipped[0]

