"""``RateLimitedLog``: one record per kind of trouble and interval, however often it happens.

A receiver whose store is down raises on every delivery; logging each one would bury the
first, useful traceback under thousands of copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Hashable


@dataclass(slots=True)
class _Burst:
    quiet_until: float
    folded: int = 0


class RateLimitedLog:
    """Logs the first record of each key at once, then at most one per ``interval`` seconds.

    Records dropped in between are counted, and the next record of that key says how many.

    Args:
        logger: Where the records go.
        interval: Seconds after a record during which records of the same key are folded.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._bursts: dict[Hashable, _Burst] = {}

    def log(
        self,
        level: int,
        key: Hashable,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``msg % args`` at ``level`` unless a record of ``key`` went out recently."""
        now = self._clock()
        burst = self._bursts.get(key)
        if burst is not None and now < burst.quiet_until:
            burst.folded += 1
            return
        if burst is not None and burst.folded:
            msg += " (and %d more like it since the last one logged)"
            args = (*args, burst.folded)
        self._bursts[key] = _Burst(quiet_until=now + self._interval)
        self._logger.log(level, msg, *args, exc_info=exc_info)
