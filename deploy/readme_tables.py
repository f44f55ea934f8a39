"""The README's provider and detection tables, rendered from the registries so they cannot drift.

``python -m deploy.readme_tables`` rewrites the tables between their markers in README.md
(``<!-- providers:begin -->`` … ``<!-- providers:end -->``, the same for ``detections``);
``--check`` only reports whether README.md is current (tests/test_readme_tables.py runs it).
Here rather than in chalicelib/: it runs at development time, never in Lambda.
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic.fields import FieldInfo

from chalicelib.audit.detections.registry import DETECTIONS
from chalicelib.audit.finding import Category, Severity
from chalicelib.targets.base import TargetConfig
from chalicelib.targets.registry import PROVIDERS

README = Path(__file__).resolve().parent.parent / "README.md"
REGENERATE = ".venv/bin/python -m deploy.readme_tables"
#: Fields every target has, described once above the table rather than in every row.
_COMMON_FIELDS = frozenset(TargetConfig.model_fields) - {"api_url"}


def _field(name: str, info: FieldInfo) -> str:
    """``name``, with the choices of a Literal or a flag's default: what a reader needs to fill it in."""
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    if len(choices) > 1:
        return f"`{name}` (" + "/".join(f"`{c}`" for c in choices) + ")"
    if info.annotation is bool:
        return f"`{name}` ({str(info.default).lower()})"
    return f"`{name}`"


def provider_fields(model: type[TargetConfig]) -> str:
    own = [name for name in model.model_fields if name not in _COMMON_FIELDS and name != "api_url"]
    return ", ".join(_field(name, model.model_fields[name]) for name in [*own, "api_url"])


def providers_table() -> str:
    rows = ["| provider | fields | secret store | verification build | webhook |", "|---|---|---|---|---|"]
    for name, cls in PROVIDERS.items():
        summary = cls.summary
        rows.append(f"| `{name}` | {provider_fields(cls.config_model)} | {summary.secret_store} | "
                    f"{summary.verification} | {summary.webhook} |")
    return "\n".join(rows)


def detections_table() -> str:
    """One row per category in the categories' own order; ids without their category prefix, grouped by
    base severity, highest first. Context (a managed CI user, the root user, what a policy grants) can
    raise a finding above its base severity."""
    by_category: dict[Category, dict[Severity, list[str]]] = {}
    for _, detection in DETECTIONS.items():
        short = detection.id.removeprefix(detection.category.value + ".")
        by_category.setdefault(detection.category, {}).setdefault(detection.severity, []).append(short)
    rows = ["| category | detections (base severity) |", "|---|---|"]
    for category in (c for c in Category if c in by_category):
        groups = by_category[category]
        cells = ", ".join(", ".join(f"`{s}`" for s in sorted(groups[severity])) + f" ({severity.value})"
                          for severity in reversed(Severity) if severity in groups)
        rows.append(f"| {category.value} | {cells} |")
    note = ("\nThe severity is a detection's base; context raises some (a managed CI user, the root user, "
            "the rotator's own role, what a policy grants), as each detection's description says.")
    return "\n".join(rows) + "\n" + note


TABLES: dict[str, Callable[[], str]] = {"providers": providers_table, "detections": detections_table}


def render(text: str) -> str:
    """``text`` with every marked table replaced by its rendering; ValueError if a marker pair is missing."""
    for name, table in TABLES.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.S)
        found = pattern.search(text)
        if not found:
            raise ValueError(f"README.md has no <!-- {name}:begin --> … <!-- {name}:end --> markers")
        text = text[:found.end(1)] + table() + text[found.start(2):]
    return text


def main(argv: list[str]) -> int:
    current = README.read_text()
    rendered = render(current)
    if "--check" in argv:
        if rendered != current:
            print(f"README.md's generated tables are out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if rendered != current:
        README.write_text(rendered)
        print("README.md tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
