"""Durations in configuration: ``90d``, ``12h``, ``10m``, ``30s``, plain seconds, or ISO 8601."""

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        match = _SHORT.match(value)
        if match:
            return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if isinstance(value, bool):
        raise ValueError("a duration, e.g. '30d', '12h', '10m' or seconds")
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse)]


def seconds(value: timedelta) -> int:
    return int(value.total_seconds())
