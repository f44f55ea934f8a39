"""The tail every Alert step shares (chalicelib/workflow/failure.py), pinned once for its three callers —
the rotation's Alert, undo's UndoAlert and graduation's GraduateAlert: a retried Alert pages once and
leaves one failure record; a lock another execution holds is not released; an error payload the Alert
cannot read still pages. Each step runs as its own Lambda would (its function's identity) against the
embedded AWS; the page is read back from the SNS topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.deps import get_deps
from chalicelib.workflow import alert, graduate_alert, undo_alert
from chalicelib.workflow.failure import CAUSE_MAX, step_error, stored_cause
from local.world import World

_ARN = "arn:aws:states:us-east-1:123456789012:execution:ci-key-rotator-local-{machine}:{name}"
_TARGET = "github:acme/tail"


@dataclass(frozen=True)
class Caller:
    name: str
    step: Any
    handler: str
    kind: str
    #: The failed state the step receives once its Plan recorded the run and took the lock as ``run_id``.
    state: Callable[[str, str, Any], dict[str, Any]]
    subject: Callable[[str, str], str]
    #: The page's fields, in the order the alert's JSON carries them (the SNS message is their dump).
    fields: tuple[str, ...]


CALLERS = [
    Caller("rotation", alert, "alert", "rotation-failed",
           lambda user, rid, error: {"user": user, "rotation_id": rid, "reason": "manual", "error": error,
                                     "old_key_id": "AKIAOLDTAIL", "new_key_id": "AKIANEWTAIL"},
           lambda user, error: f"Rotation of {user} failed: {error}",
           ("kind", "user", "rotation_id", "execution_arn", "error", "cause", "rollback", "rollback_error",
            "note", "state_left_behind", "next_step", "old_key_id", "new_key_id", "adoption")),
    Caller("undo", undo_alert, "undo_alert", "undo-failed",
           lambda user, rid, error: {"user": user, "undo_id": rid, "rotation_id": "the-undone-one",
                                     "error": error, "old_key_id": "AKIAOLDTAIL",
                                     "new_key_id": "AKIANEWTAIL"},
           lambda user, error: f"Undo of {user}'s rotation failed: {error}",
           ("kind", "user", "undo_id", "rotation_id", "execution_arn", "error", "cause", "old_key_id",
            "new_key_id", "rollback", "rollback_error", "state_left_behind", "next_step")),
    Caller("graduation", graduate_alert, "graduate_alert", "graduation-failed",
           lambda user, rid, error: {"user": user, "rotation_id": rid, "target_id": _TARGET,
                                     "key_id": "AKIAOLDTAIL", "error": error},
           lambda user, error: f"Graduation of {_TARGET} ({user}) failed: {error}",
           ("kind", "user", "graduation_id", "target_id", "execution_arn", "error", "cause", "key_id",
            "role_arn", "rollback", "rollback_error", "state_left_behind", "next_step")),
]
_IDS = [c.name for c in CALLERS]


def lambda_error(name: str, message: str) -> dict[str, str]:
    """A Catch result as Step Functions hands it on: the Lambda's JSON error payload as the Cause."""
    return {"Error": name, "Cause": json.dumps({"errorMessage": message, "errorType": name})}


def run_alert(world: World, caller: Caller, wrapper: dict[str, Any]) -> dict[str, Any]:
    with aws.acting_as(world.runtime.identity_of(caller.handler)):  # under its own function's policy
        result: dict[str, Any] = caller.step.run(json.loads(json.dumps(wrapper)), get_deps())
    return result


def wrapper_for(caller: Caller, user: str, rid: str, error: Any) -> dict[str, Any]:
    name = f"{user}-{rid}"
    return {"state": caller.state(user, rid, error), "execution_name": name,
            "execution_arn": _ARN.format(machine=caller.name, name=name)}


def pages(world: World, wrapper: dict[str, Any]) -> list[dict[str, Any]]:
    arn = wrapper["execution_arn"]
    return [a for a in world.runtime.alerts() if a["message"].get("execution_arn") == arn]


def hold_lock(user: str, rid: str) -> None:
    arn = _ARN.format(machine="x", name=f"{user}-{rid}")
    get_deps().ledger.acquire_lock(user, rid, arn, timedelta(hours=1))


