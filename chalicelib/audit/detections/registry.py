"""Discover every detection family module in this package (Cloud Custodian-style: drop a module in).

``DETECTIONS`` is one instance of the registry the CI targets and the emulators use too
(chalicelib/registry.py). Detections are data, so a family module declares ``DETECTIONS: tuple[Detection,
...]`` instead of decorating each one; importing the module registers them, by id.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

from chalicelib.audit.detections.base import Detection
from chalicelib.registry import Registry


def _register_family(registry: Registry[Detection], module: ModuleType) -> None:
    detections = getattr(module, "DETECTIONS", None)
    if not isinstance(detections, tuple) or not all(isinstance(d, Detection) for d in detections):
        raise TypeError(f"{module.__name__} must define DETECTIONS: tuple[Detection, ...]")
    for detection in detections:
        try:
            registry.register(detection)
        except ValueError:
            raise ValueError(f"detection ids defined twice: [{detection.id!r}]") from None


def _registry() -> Registry[Detection]:
    #: Shared helpers, not families (policy_grants: what a policy document grants, used by several families).
    return Registry("detection", "chalicelib.audit.detections", name_of=lambda d: d.id,
                    not_plugins={"base", "registry", "policy_grants"}, on_import=_register_family)


DETECTIONS = _registry()


def family_modules() -> list[ModuleType]:
    return DETECTIONS.modules()


def collect(modules: list[ModuleType]) -> tuple[Detection, ...]:
    """Every module's ``DETECTIONS``, checked: ids unique, suppressions name real detections."""
    registry = _registry()
    found: list[Detection] = []
    for module in modules:
        _register_family(registry, module)
        found.extend(module.DETECTIONS)
    ids = {d.id for d in found}
    unknown = sorted({s for d in found for s in d.suppresses} - ids)
    if unknown:
        raise ValueError(f"detections suppress unknown ids: {unknown}")
    return tuple(found)


@lru_cache(maxsize=1)
def all_detections() -> tuple[Detection, ...]:
    return collect(family_modules())


def by_id() -> dict[str, Detection]:
    return {d.id: d for d in all_detections()}
