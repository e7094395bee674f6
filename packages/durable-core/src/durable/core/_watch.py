"""Waiting for runs: a waiter costs nothing while its run does not change.

The engine reports the transitions it makes itself (a turn's release, a start, a cancel, a wake)
to :class:`RunWatch`, which wakes the waiters of that run only. Runs this worker does not hold
are read by one shared poll, a single query for all of them, and only while someone waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from durable.core.records import RunQuery

if TYPE_CHECKING:
    from collections.abc import Callable

    from durable.core._types import RunStatus
    from durable.core.records import RunRecord
    from durable.core.store import StateStore


@dataclass(slots=True)
class _Watched:
    status: RunStatus
    waiters: int = 0
    record: RunRecord | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)


class RunWatch:
    """The runs someone waits for, and what is known of each."""

    def __init__(self, store: StateStore, interval: float, held: Callable[[str], bool]) -> None:
        self._store = store
        self._interval = interval
        self._held = held
        self._runs: dict[str, _Watched] = {}
        self._polling = False

    def report(self, run_id: str, status: RunStatus, record: RunRecord | None = None) -> None:
        """A run's status changed (``record`` when the reporter has the whole row)."""
        watched = self._runs.get(run_id)
        if watched is not None and watched.status != status:
            watched.status, watched.record = status, record
            watched.changed.set()
            watched.changed = anyio.Event()

    async def next_change(
        self, run_id: str, status: RunStatus, tg: anyio.abc.TaskGroup
    ) -> tuple[RunStatus, RunRecord | None]:
        """Wait for the run's next change from ``status``; starts the shared poll if needed."""
        watched = self._runs.setdefault(run_id, _Watched(status))
        watched.waiters += 1
        try:
            if not self._polling:
                self._polling = True
                tg.start_soon(self._poll)
            if watched.status == status:
                await watched.changed.wait()
            return watched.status, watched.record
        finally:
            watched.waiters -= 1
            if not watched.waiters:
                del self._runs[run_id]

    async def _poll(self) -> None:
        try:
            while self._runs:
                await anyio.sleep(self._interval)
                if not self._runs:
                    break
                ids = frozenset(i for i in self._runs if not self._held(i))
                if not ids:  # every watched run is held here: its transitions are reported
                    continue
                try:
                    page = await self._store.list_runs(RunQuery(run_ids=ids, limit=len(ids)))
                except Exception:  # noqa: BLE001 - an outage: waiters keep waiting, we try again
                    continue
                for record in page.runs:
                    self.report(record.id, record.status, record)
        finally:
            self._polling = False
