"""The safety net behind webhooks: confirm every parked verification through the CI's status API."""

from __future__ import annotations

from collections import Counter

from chalicelib import clock
from chalicelib.deps import Deps
from chalicelib.errors import RotatorError
from chalicelib.observability import logger
from chalicelib.verification import confirm_and_resolve


def poll(deps: Deps) -> dict[str, int]:
    outcomes: Counter[str] = Counter()
    now = clock.epoch(clock.now())
    for callback in deps.ledger.callbacks():
        provider, run_id = callback["provider"], callback["run_id"]
        if callback["expires_at"] < now:
            deps.ledger.delete_callback(provider, run_id)
            outcomes["expired"] += 1
            continue
        try:
            outcomes[confirm_and_resolve(deps, provider, run_id, source="poller")] += 1
        except RotatorError as exc:
            # One unreachable CI must not stop the others from being confirmed.
            logger.warning("poll failed", extra={"provider": provider, "run_id": run_id,
                                                 "error": type(exc).__name__})
            outcomes["error"] += 1
    return dict(outcomes)
