"""The run store every emulator keeps its builds in: one place for ids, projects, inputs, state and waiting.

Each emulator keeps its provider's own run object (a GitHub workflow run, a GitLab pipeline, a Travis build,
...): a mutable object whose fields its API views read. The store adds what every emulator needs around it
and used to repeat: id allocation, the run's project, its trigger inputs (the nonce), its creation time, a
per-project counter (GitLab ``iid``, CircleCI ``number``, Bitbucket/Travis ``build_number``), thread-safe
lookups and updates, and "wait until this run settled" for tests.

Interface (``R`` is the emulator's run type; every method is thread-safe and takes the emulator's lock)::

    store = RunStore[R](lock, ids=itertools.count(1001).__next__)   # or ids=lambda: str(uuid.uuid4())
    run = store.create(project, lambda run_id, number: R(...), inputs={"nonce": "n"})
    store.get(run_id) -> R                 # KeyError when unknown (a run id is an int or a str, as allocated)
    store.find(run_id) -> R | None         # None when unknown: route handlers turn it into their 404
    store.of(project) -> list[R]           # oldest first
    store.all() -> list[R]                 # oldest first
    store.project_of(run) / store.inputs_of(run) / store.created_of(run)   # epoch seconds
    store.update(run, status="completed", conclusion="success")  # attributes the run already has
    store.settle(run)                      # finished and its webhook (if any) attempted
    store.is_settled(run) -> bool
    store.wait(run_id, timeout) -> R       # TimeoutError if not settled in time
    len(store)

``project`` is whatever key the emulator groups runs by (its ``_project_key``). Runs that never finish
(``hang_next_builds``) are simply never settled.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclass
class _Entry(Generic[R]):
    run: R
    run_id: Hashable
    project: str
    inputs: dict[str, str]
    created: float
    settled: threading.Event = field(default_factory=threading.Event)


class RunStore(Generic[R]):
    """Every run of one emulator, by id and by project, in creation order."""

    def __init__(self, lock: threading.RLock, *, ids: Callable[[], Hashable],
                 clock: Callable[[], float] | None = None) -> None:
        import time

        # The emulator's own lock: a handler that already holds it can call the store without a second lock
        # order to get wrong.
        self._lock = lock
        self._ids = ids
        self._clock = clock or time.time
        self._entries: dict[Hashable, _Entry[R]] = {}
        #: id(run) -> entry, so callers can pass the run object itself.
        self._by_object: dict[int, _Entry[R]] = {}
        self._numbers: dict[str, itertools.count[int]] = {}

    def create(self, project: str, make: Callable[[Any, int], R], *,
               inputs: Mapping[str, str] | None = None) -> R:
        """Allocate an id and the project's next number (from 1), build the run with ``make(id, number)``
        and keep it."""
        with self._lock:
            run_id = self._ids()
            number = next(self._numbers.setdefault(project, itertools.count(1)))
            run = make(run_id, number)
            entry = _Entry(run, run_id, project, dict(inputs or {}), self._clock())
            self._entries[run_id] = entry
            self._by_object[id(run)] = entry
            return run

    def get(self, run_id: Hashable) -> R:
        with self._lock:
            return self._entries[run_id].run

    def find(self, run_id: Hashable) -> R | None:
        with self._lock:
            entry = self._entries.get(run_id)
            return None if entry is None else entry.run

    def of(self, project: str) -> list[R]:
        with self._lock:
            return [e.run for e in self._entries.values() if e.project == project]

    def all(self) -> list[R]:
        with self._lock:
            return [e.run for e in self._entries.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def project_of(self, run: R) -> str:
        return self._entry(run).project

    def inputs_of(self, run: R) -> dict[str, str]:
        return dict(self._entry(run).inputs)

    def created_of(self, run: R) -> float:
        return self._entry(run).created

    def update(self, run: R, **fields: Any) -> None:
        """Set fields of ``run`` together, so no reader sees half a state change (e.g. status without result)."""
        with self._lock:
            self._entry(run)
            for name in fields:
                if not hasattr(run, name):
                    # A misspelt field would otherwise become a new attribute no API view ever shows.
                    raise AttributeError(f"{type(run).__name__} has no field {name!r}")
            for name, value in fields.items():
                setattr(run, name, value)

    def settle(self, run: R) -> None:
        """The run finished and its webhook, if any, was attempted: ``wait`` returns."""
        self._entry(run).settled.set()

    def is_settled(self, run: R) -> bool:
        return self._entry(run).settled.is_set()

    def wait(self, run_id: Hashable, timeout: float) -> R:
        """Block until the run settled; TimeoutError (naming the run, never a value) if it does not in time."""
        with self._lock:
            entry = self._entries[run_id]
        if not entry.settled.wait(timeout):
            raise TimeoutError(f"run {run_id} not finished after {timeout}s")
        return entry.run

    def _entry(self, run: R) -> _Entry[R]:
        with self._lock:
            entry = self._by_object.get(id(run))
            if entry is None or entry.run is not run:
                raise KeyError(f"{type(run).__name__} is not in this store")
            return entry