@pytest.mark.parametrize("caller", CALLERS, ids=_IDS)
def test_a_retried_alert_pages_once_and_leaves_one_failure_record(clean_world: World, user: str,
                                                                   caller: Caller) -> None:
    """Step Functions retries the Alert task (its Retry, or a Lambda that crashed after publishing): the
    retry finds the page recorded and does not page again; the record is the same failure."""
    rid = f"tail-retry-{caller.name}"
    hold_lock(user, rid)
    long_cause = "TargetPushFailed: " + "the CI answered 502 " * 40  # longer than the ledger keeps
    wrapper = wrapper_for(caller, user, rid, lambda_error("PermanentFault", long_cause))
    ledger = get_deps().ledger

    first = run_alert(clean_world, caller, wrapper)
    record = ledger.rotation(user, rid)
    again = run_alert(clean_world, caller, wrapper)
    retried = ledger.rotation(user, rid)

    (page,) = pages(clean_world, wrapper)
    subject = caller.subject(user, "PermanentFault")
    assert (page["subject"], page["severity"]) == (subject, "HIGH")
    assert tuple(page["message"]) == caller.fields
    assert page["message"]["kind"] == caller.kind and page["message"]["cause"] == long_cause
    assert first == again == {**wrapper["state"],
                              "alert": {"severity": "HIGH", "error": "PermanentFault", "subject": subject}}
    assert record is not None and retried is not None
    assert (record["outcome"], record["error"]) == ("failed", "PermanentFault")
    assert record["cause"] == long_cause[:CAUSE_MAX] and len(long_cause) > CAUSE_MAX
    assert record["alerted_at"], "the page is recorded: what stops the retry paging again"
    # The retry rewrites the same failure (only the time it recorded it moves); the page's time stays.
    assert {k: v for k, v in retried.items() if k != "completed_at"} == \
        {k: v for k, v in record.items() if k != "completed_at"}
    assert ledger.lock_holder(user) is None, "this run's own lock is released"


@pytest.mark.parametrize("caller", CALLERS, ids=_IDS)
def test_a_lock_held_by_another_execution_is_not_released(clean_world: World, user: str,
                                                          caller: Caller) -> None:
    """A duplicate trigger, or a run whose lock was taken over, fails into its Alert while another
    execution holds the user's lock: that lock stays; the failure is still recorded and paged."""
    rid, holder = f"tail-lock-{caller.name}", f"tail-holder-{caller.name}"
    hold_lock(user, holder)
    wrapper = wrapper_for(caller, user, rid, lambda_error("PermanentFault", "failed while another ran"))
    ledger = get_deps().ledger
    try:
        run_alert(clean_world, caller, wrapper)
        lock = ledger.lock_holder(user)
        assert lock is not None and lock["rotation_id"] == holder
        assert len(pages(clean_world, wrapper)) == 1
        assert (ledger.rotation(user, rid) or {}).get("outcome") == "failed"
    finally:
        ledger.release_lock(user, holder)


UNREADABLE = [
    pytest.param(None, ("Unknown", ""), id="no-catch-result"),
    pytest.param("States.Runtime", ("Unknown", ""), id="not-an-object"),
    pytest.param({"Error": "Sandbox.Timedout", "Cause": "Task timed out after 300.00 seconds {"},
                 ("Sandbox.Timedout", "Task timed out after 300.00 seconds {"), id="cause-not-json"),
    pytest.param({"Error": "Lambda.Unknown", "Cause": "[\"not\", \"an\", \"object\"]"},
                 ("Lambda.Unknown", "[\"not\", \"an\", \"object\"]"), id="cause-json-not-object"),
    pytest.param({"Cause": "null"}, ("Unknown", "null"), id="no-error-name"),
]


@pytest.mark.parametrize(("error", "read"), UNREADABLE)
@pytest.mark.parametrize("caller", CALLERS, ids=_IDS)
def test_an_alert_with_an_unreadable_error_payload_still_pages(clean_world: World, user: str, caller: Caller,
                                                               error: Any, read: tuple[str, str]) -> None:
    """No ``Catch`` result, or one whose Cause is not a Lambda's JSON error: the Alert still records the
    failure, releases the lock and pages, with what it could read (the name, else ``Unknown``; the cause
    as it came)."""
    rid = f"tail-unreadable-{caller.name}"
    hold_lock(user, rid)
    wrapper = wrapper_for(caller, user, rid, error)
    ledger = get_deps().ledger

    out = run_alert(clean_world, caller, wrapper)

    (page,) = pages(clean_world, wrapper)
    assert (page["message"]["error"], page["message"]["cause"]) == read
    assert page["subject"] == caller.subject(user, read[0]) and out["alert"]["error"] == read[0]
    record = ledger.rotation(user, rid) or {}
    assert (record.get("outcome"), record.get("error"), record.get("cause")) == ("failed", *read)
    assert ledger.lock_holder(user) is None


def test_the_stored_cause_is_masked_and_cut() -> None:
    # The example secret access key of AWS's documentation:
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html
    example = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    cause = f"push refused: {example} " + "the CI answered 502 " * 40
    stored = stored_cause(cause)
    assert example not in stored and stored.startswith("push refused: ****")
    assert len(stored) == CAUSE_MAX


def test_step_error_reads_a_lambda_error_payload() -> None:
    assert step_error(lambda_error("TargetPushFailed", "github:acme/x: 403")) == \
        ("TargetPushFailed", "github:acme/x: 403")
