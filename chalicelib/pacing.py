"""Fleet pacing: when many due users share one CI token, spread their rotations' starts so the requests
they make on that token stay inside the provider's documented limits.

Every rotation spends a known amount on each token its targets use (``RateBudget.per_target``: requests,
content-creating requests, GitHub's secondary-limit points). For each limit the steady rate that keeps a
token at ``margin`` of it is ``count * margin / window``; one rotation of cost ``c`` therefore needs
``c * window / (count * margin)`` seconds of that token to itself, and the slowest limit sets its slot.
Rotations on one token start one slot apart; a user whose targets use several tokens starts when every
one of them has a free slot, and takes a slot on each. A token nobody else uses starts at once.

The schedule runs hourly, so one pass hands out slots in the first ``horizon_seconds`` only: users that
do not fit stay due and the next pass starts them at about the same spacing (this pass's last slot ends
at most one slot past the horizon, which the margin absorbs). The margin leaves room for retries, the poller's status calls and
anything else that uses the same token, and for a rotation's requests not all falling at its start.

Pure: no AWS, no clock; the scheduler turns offsets into the ``start_at`` the state machine waits for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: What pacing plans to use of each limit; the rest is headroom for retries and the token's other users.
DEFAULT_MARGIN = 0.8
#: The schedule's period: one pass starts what fits in it (app.py: ``Rate(1, unit=Rate.HOURS)``).
DEFAULT_HORIZON_SECONDS = 3600.0

#: Metrics a budget counts: every request; content-creating ones (POST/PATCH/PUT/DELETE); GitHub's points.
REQUESTS = "requests"
WRITES = "content_creating"
POINTS = "points"


@dataclass(frozen=True)
class Limit:
    """``count`` of ``metric`` per ``window_seconds`` on one token, as the provider documents it."""

    metric: str
    count: float
    window_seconds: float
    #: Where the provider documents it (shown by the scheduler's log and the README).
    source: str = ""

    def __post_init__(self) -> None:
        if self.count <= 0 or self.window_seconds <= 0:
            raise ValueError(f"limit {self.metric}: count and window must be positive")


@dataclass(frozen=True)
class RateBudget:
    """A provider's limits per token and what one rotation of one target spends against them."""

    limits: tuple[Limit, ...]
    #: metric -> amount one target's rotation spends (push, verification run, status and evidence calls).
    per_target: Mapping[str, float] = field(default_factory=dict)

    def slot_seconds(self, targets: int, margin: float = DEFAULT_MARGIN) -> float:
        """Seconds of this token one rotation of ``targets`` targets needs, by its slowest limit."""
        if not 0 < margin <= 1:
            raise ValueError("margin must be in (0, 1]")
        return max((targets * self.per_target.get(limit.metric, 0.0) * limit.window_seconds
                    / (limit.count * margin) for limit in self.limits), default=0.0)


#: A token as the provider counts it: provider, API base URL, and where the token is stored.
Credential = tuple[str, str, str]


@dataclass(frozen=True)
class Demand:
    """One due user: per credential, the number of its targets that use it and that provider's budget."""

    user: str
    uses: Mapping[Credential, tuple[int, RateBudget | None]]


@dataclass(frozen=True)
class Plan:
    """Start offsets (seconds after the pass) for the users started now; ``deferred`` wait for the next."""

    offsets: dict[str, float]
    deferred: list[str]
    #: Per credential: rotations given a slot and the seconds of slots handed out.
    load: dict[Credential, tuple[int, float]]


def plan(demands: Sequence[Demand], *, margin: float = DEFAULT_MARGIN,
         horizon_seconds: float = DEFAULT_HORIZON_SECONDS) -> Plan:
    """Offsets in ``demands`` order (the configuration's), earliest free slot first.

    A credential's first rotation always starts at 0, so a user whose own slot is longer than the horizon
    is started rather than starved; later ones start only if their slot begins inside the horizon.
    """
    next_free: dict[Credential, float] = {}
    load: dict[Credential, tuple[int, float]] = {}
    offsets: dict[str, float] = {}
    deferred: list[str] = []
    for demand in demands:
        slots = {cred: budget.slot_seconds(targets, margin) if budget else 0.0
                 for cred, (targets, budget) in demand.uses.items()}
        start = max((next_free.get(cred, 0.0) for cred in slots), default=0.0)
        if start >= horizon_seconds:
            deferred.append(demand.user)
            continue
        offsets[demand.user] = start
        for cred, slot in slots.items():
            next_free[cred] = start + slot
            count, seconds = load.get(cred, (0, 0.0))
            load[cred] = (count + 1, seconds + slot)
    return Plan(offsets, deferred, load)


def worst_window(starts: Iterable[float], limit: Limit, cost: float) -> float:
    """Most of ``limit.metric`` spent in any window of the limit's length, if each rotation spent ``cost``
    at its start: what the margin is checked against in tests and the bench."""
    ordered = sorted(starts)
    best, lo = 0, 0
    for hi, start in enumerate(ordered):
        while start - ordered[lo] >= limit.window_seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best * cost

