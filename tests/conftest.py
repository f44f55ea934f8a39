"""One embedded AWS per test session (moto's backends are process-global); one IAM user per test."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.runtime import LocalRuntime
from local.world import World

_names = itertools.count(1)


@pytest.fixture(scope="session")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime(time_scale=0.0, poll_interval=0.5) as rt:
        yield rt


@pytest.fixture(scope="session")
def world(runtime: LocalRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(runtime, tmp_path_factory.mktemp("world")).start()
    yield w
    # Invariant 3 over everything the whole session produced, before the evidence goes away.
    from tests.leak_scan import corpus, known_secrets, leaks

    found = leaks(corpus(runtime), *known_secrets(runtime, set(w.received_secret_sha256s()),
                                                  w.credential_literals()))
    w.stop()
    assert not found, f"secret material leaked during the test session: {found}"


@pytest.fixture
def clean_world(world: World, runtime: LocalRuntime) -> Iterator[World]:
    """The shared world, with every global fault switched off again afterwards."""
    yield world
    runtime.clear_faults()
    for emulator in world._emulators.values():
        emulator.reset_faults()


def new_user_name(prefix: str = "ci") -> str:
    return f"{prefix}-{next(_names):03d}"


@pytest.fixture
def user(clean_world: World) -> str:
    """A CI user with one repository holding a hand-made key (the state before the rotator)."""
    name = new_user_name()
    clean_world.add_user(name, [f"acme/{name}"])
    return name


@pytest.fixture
def audited(clean_world: World, runtime: LocalRuntime) -> Iterator[World]:
    """The world with the audit on: IAM calls reach the audit Lambda through the local CloudTrail and
    EventBridge; its deliveries are drained before it is switched off again."""
    runtime.enable_audit()
    yield clean_world
    runtime.bus.drain()
    runtime.disable_audit()


#: Fixtures that start the embedded AWS (moto server, the state machine, the emulators): end-to-end tier.
_E2E_FIXTURES = {"runtime", "world", "clean_world", "user", "deployer", "operator_session"}
#: Fixtures and imports that start moto in-process, an HTTP server or another program (chalice package, cfn-lint,
#: the security scanners, make): integration tier.
_INTEGRATION_FIXTURES = {"moto_aws", "aws_env"}
_INTEGRATION_IMPORTS = re.compile(
    r"^\s*(from|import) (moto|local|tests\.emulator_fixtures|subprocess|security)\b|mock_aws", re.M)


@functools.cache
def _imports_servers(path: str) -> bool:
    return bool(_INTEGRATION_IMPORTS.search(Path(path).read_text()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tier every test by what it starts: ``unit`` (no moto, no server: ``make test-fast``), ``integration``
    (moto in-process or a local HTTP server), ``e2e`` (the embedded AWS with the real state machine)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        elif fixtures & _INTEGRATION_FIXTURES or _imports_servers(str(item.path)):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist each worker hands its cells of the fault matrix to the controller, which prints it."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.test_fault_matrix import MATRIX

        workeroutput["fault_matrix"] = [[step, fault, outcome] for (step, fault), outcome in MATRIX.items()]


def pytest_testnodedown(node: Any, error: Any) -> None:
    from tests.test_fault_matrix import MATRIX

    for step, fault, outcome in getattr(node, "workeroutput", {}).get("fault_matrix", []):
        MATRIX[(step, fault)] = outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix (step × fault → outcome) when the fault tests ran."""
    from tests.test_fault_matrix import MATRIX

    if not MATRIX:
        return
    faults = list(dict.fromkeys(f for _, f in MATRIX))
    steps = list(dict.fromkeys(s for s, _ in MATRIX))
    terminalreporter.write_sep("=", "fault matrix (step × fault → outcome)")
    terminalreporter.write_line("| step | " + " | ".join(faults) + " |")
    terminalreporter.write_line("|---" * (len(faults) + 1) + "|")
    for step in steps:
        cells = [MATRIX.get((step, f), "") for f in faults]
        terminalreporter.write_line(f"| {step} | " + " | ".join(cells) + " |")
