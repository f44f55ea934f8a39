"""Glue between a Lambda invocation and a workflow task: correlation id, logging, dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.deps import Deps, get_deps
from chalicelib.observability import logger

Task = Callable[[dict[str, Any], Deps], dict[str, Any]]


def run_task(name: str, task: Task, event: dict[str, Any]) -> dict[str, Any]:
    """Run ``task`` with the rotation id as the correlation id of every log line it writes."""
    rotation_id = event.get("rotation_id") or (event.get("state") or {}).get("rotation_id")
    logger.thread_safe_append_keys(task=name, rotation_id=rotation_id, user=event.get("user"))
    try:
        return task(event, get_deps())
    except Exception as exc:
        # The message is ours (key and target ids only); never log the event, it may hold a task token.
        logger.warning("task failed", extra={"error": type(exc).__name__, "detail": str(exc)})
        raise
    finally:
        logger.thread_safe_clear_keys()
