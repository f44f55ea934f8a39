"""One plugin-registry mechanism (Cloud Custodian's shape): a named ``Registry[T]`` filled by a ``register``
decorator, looked up by name, and discovered by importing every module of one package.

The CI targets (chalicelib/targets/registry.py), the local CI emulators (local/emulators/base.py) and the
audit detections (chalicelib/audit/detections/registry.py) are each one instance, so "drop a module in"
means the same thing everywhere: a module in the package that registers something is found, and nothing
else is edited. Discovery is lazy (the first lookup imports the package's modules), which keeps a Lambda
cold start that never looks a provider up from importing any (tests/test_cold_start.py).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plugins of one kind, discovered from ``package``'s modules on first use."""

    def __init__(
        self,
        kind: str,
        package: str,
        *,
        name_of: Callable[[T], str],
        not_plugins: Iterable[str] = (),
        on_import: Callable[[Registry[T], ModuleType], None] | None = None,
    ) -> None:
        #: What one plugin is called in errors ("CI provider", "emulator", "detection").
        self.kind = kind
        self.package = package
        self._name_of = name_of
        #: Modules of the package that hold shared code, not plugins ("base", "registry", helpers).
        self._not_plugins = frozenset(not_plugins)
        #: For plugins declared as data (a module's ``DETECTIONS``) rather than by decorator.
        self._on_import = on_import
        self._items: dict[str, T] = {}
        self._modules: list[ModuleType] = []
        self._loaded = False
        # Re-entrant: a plugin module may look another plugin up while it is being imported.
        self._lock = threading.RLock()

    # -- filling ---------------------------------------------------------------------------------------

    def register(self, item: T) -> T:
        """Decorator (or plain call): ``item`` is the plugin named ``name_of(item)``. Two plugins under one
        name are a programming error, refused at import time rather than one silently winning."""
        name = self._name_of(item)
        with self._lock:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice: {self._items[name]!r} and {item!r}")
            self._items[name] = item
        return item

    def modules(self) -> list[ModuleType]:
        """Every plugin module of the package, imported, sorted by name."""
        self._load()
        return list(self._modules)

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            # Set first: a plugin module that asks the registry while it is imported sees what is known so far
            # instead of importing itself again.
            self._loaded = True
            package = importlib.import_module(self.package)
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                # Sub-packages hold data or tooling (local/emulators/specs), not plugins.
                if info.ispkg or info.name in self._not_plugins or info.name.startswith("_"):
                    continue
                module = importlib.import_module(f"{self.package}.{info.name}")
                self._modules.append(module)
                if self._on_import is not None:
                    self._on_import(self, module)

    # -- lookup ----------------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The plugin called ``name``; LookupError naming the known ones otherwise."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise LookupError(f"unknown {self.kind} {name!r}; known: {self.names()}") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, plugin) pairs sorted by name: the order every listing (config union, README, tests) uses."""
        self._load()
        return sorted(self._items.items())

    def as_dict(self) -> dict[str, T]:
        return dict(self.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __repr__(self) -> str:
        state = f"{len(self._items)} registered" if self._loaded else "not yet discovered"
        return f"Registry({self.kind!r}, {self.package!r}: {state})"
