"""IAM access keys as eventually consistent as AWS's, on the simulated clock (local/sim_clock.py).

moto makes every key change visible at once and records each use to the microsecond. AWS does not:

- a new key is refused (``InvalidClientTokenId``) for a while after ``CreateAccessKey``;
- a deactivated or deleted key keeps working for a while (a reactivated one is refused for the
  propagation window again: any change of a key takes time to reach every endpoint);
- ``GetAccessKeyLastUsed`` shows a use only some time after it, and to the minute.

The windows are ``local/strict.py`` fields, read on every request, so ``strict.override`` changes them
for one block. Only authenticated uses are recorded (a refused request is no use of the key).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from local import sim_clock, strict

_lock = threading.Lock()
#: key id -> simulated time of its creation or reactivation.
_propagating: dict[str, float] = {}
#: key id -> simulated time it was deactivated or deleted.
_revoked: dict[str, float] = {}
#: key id -> what authenticates a deleted key while it still works.
_deleted: dict[str, _DeletedKey] = {}
#: key id -> uses not visible to GetAccessKeyLastUsed yet, oldest first: (simulated time, wall time,
#: service, region).
_pending_uses: dict[str, deque[tuple[float, datetime, str, str]]] = {}


@dataclass(frozen=True)
class _DeletedKey:
    user_name: str
    secret_access_key: str


def install() -> None:
    """Patch moto's IAM; called once from ``moto_patches.install``."""
    from moto.iam import access_control, models
    from moto.iam.access_control import IAMUserAccessKey

    original_key_init = models.AccessKey.__init__

    def key_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_key_init(self, *args, **kwargs)
        with _lock:
            _propagating[self.access_key_id] = sim_clock.now()

    models.AccessKey.__init__ = key_init

    original_update = models.User.update_access_key

    def update_access_key(self: Any, access_key_id: str, status: str | None = None) -> Any:
        before = self.get_access_key_by_id(access_key_id).status
        key = original_update(self, access_key_id, status)
        if status is not None and status != before:
            with _lock:
                if status == "Active":
                    _revoked.pop(access_key_id, None)
                    _propagating[access_key_id] = sim_clock.now()
                else:
                    _revoked[access_key_id] = sim_clock.now()
        return key

    models.User.update_access_key = update_access_key

    original_delete = models.User.delete_access_key

    def delete_access_key(self: Any, access_key_id: str) -> None:
        key = self.get_access_key_by_id(access_key_id)
        was_accepted = accepted(access_key_id, key.status)
        original_delete(self, access_key_id)
        if was_accepted:
            with _lock:
                _revoked.setdefault(access_key_id, sim_clock.now())
                _deleted[access_key_id] = _DeletedKey(self.name, key.secret_access_key)

    models.User.delete_access_key = delete_access_key

    original_auth_init = IAMUserAccessKey.__init__

    def auth_init(self: Any, account_id: str, partition: str, access_key_id: str, headers: Any) -> None:
        try:
            original_auth_init(self, account_id, partition, access_key_id, headers)
        except access_control.CreateAccessKeyFailure as failure:
            gone = _deleted.get(access_key_id)
            if failure.reason != "InvalidId" or gone is None or not accepted(access_key_id, "Inactive"):
                raise
            # Deleted, but AWS has not told every endpoint yet.
            self._owner_user_name, self._access_key_id = gone.user_name, access_key_id
            self._secret_access_key = gone.secret_access_key
            return
        if not accepted(access_key_id, _status(self.backend, access_key_id)):
            raise access_control.CreateAccessKeyFailure(reason="InvalidId")

    IAMUserAccessKey.__init__ = auth_init

    original_visited = models.mark_account_as_visited

    def mark_account_as_visited(account_id: str, access_key: str, service: str, region: str) -> None:
        from moto.iam.models import get_partition, iam_backends

        key = iam_backends[account_id][get_partition(region)].access_keys.get(access_key)
        if key is not None and key.role_arn:  # temporary credentials: moto's own bookkeeping
            original_visited(account_id, access_key, service, region)
            return
        # A deleted key has no last-used record to update; a refused request is no use of the key.
        if key is None or not accepted(access_key, key.status):
            return
        with _lock:
            _pending_uses.setdefault(access_key, deque()).append(
                (sim_clock.now(), models.utcnow(), service, region))
        _publish_uses(key)  # keeps the queue to the uses of the last lag seconds

    models.mark_account_as_visited = mark_account_as_visited

    original_last_used = models.IAMBackend.get_access_key_last_used

    def get_access_key_last_used(self: Any, access_key_id: str) -> dict[str, Any]:
        answer = original_last_used(self, access_key_id)  # NoSuchEntity for a key that is gone
        key = _find_key(access_key_id)
        _publish_uses(key)
        return {**answer, "last_used": _reported(key.last_used if key is not None else answer["last_used"])}

    models.IAMBackend.get_access_key_last_used = get_access_key_last_used

    original_report = models.IAMBackend.get_credential_report

    def get_credential_report(self: Any) -> str:
        for key in self.get_all_access_keys_for_all_users():
            _publish_uses(key)
        return str(original_report(self))

    models.IAMBackend.get_credential_report = get_credential_report


