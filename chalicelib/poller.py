"""The safety net behind webhooks: confirm every parked verification through the CI's status API."""

from __future__ import annotations

from collections import Counter

from chalicelib import clock, log_safety
from chalicelib.deps import Deps
from chalicelib.errors import RotatorError
from chalicelib.observability import logger
from chalicelib.targets.http import time_budget
from chalicelib.verification import confirm_and_resolve

#: The most one run's confirmation may take: a CI whose status API hangs must not use up the invocation
#: (the poller's Lambda timeout) and leave every other CI's runs unconfirmed until the next round.
RUN_BUDGET_SECONDS = 20.0


def poll(deps: Deps) -> dict[str, int]:
    log_safety.enforce()
    outcomes: Counter[str] = Counter()
    now = clock.epoch(clock.now())
    for callback in deps.ledger.callbacks():
        provider, run_id = callback["provider"], callback["run_id"]
        if callback["expires_at"] < now:
            deps.ledger.delete_callback(provider, run_id)
            outcomes["expired"] += 1
            continue
        try:
            with time_budget(RUN_BUDGET_SECONDS):
                outcomes[confirm_and_resolve(deps, provider, run_id, source="poller")] += 1
        except RotatorError as exc:
            # One unreachable CI must not stop the others from being confirmed.
            logger.warning("poll failed", extra={"provider": provider, "run_id": run_id,
                                                 "error": type(exc).__name__})
            outcomes["error"] += 1
    return dict(outcomes)
