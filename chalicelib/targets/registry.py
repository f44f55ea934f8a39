"""Provider registry: every module in this package that registers a CITarget is a provider."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from chalicelib.errors import ConfigError
from chalicelib.targets.base import CITarget

_PROVIDERS: dict[str, type[CITarget]] = {}
_scanned = False
_NOT_PROVIDERS = {"base", "registry", "http"}
T = TypeVar("T", bound=type[CITarget])


def register(cls: T) -> T:
    """Class decorator: make ``cls`` the implementation of ``cls.provider``."""
    _PROVIDERS[cls.provider] = cls
    return cls


def providers() -> dict[str, type[CITarget]]:
    """Every provider, importing the package's modules on first use."""
    global _scanned
    if not _scanned:
        import chalicelib.targets as package

        _scanned = True

        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in _NOT_PROVIDERS and not module.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{module.name}")
    return _PROVIDERS


def provider(name: str) -> type[CITarget]:
    try:
        return providers()[name]
    except KeyError:
        raise ConfigError(f"unknown CI provider {name!r}; known: {sorted(providers())}") from None