def accepted(access_key_id: str, status: str) -> bool:
    """Would AWS accept this key on a request right now?"""
    windows = strict.current()
    now = sim_clock.now()
    with _lock:
        if status == "Active":
            since = _propagating.get(access_key_id)
            return since is None or now - since >= windows.key_propagation_seconds
        revoked = _revoked.get(access_key_id)
        return revoked is not None and now - revoked < windows.key_revocation_seconds


def refused_from(access_key_id: str) -> float | None:
    """Simulated time from which a revoked key is refused (its revocation + the window), None if not revoked."""
    with _lock:
        revoked = _revoked.get(access_key_id)
    return None if revoked is None else revoked + strict.current().key_revocation_seconds


def settle() -> None:
    """Let every pending change reach every endpoint: move the simulated clock past all windows.

    For set-up code standing in for time that passes in real life (a person pasting a new key into CI,
    a deployment waiting for its identities) and for tests that check the state after the dust settled.
    """
    windows = strict.current()
    sim_clock.advance(max(windows.key_propagation_seconds, windows.key_revocation_seconds,
                          windows.last_used_lag_seconds) + 0.001)


def _find_key(access_key_id: str) -> Any:
    """moto's AccessKey of ``access_key_id`` in any account (backends index them by id), or None."""
    from moto.iam.models import iam_backends

    for account in list(iam_backends.values()):
        for backend in list(account.values()):
            key = backend.access_keys.get(access_key_id)
            if key is not None:
                return key
    return None


def _status(backend: Any, access_key_id: str) -> str:
    key = backend.access_keys.get(access_key_id)
    return str(key.status) if key is not None else "Active"


def _publish_uses(key: Any) -> None:
    """Move the uses old enough to be visible into moto's record of the key."""
    if key is None:
        return
    from moto.iam.models import AccessKeyLastUsed

    horizon = sim_clock.now() - strict.current().last_used_lag_seconds
    latest = None
    with _lock:
        pending = _pending_uses.get(key.access_key_id)
        while pending and pending[0][0] <= horizon:
            latest = pending.popleft()
    if latest is not None:
        _, wall, service, region = latest
        if key.last_used is None or wall >= key.last_used.timestamp:
            key.last_used = AccessKeyLastUsed(timestamp=wall, service=service, region=region)


def _reported(last_used: Any) -> Any:
    """The record as AWS reports it: to the minute."""
    if last_used is None or not strict.current().last_used_minute_granularity:
        return last_used
    from moto.iam.models import AccessKeyLastUsed

    minute = last_used.timestamp.replace(second=0, microsecond=0)
    return AccessKeyLastUsed(timestamp=minute, service=last_used.service, region=last_used.region)
