"""A local EventBridge bus: the Chalice app's ``@app.on_cw_event`` rules, matched by moto's own
EventPattern implementation, delivered asynchronously (as EventBridge does) to the in-process handlers.

moto's EventBridge has no Lambda targets and no CloudTrail, so the runtime feeds this bus itself
(``cloudtrail.py`` records IAM calls made against moto).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from moto.events.models import EventPattern

Dispatch = Callable[[str, dict[str, Any]], Any]
log = logging.getLogger(__name__)


class LocalEventBus:
    def __init__(self, dispatch: Dispatch) -> None:
        from chalice.app import CloudWatchEventConfig

        from app import app

        self._dispatch = dispatch
        self.rules = [
            (source.name, EventPattern.load(json.dumps(source.event_pattern)))
            for source in app.event_sources
            if isinstance(source, CloudWatchEventConfig)
        ]
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self._worker = threading.Thread(target=self._deliver, name="local-eventbridge", daemon=True)
        self._worker.start()

    def put(self, event: dict[str, Any]) -> list[str]:
        """Route ``event`` to every matching rule's handler; returns the handler names."""
        matched = [name for name, pattern in self.rules if pattern.matches_event(event)]
        for name in matched:
            self._queue.put((name, event))
        return matched

    def drain(self, timeout: float = 30) -> None:
        """Wait until every event put so far was handled."""
        done = threading.Event()
        self._queue.put(("__drain__", {"done": done}))
        done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)

    def _deliver(self) -> None:
        while (item := self._queue.get()) is not None:
            name, event = item
            if name == "__drain__":
                event["done"].set()
                continue
            try:
                self._dispatch(name, event)
                self.delivered.append((name, event))
            except Exception:
                log.exception("event handler %s failed", name)
