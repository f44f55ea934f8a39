"""What the user's keys and targets look like now: the 'state left behind' every outcome reports."""

from __future__ import annotations

from typing import Any

from chalicelib import keys
from chalicelib.deps import Deps


def snapshot(deps: Deps, user: str) -> dict[str, Any]:
    statuses = {k.key_id: k.status for k in keys.list_keys(user)}
    holdings = deps.ledger.holdings(user)
    targets = {t.id: holdings.get(t.id) for t in deps.config.user(user).targets}
    return {
        "keys": statuses,
        "targets": targets,
        # Invariant 1 as a reader checks it: every target the rotator wrote to holds an Active key.
        "every_target_holds_an_active_key": all(
            key is None or statuses.get(key) == "Active" for key in targets.values()
        ),
    }
