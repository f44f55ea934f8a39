"""Every ``# type: ignore`` in the checked code names its error code and says why, so none hides a new error."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = [ROOT / "app.py", *(p for d in ("chalicelib", "cli", "deploy") for p in (ROOT / d).rglob("*.py"))]
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]+\])?(?P<rest>.*)$")


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bad = []
    for path in CHECKED:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = _IGNORE.search(line)
            if match and (not match.group("codes") or not match.group("rest").strip().lstrip("#").strip()):
                bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "type: ignore without [code] and a reason:\n" + "\n".join(bad)


def test_the_pattern_catches_bare_and_unexplained_ignores() -> None:
    assert _IGNORE.search("x = 1  # type: ignore") is not None
    assert not _IGNORE.search("x = 1  # type: ignore[attr-defined]").group("rest").strip()
