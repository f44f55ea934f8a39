"""Discover every detection family module in this package (Cloud Custodian-style: drop a module in)."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType

from chalicelib.audit.detections.base import Detection

#: Shared helpers, not families (policy_grants: what a policy document grants, used by several families).
_NOT_FAMILIES = frozenset({"base", "registry", "policy_grants"})


def family_modules() -> list[ModuleType]:
    import chalicelib.audit.detections as package

    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in _NOT_FAMILIES or info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return modules


def collect(modules: list[ModuleType]) -> tuple[Detection, ...]:
    """Every module's ``DETECTIONS``, checked: ids unique, suppressions name real detections."""
    found: list[Detection] = []
    for module in modules:
        detections = getattr(module, "DETECTIONS", None)
        if not isinstance(detections, tuple) or not all(isinstance(d, Detection) for d in detections):
            raise TypeError(f"{module.__name__} must define DETECTIONS: tuple[Detection, ...]")
        found.extend(detections)
    ids = [d.id for d in found]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"detection ids defined twice: {repeated}")
    unknown = sorted({s for d in found for s in d.suppresses} - set(ids))
    if unknown:
        raise ValueError(f"detections suppress unknown ids: {unknown}")
    return tuple(found)


@lru_cache(maxsize=1)
def all_detections() -> tuple[Detection, ...]:
    return collect(family_modules())


def by_id() -> dict[str, Detection]:
    return {d.id: d for d in all_detections()}
