"""The tail every failure path shares: the rotation's Alert, undo's UndoAlert and graduation's GraduateAlert
each end a failed run by recording it, releasing the user's lock and paging, through :func:`finish`.

Step Functions retries an Alert task (its ``Retry`` on Lambda and transient errors runs the same input
again), so every part of the tail is safe to repeat: the record is an update of the same item, the lock is
released only while this run holds it, and the page goes out once — the run's record says when
(``alerted_at``), and a retry that finds it there does not publish again. A crash between the publish and
that record pages a second time: at least once, never none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib import clock
from chalicelib.audit.masking import mask_text
from chalicelib.deps import Deps
from chalicelib.notify import publish

#: Longest cause kept in the ledger for ``status``/``history`` (the alert carries it whole).
CAUSE_MAX = 500


def step_error(error: Any) -> tuple[str, str]:
    """(name, cause) of a Step Functions ``Catch`` result; a Lambda error's Cause is its JSON error payload,
    whose ``errorMessage`` is what an operator reads. Any other shape (no ``Catch`` result, a Cause that is
    not JSON or not an object) still gives a name and a cause: an unreadable error must not stop the page."""
    error = error if isinstance(error, dict) else {}
    name, cause = str(error.get("Error", "Unknown")), str(error.get("Cause", ""))
    try:
        cause = str(json.loads(cause).get("errorMessage", cause))
    except (ValueError, AttributeError):
        pass
    return name, cause


def stored_cause(cause: str) -> str:
    """The cause as the ledger keeps it, cut to :data:`CAUSE_MAX`. The cause is ours (key and target ids,
    never a secret); masked anyway, it is stored."""
    return mask_text(cause)[:CAUSE_MAX]


@dataclass(frozen=True)
class FailedRun:
    """The failed run as the ledger knows it. The three Alerts differ in when they have each part, so the
    caller says: the rotation records only a run whose state carries its id but releases the lock (under
    the id Plan took it with, from the execution name) whenever the user is configured; an undo or a
    graduation records and releases both or neither."""

    user: str
    #: The rotation, undo or graduation id: the ``ROTATION#<id>`` record's and the lock's.
    run_id: str
    #: Write the failure to the run's record, and page only if the record says no page went out yet.
    record: bool
    #: Release the user's lock if ``run_id`` holds it (a duplicate trigger never releases the running one's).
    release_lock: bool


def finish(deps: Deps, run: FailedRun | None, error_name: str, cause: str, subject: str,
           message: dict[str, Any], severity: str) -> dict[str, str]:
    """Record the failure, release the lock, page once; ``run`` None: nothing in the ledger, page anyway.
    ``cause`` is the whole cause (the ledger keeps :func:`stored_cause` of it; ``message`` carries what the
    caller put there). Returns the ``alert`` summary every Alert step puts in its output."""
    already = False
    if run is not None and run.record:
        already = bool((deps.ledger.rotation(run.user, run.run_id) or {}).get("alerted_at"))
        deps.ledger.update_rotation(run.user, run.run_id, outcome="failed", error=error_name,
                                    cause=stored_cause(cause), completed_at=clock.iso(clock.now()))
    if run is not None and run.release_lock:
        deps.ledger.release_lock(run.user, run.run_id)
    if not already:  # a retried Alert must not page twice
        publish(deps.settings.topic_arn, subject, message, severity)
        if run is not None and run.record:
            deps.ledger.update_rotation(run.user, run.run_id, alerted_at=clock.iso(clock.now()))
    return {"severity": severity, "error": error_name, "subject": subject}
