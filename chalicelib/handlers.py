"""Glue between a Lambda invocation and a workflow task: correlation id, logging, dependencies, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib import clock, keys, observability
from chalicelib.deps import Deps, get_deps
from chalicelib.observability import logger
from chalicelib.workflow.state import rotation_id_from_execution

Task = Callable[[dict[str, Any], Deps], dict[str, Any]]
#: ``observe(event, result, deps)`` records a task's metrics after it succeeded. Passed per handler in
#: app.py (not looked up here) so each function's code, and its IAM policy, holds only its own calls.
Observe = Callable[[dict[str, Any], dict[str, Any], Deps], None]


def run_task(name: str, task: Task, event: dict[str, Any], observe: Observe | None = None) -> dict[str, Any]:
    """Run ``task`` with the rotation id as the correlation id of every log line it writes."""
    rotation_id = _rotation_id(event)
    user = event.get("user") or (event.get("state") or {}).get("user") or (event.get("input") or {}).get("user")
    logger.thread_safe_append_keys(task=name, rotation_id=rotation_id, correlation_id=rotation_id, user=user)
    try:
        deps = get_deps()
        result = task(event, deps)
        if observe is not None:
            try:
                observe(event, result, deps)
            except Exception as exc:  # noqa: BLE001 - a metric must never fail a rotation step
                logger.debug("metrics not recorded", extra={"error": type(exc).__name__})
        return result
    except Exception as exc:
        # The message is ours (key and target ids only); never log the event, it may hold a task token.
        logger.warning("task failed", extra={"error": type(exc).__name__, "detail": str(exc)})
        raise
    finally:
        logger.thread_safe_clear_keys()


def _rotation_id(event: dict[str, Any]) -> str | None:
    """The correlation id: the rotation id wherever the task's input carries it (Plan gets the execution
    input and name; Alert a wrapper with the failed state)."""
    for source in (event, event.get("state") or {}, event.get("input") or {}):
        if isinstance(source, dict) and source.get("rotation_id"):
            return str(source["rotation_id"])
    execution, user = event.get("execution_name"), (event.get("input") or {}).get("user")
    if execution and user:
        return rotation_id_from_execution(str(user), str(execution))
    return None


# -- per-task metrics (observability.py has the names) --------------------------------------------------


def key_age(event: dict[str, Any], result: dict[str, Any], deps: Deps) -> None:
    """Plan: ``KeyAge`` of the key being replaced."""
    old_key_id, user = result.get("old_key_id"), result.get("user")
    if not old_key_id or not user:
        return
    for key in keys.list_keys(user):
        if key.key_id == old_key_id:
            observability.seconds("KeyAge", (clock.now() - key.created).total_seconds(), user=user,
                                  reason=result.get("reason"))


def rotation_succeeded(event: dict[str, Any], result: dict[str, Any], deps: Deps) -> None:
    """Report: ``RotationsSucceeded`` and each target's ``VerificationDuration``."""
    user, rotation_id = str(result.get("user")), str(result.get("rotation_id"))
    observability.count("RotationsSucceeded", user=user, rotation_id=rotation_id, reason=result.get("reason"))
    rotation = deps.ledger.rotation(user, rotation_id) or {}
    for target in (rotation.get("targets") or {}).values():
        started, verified = target.get("triggered_at"), target.get("verified_at")
        if started and verified:
            duration = (clock.parse_iso(verified) - clock.parse_iso(started)).total_seconds()
            observability.seconds("VerificationDuration", max(duration, 0.0))


def rotation_failed(event: dict[str, Any], result: dict[str, Any], deps: Deps) -> None:
    """Alert: ``RotationsFailed``, with the error and severity as metadata."""
    alert = result.get("alert") or {}
    observability.count("RotationsFailed", user=result.get("user"), rotation_id=result.get("rotation_id"),
                        error=alert.get("error"), severity=alert.get("severity"))


def audit_result(result: dict[str, Any]) -> dict[str, Any]:
    """The audit Lambdas: ``Findings`` by severity for what they returned."""
    observability.findings_by_severity(result.get("results") or [])
    return result
