"""Bounded retries for the deployment calls AWS documents as failing for a while after a related change.

- CreateStateMachine/UpdateStateMachine right after the role was created or changed: IAM is eventually
  consistent, and Step Functions refuses a role it cannot assume yet ("Neither the global service
  principal states.amazonaws.com, nor the regional one is authorized to assume the provided role").
  https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency
- UpdateContinuousBackups right after CreateTable: ContinuousBackupsUnavailableException ("Backups are
  being enabled for the table... Please retry later").
  https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateContinuousBackups.html

Anything else fails at once: retrying an error that is not one of these would only hide it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")

#: Replaced by the tests; real deployments wait.
sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Transient:
    """An error code, and optionally a message pattern, that means "not yet" rather than "wrong"."""

    code: str
    message: re.Pattern[str] | None = None

    def matches(self, exc: ClientError) -> bool:
        error = exc.response.get("Error", {})
        if error.get("Code") != self.code:
            return False
        return self.message is None or bool(self.message.search(str(error.get("Message", ""))))


ROLE_NOT_ASSUMABLE_YET = (Transient("AccessDeniedException", re.compile(r"authorized to assume the provided role")),)
BACKUPS_NOT_READY_YET = (Transient("ContinuousBackupsUnavailableException"),)

#: About 2.5 minutes in all: IAM propagation is usually seconds; a role still refused then is wrong.
DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 30.0)


def call(what: str, transient: tuple[Transient, ...], fn: Callable[..., T], *args: Any,
         delays: tuple[float, ...] = DELAYS, log: Callable[[str], None] | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, again after each delay (with jitter) while it fails with a ``transient``
    error; the last failure is raised as it is."""
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            if delay is None or not any(t.matches(exc) for t in transient):
                raise
            wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            if log is not None:
                log(f"{what}: {exc.response['Error'].get('Code')} (attempt {attempt}); retrying in {wait:.0f}s")
            sleep(wait)
    raise AssertionError("unreachable")
