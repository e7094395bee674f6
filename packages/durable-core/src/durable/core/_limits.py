"""Limits every store shares, checked in core so each store rejects the same values the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

KEY_LENGTH = 191
"""The longest run id, tag, signal token, name or attribute key a store can key on.

SQL stores index these as ``varchar(191)`` (a utf8mb4 key within MySQL's index limit).
"""

LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The latest instant a store can hold."""


def check_key(value: object, what: str) -> str:
    """Return ``value`` if it can be a key; name ``what`` was wrong otherwise.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: It is empty or longer than :data:`KEY_LENGTH` characters.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__qualname__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > KEY_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; stores key it on at most {KEY_LENGTH}"
            f" ({value[:40]!r}...)"
        )
    return value


def later(start: datetime, delta: timedelta, what: str) -> datetime:
    """``start + delta``, refused when it lies beyond what a store can hold.

    Raises:
        ValueError: The result is after :data:`LATEST` (names ``what``).
    """
    try:
        moment = start + delta
    except OverflowError:
        moment = None
    if moment is None or moment > LATEST:
        raise ValueError(
            f"{what}: {delta} from {start.isoformat()} lies beyond {LATEST.year}-12-31, the"
            " latest time a store can hold"
        )
    return moment
