"""Provider registry: every module in this package that registers a CITarget is a provider.

One instance of the shared mechanism (chalicelib/registry.py); ``providers()`` and ``provider(name)`` are
what the config union, the webhook route and the tests read, so a new provider module is found by all.
"""

from __future__ import annotations

from chalicelib.errors import ConfigError
from chalicelib.registry import Registry
from chalicelib.targets.base import CITarget

PROVIDERS: Registry[type[CITarget]] = Registry(
    "CI provider", "chalicelib.targets", name_of=lambda cls: cls.provider,
    not_plugins={"base", "registry", "http"},
)
#: Class decorator: make ``cls`` the implementation of ``cls.provider``.
register = PROVIDERS.register


def providers() -> dict[str, type[CITarget]]:
    """Every provider by name, importing the package's modules on first use."""
    return PROVIDERS.as_dict()


def provider(name: str) -> type[CITarget]:
    try:
        return PROVIDERS.get(name)
    except LookupError:
        raise ConfigError(f"unknown CI provider {name!r}; known: {PROVIDERS.names()}") from None
