"""A local EventBridge bus: the Chalice app's ``@app.on_cw_event`` rules, matched by moto's own
EventPattern implementation, delivered asynchronously (as EventBridge does) to the in-process handlers.

Strict as AWS is (local/strict.py):

- a rule whose pattern is over the pattern quota (2,048 characters by default, counted on what Chalice
  sends: ``json.dumps(pattern)``) is refused, so the runtime does not start with a rule AWS would reject;
- each rule has a state (``chalicelib.event_patterns.rule_state``: what ``deploy`` sets); a read-only
  CloudTrail management event reaches only rules in ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS;
- delivery is a Lambda asynchronous invocation (``local/async_invoke.py``: retries, on-failure queue).

moto's EventBridge has no Lambda targets and no CloudTrail, so the runtime feeds this bus itself
(``cloudtrail.py`` records IAM calls made against moto).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.events.models import EventPattern

from local import strict

Dispatch = Callable[[str, dict[str, Any]], Any]
log = logging.getLogger(__name__)

ENABLED = "ENABLED"
DISABLED = "DISABLED"
ADMITS_READ_ONLY = "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
STATES = (ENABLED, DISABLED, ADMITS_READ_ONLY)
_CLOUDTRAIL_API_CALL = "AWS API Call via CloudTrail"
# Without a readOnly field, EventBridge's documented convention: these verbs are read-only.
_READ_VERBS = ("Get", "List", "Describe")


class RuleRefused(ValueError):
    """PutRule would fail on AWS (pattern over the quota, unknown state)."""


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: EventPattern
    state: str
    size: int


def is_read_only_management_event(event: dict[str, Any]) -> bool:
    """A CloudTrail read-only management event: what a rule in state ENABLED does not receive."""
    if event.get("detail-type") != _CLOUDTRAIL_API_CALL:
        return False
    detail = event.get("detail") or {}
    if detail.get("managementEvent") is False:
        return False
    if "readOnly" in detail:
        return detail["readOnly"] is True
    return str(detail.get("eventName", "")).startswith(_READ_VERBS)


def make_rule(name: str, pattern: dict[str, Any], state: str) -> Rule:
    """A rule as PutRule accepts it; ``RuleRefused`` where AWS would refuse it."""
    if state not in STATES:
        raise RuleRefused(f"rule {name}: state {state!r} is not one of {', '.join(STATES)}")
    size = len(json.dumps(pattern))  # what Chalice sends as EventPattern
    limit = strict.current().event_pattern_max_chars
    if limit and size > limit:
        raise RuleRefused(f"rule {name}: event pattern is {size} characters; EventBridge's quota is {limit} "
                          "(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html)")
    return Rule(name, EventPattern.load(json.dumps(pattern)), state, size)


def app_rules() -> list[Rule]:
    """The Chalice app's ``on_cw_event`` rules, each with the state ``deploy`` gives it."""
    from chalice.app import CloudWatchEventConfig

    from app import app
    from chalicelib.event_patterns import rule_state

    return [make_rule(source.name, source.event_pattern, rule_state(source.name))
            for source in app.event_sources if isinstance(source, CloudWatchEventConfig)]


class LocalEventBus:
    def __init__(self, dispatch: Dispatch, rules: list[Rule] | None = None) -> None:
        self._dispatch = dispatch
        self.rules = app_rules() if rules is None else list(rules)
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self._worker = threading.Thread(target=self._deliver, name="local-eventbridge", daemon=True)
        self._worker.start()

    def add_rule(self, name: str, pattern: dict[str, Any], state: str = ENABLED) -> Rule:
        """PutRule for a rule the app does not register (tests of the bus itself)."""
        rule = make_rule(name, pattern, state)
        self.rules = [r for r in self.rules if r.name != name] + [rule]
        return rule

    def remove_rule(self, name: str) -> None:
        self.rules = [r for r in self.rules if r.name != name]

    def matching(self, event: dict[str, Any]) -> list[str]:
        """The rules ``event`` reaches: enabled, admitted by the state, matched by the pattern."""
        read_only = (strict.current().read_only_events_need_admitting_state
                     and is_read_only_management_event(event))
        return [rule.name for rule in self.rules
                if rule.state != DISABLED and not (read_only and rule.state != ADMITS_READ_ONLY)
                and rule.pattern.matches_event(event)]

    def put(self, event: dict[str, Any]) -> list[str]:
        """Route ``event`` to every matching rule's handler; returns the handler names."""
        matched = self.matching(event)
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
            except Exception:  # refused by Lambda (payload too large): EventBridge drops it, loudly here
                log.exception("event for %s could not be delivered", name)
