"""The one plugin-registry mechanism (chalicelib/registry.py) that targets, emulators and detections share:
discovery imports every module of the package except the shared ones, a name is taken once, lookups name
what is known, and nothing is imported until the first lookup (the Lambda cold start)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from chalicelib.audit.detections.registry import DETECTIONS
from chalicelib.registry import Registry
from chalicelib.targets.registry import PROVIDERS
from local.emulators import EMULATORS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package ``w3d_plugins`` with two plugin modules, a shared ``base``, a private and a sub-package."""
    package = tmp_path / "w3d_plugins"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("from chalicelib.registry import Registry\n"
                                         "REG = Registry('widget', 'w3d_plugins', name_of=lambda c: c.name,"
                                         " not_plugins={'base'})\n")
    (package / "base.py").write_text("raise AssertionError('shared code is not imported as a plugin')\n")
    (package / "_private.py").write_text("raise AssertionError('private modules are skipped')\n")
    (package / "data" / "__init__.py").write_text("raise AssertionError('sub-packages are skipped')\n")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(f"from w3d_plugins import REG\n\n@REG.register\nclass P:\n"
                                            f"    name = '{name}'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "w3d_plugins"
    for module in [m for m in sys.modules if m == "w3d_plugins" or m.startswith("w3d_plugins.")]:
        del sys.modules[module]


def test_discovery_imports_every_plugin_module_and_nothing_else(plugins: str) -> None:
    registry = __import__(plugins).REG
    assert "not yet discovered" in repr(registry) and f"{plugins}.alpha" not in sys.modules
    assert registry.names() == ["alpha", "beta"]
    assert [name for name, _ in registry.items()] == ["alpha", "beta"]
    assert registry.get("beta").name == "beta" and "alpha" in registry and len(registry) == 2
    assert [m.__name__ for m in registry.modules()] == [f"{plugins}.alpha", f"{plugins}.beta"]


def test_an_unknown_name_is_refused_with_the_known_ones(plugins: str) -> None:
    with pytest.raises(LookupError, match=r"unknown widget 'gamma'; known: \['alpha', 'beta'\]"):
        __import__(plugins).REG.get("gamma")


def test_a_name_is_taken_once() -> None:
    registry: Registry[ModuleType] = Registry("thing", "json", name_of=lambda m: "same")
    registry.register(ModuleType("a"))
    with pytest.raises(ValueError, match="thing 'same' registered twice"):
        registry.register(ModuleType("b"))


def test_the_three_registries_are_instances_of_the_one_mechanism() -> None:
    assert all(isinstance(r, Registry) for r in (PROVIDERS, EMULATORS, DETECTIONS))
    assert PROVIDERS.names() and EMULATORS.names() and DETECTIONS.names()


def test_no_registry_is_written_by_hand_any_more() -> None:
    """Each registry module delegates to chalicelib/registry.py instead of scanning packages itself."""
    for path in ("chalicelib/targets/registry.py", "chalicelib/audit/detections/registry.py",
                 "local/emulators/__init__.py", "local/emulators/base.py"):
        text = (ROOT / path).read_text()
        assert "pkgutil" not in text and "iter_modules" not in text, path
