"""Durations and the clock."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

Duration: TypeAlias = "timedelta | float | int | str"
"""A length of time: a timedelta, seconds, or text such as ``"1d"``, ``"15m"``, ``"1h30m"``."""

Clock: TypeAlias = Callable[[], datetime]

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_timedelta(value: Duration) -> timedelta:
    """Turn a :data:`Duration` into a ``timedelta``.

    Raises:
        ValueError: The value is negative or the text is not a duration.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    else:
        text = value.replace(" ", "").lower()
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {value!r} (use e.g. '30s', '15m', '1h30m', '7d')")
        result = sum((float(n) * _UNITS[u] for n, u in parts), timedelta())
    if result < timedelta():
        raise ValueError(f"negative duration: {value!r}")
    return result


def to_seconds(value: Duration) -> float:
    """A :data:`Duration` in seconds."""
    return to_timedelta(value).total_seconds()
