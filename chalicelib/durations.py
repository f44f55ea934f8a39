"""Durations in configuration: a number with a unit (``90d``, ``12h``, ``1.5h``, ``10m``, ``30s``, ``2w``) or
ISO 8601 (``P1DT12H``).

A bare number is refused: ``verify_timeout: 30`` reads as thirty minutes to most people and as thirty seconds
to a parser, and a verification timeout thirty times too short rolls every rotation back.
"""

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_ISO = re.compile(r"^\s*-?P", re.IGNORECASE)
_EXAMPLES = "a number with a unit (30s, 10m, 1.5h, 90d, 2w) or ISO 8601 (P1DT12H)"


def _parse(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration: {_EXAMPLES}")
    if isinstance(value, int | float):
        shown = int(value) if isinstance(value, float) and value.is_integer() else value
        raise ValueError(f"{value!r} has no unit: write {shown}s, {shown}m or {shown}h ({_EXAMPLES})")
    match = _SHORT.match(value)
    if match:
        amount = float(match.group(1))
        if not math.isfinite(amount):
            raise ValueError(f"{value!r} is not a duration: {_EXAMPLES}")
        return timedelta(seconds=round(amount * _UNITS[match.group(2)]))
    if _ISO.match(value):
        return value  # pydantic parses ISO 8601 durations
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        raise ValueError(f"{value!r} has no unit: write {value.strip()}s, {value.strip()}m or {value.strip()}h "
                         f"({_EXAMPLES})")
    raise ValueError(f"{value!r} is not a duration: {_EXAMPLES}")


Duration = Annotated[timedelta, BeforeValidator(_parse)]


def seconds(value: timedelta) -> int:
    return int(value.total_seconds())


def human(total_seconds: float) -> str:
    """``86400`` → ``24h``; ``5400`` → ``1h30m``; the largest units that divide it, for operators to read."""
    remaining = int(total_seconds)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
