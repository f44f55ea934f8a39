"""Local CI servers, one module per provider, each behind the ``CIEmulator`` contract (base.py).

A module here that decorates its class with ``@emulator`` is picked up by the world, the demo and the
provider contract suite (tests/test_provider_contract.py) with no other change: ``EMULATORS`` is one
instance of the registry the CI targets and the audit detections use too (chalicelib/registry.py).
"""

from __future__ import annotations

from typing import Any

from chalicelib.registry import Registry

#: Shared code of the emulators, not emulators: the HTTP server base (_server, skipped as private) and the
#: contract with this registry's accessors (base).
EMULATORS: Registry[type[Any]] = Registry("emulator", "local.emulators", name_of=lambda cls: str(cls.provider),
                                          not_plugins={"base"})
