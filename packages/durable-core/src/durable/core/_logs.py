"""Log records a worker emits, rate-limited so a long outage does not flood the log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from durable.core.records import RunRecord


def run_fields(run: RunRecord, worker: str) -> dict[str, object]:
    """The structured fields (``extra``) of a log record about ``run``."""
    return {
        "run_id": run.id,
        "workflow": run.workflow,
        "version": run.workflow_version,
        "worker": worker,
    }


class Throttle:
    """Emits a record of one kind at most once per ``every`` seconds, counting what it drops."""

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def log(self, key: str, level: int, msg: str, *args: object, **kwargs: Any) -> None:
        """Log ``msg`` unless a record with ``key`` went out less than ``every`` seconds ago."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            msg += f" ({dropped} similar message(s) suppressed)"
        self._logger.log(level, msg, *args, **kwargs)
