"""The worker loop of a driving :class:`~durable.core.Engine`.

Takes pending runs, due timers and runs whose worker died, claims them (only those of its
namespace and registered workflow versions), runs their turns, keeps their leases through store
faults and releases them with each turn's outcome. :class:`WorkerLoop` is a part of ``Engine``
(its base class); the engine's lifecycle, client API and transport receiver live in
:mod:`durable.core.engine`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import anyio

from durable.core._logs import Throttle, run_fields
from durable.core._turn import REFUSED, Outcome, Turn, error_info
from durable.core._types import TERMINAL_STATUSES
from durable.core.errors import InputValidationError, WorkflowNotRegistered

if TYPE_CHECKING:
    from datetime import datetime

    from durable.core._time import Clock
    from durable.core._types import RunStatus
    from durable.core._watch import RunWatch
    from durable.core.records import RunPatch, RunRecord
    from durable.core.store import StateStore
    from durable.core.transport import Transport
    from durable.core.workflow import WorkflowRegistry

log = logging.getLogger("durable.engine")


@dataclass(slots=True)
class Settings:
    """An engine's timing and capacity settings, and the runs and handlers it has in hand."""

    lease: float
    poll_interval: float
    max_recovery_attempts: int
    max_concurrent_runs: int
    shutdown_grace: float
    active: set[str] = field(default_factory=set)
    serving: int = 0


class WorkerLoop:
    """The worker half of an engine: polling, claiming and driving runs."""

    store: StateStore
    transport: Transport | None
    namespace: str
    worker_id: str
    _workflows: WorkflowRegistry
    _runnable: frozenset[tuple[str, str]]
    _clock: Clock
    _cfg: Settings
    _watch: RunWatch
    _throttle: Throttle
    _stranded: set[tuple[str, str]]
    _tg: anyio.abc.TaskGroup | None
    _draining: bool
    _poke: anyio.Event
    _idle: anyio.Event

    async def _poll_loop(self) -> None:
        while not self._draining:
            try:
                await self._tick()
            except Exception as exc:  # noqa: BLE001 - a worker outlives a database outage
                self._throttle.log(
                    "poll",
                    logging.ERROR,
                    "worker %s: the store is failing (%s: %s); retrying every %ss",
                    self.worker_id,
                    type(exc).__qualname__,
                    exc,
                    self._cfg.poll_interval,
                    exc_info=True,
                )
            with anyio.move_on_after(self._cfg.poll_interval):
                await self._poke.wait()
            self._poke = anyio.Event()

    async def _tick(self) -> None:
        ns, now, mine = self.namespace, self._clock(), self._runnable
        await self._report_stranded()
        free = self._cfg.max_concurrent_runs - len(self._cfg.active)
        if free <= 0:
            return
        for run in await self.store.list_pending_runs(free, ns, workflows=mine):
            await self._claim(run.id)
        for run in await self.store.list_due_timers(now, ns, free, workflows=mine):
            await self._claim(run.id)
        orphans = await self.store.list_incomplete_runs(now, ns, free, workflows=mine)
        if orphans:
            log.info(
                "worker %s: recovering %d run(s) whose worker's lease expired",
                self.worker_id,
                len(orphans),
                extra={"worker": self.worker_id},
            )
        for run in orphans:
            await self._claim(run.id)
        for token in await self.store.list_pairable_tokens(free):
            waiter = await self.store.pair_signal(token, now)
            if waiter is not None:
                await self._claim(waiter.run_id)

    async def _report_stranded(self) -> None:
        """Warn once per workflow version that waits here for a worker that has it."""
        for run in await self.store.list_pending_runs(5, self.namespace):
            pair = (run.workflow, run.workflow_version)
            if pair in self._runnable or pair in self._stranded:
                continue
            self._stranded.add(pair)
            have = sorted(v for w, v in self._runnable if w == run.workflow) or ["none"]
            log.warning(
                "worker %s: runs of workflow %r version %r (e.g. %s) wait for a worker that has"
                " that version; this one has %s; they stay pending until one runs",
                self.worker_id,
                run.workflow,
                run.workflow_version,
                run.id,
                ", ".join(have),
                extra=run_fields(run, self.worker_id),
            )

    async def _claim(self, run_id: str) -> None:
        """Take the run if it is claimable and this worker can execute it (never raises)."""
        cfg = self._cfg
        if run_id in cfg.active or len(cfg.active) >= cfg.max_concurrent_runs or self._draining:
            return
        now = self._clock()
        cfg.active.add(run_id)
        try:
            locked = await self._lock(run_id, now)
        except Exception as exc:  # noqa: BLE001 - the poll tries again
            self._throttle.log(
                "claim", logging.WARNING, "worker %s: claim failed: %s", self.worker_id, exc
            )
            locked = False
        if not locked or self._tg is None:
            self._free(run_id)
            return
        self._tg.start_soon(self._drive_run, run_id)

    async def _lock(self, run_id: str, now: datetime) -> bool:
        return await self.store.try_lock_run(
            run_id,
            self.worker_id,
            now + timedelta(seconds=self._cfg.lease),
            now,
            namespace=self.namespace,
            workflows=self._runnable,
        )

    def _free(self, run_id: str) -> None:
        cfg = self._cfg
        cfg.active.discard(run_id)
        self._idle.set()
        if len(cfg.active) == cfg.max_concurrent_runs - 1:
            self._poke.set()  # a slot opened in a full worker: look for more work now

    async def _drive_run(self, run_id: str) -> None:
        """Run turns of a locked run until it suspends, ends or is handed back.

        A turn that ended on a store or transport fault is retried here with backoff while
        this worker keeps the lease, telling the next turn to send again any remote task the
        faulty turn may not have sent. If the lease cannot be kept, the run is left to be
        recovered when it lapses.
        """
        resend, backoff = False, 0.05
        try:
            while True:
                try:
                    status = await self._turn(run_id, resend=resend)
                except Exception:
                    log.exception("worker %s: run %s failed to execute", self.worker_id, run_id)
                    return
                if status == "retry":
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, self._cfg.poll_interval)
                    if self._draining or not await self._keep(run_id):
                        await self._release(run_id, Outcome("release"))
                        return
                    resend = True
                    continue
                if status != "pending" or self._draining:
                    return
                try:
                    if not await self._lock(run_id, self._clock()):
                        return
                except Exception:  # noqa: BLE001 - the poll takes it up again
                    return
                resend, backoff = False, 0.05
        finally:
            self._free(run_id)

    async def _keep(self, run_id: str) -> bool:
        """Extend this worker's lease on the run; False if it is lost or cannot be reached."""
        until = self._clock() + timedelta(seconds=self._cfg.lease)
        try:
            return await self.store.renew_run_lock(run_id, self.worker_id, until)
        except Exception:  # noqa: BLE001 - the lease lapses and the run is recovered
            return False

    async def _turn(self, run_id: str, *, resend: bool) -> RunStatus | Literal["retry"] | None:
        """Execute one turn of a run this worker has just locked; returns its new status.

        ``"retry"``: the turn ended on a store or transport fault; the lease is still held
        and nothing was released (the caller retries). None: the release failed or this
        worker no longer held the run.
        """
        outcome: Outcome | None = None
        run: RunRecord | None = None
        try:
            run = await self.store.get_run(run_id)
            if run is None:
                return None
            outcome = await self._execute(run, resend=resend)
        except Exception as exc:  # noqa: BLE001 - a store fault before the body ran
            outcome = Outcome("retry", error=error_info(exc))
        finally:
            if outcome is None or outcome.status != "retry" or self._draining:
                status = await self._release(run_id, outcome or Outcome("release"), run)
        if outcome.status == "retry" and not self._draining:
            return "retry"
        if run is not None:
            self._log_outcome(run, outcome, status)
        if status == "suspended" and outcome.wake_at is not None:
            self._wake_soon(run_id, outcome.wake_at)
        return status

    async def _release(
        self, run_id: str, outcome: Outcome, run: RunRecord | None = None
    ) -> RunStatus | None:
        """End this worker's turn on the run with ``outcome`` (never raises).

        Waiters of the run learn its new status; when the run ended and ``run`` is the row
        this turn started from, they get the row as the release left it, without a read.
        """
        status: RunStatus | None = None
        patch = _release_patch(outcome)
        # Shielded so a cancelled turn still releases its lease; bounded so a dead database
        # cannot hold shutdown forever (the lease then simply expires).
        with anyio.move_on_after(self._cfg.lease, shield=True):
            try:
                try:
                    status = await self.store.release_run_lock(
                        run_id, self.worker_id, checkpoints=outcome.checkpoints, **patch
                    )
                except REFUSED as exc:  # the output cannot be stored: the run fails for good
                    patch = _release_patch(Outcome("failed", error=error_info(exc)))
                    status = await self.store.release_run_lock(run_id, self.worker_id, **patch)
            except Exception as exc:  # noqa: BLE001 - the lease lapses; the run is recovered
                self._throttle.log(
                    "release",
                    logging.WARNING,
                    "worker %s: could not release run %s (%s); it is recovered when its"
                    " lease lapses",
                    self.worker_id,
                    run_id,
                    exc,
                )
        if status is not None:
            ended = None
            if run is not None and status in TERMINAL_STATUSES and status == patch.get("status"):
                ended = replace(
                    run,
                    status=status,
                    output=patch.get("output", run.output),
                    error=patch.get("error", run.error),
                    wake_at=patch.get("wake_at", run.wake_at),
                    recovery_attempts=patch.get("recovery_attempts", run.recovery_attempts),
                    locked_by=None,
                    locked_until=None,
                    updated_at=self._clock(),
                )
            self._watch.report(run_id, status, ended)
        return status

    def _log_outcome(self, run: RunRecord, outcome: Outcome, status: RunStatus | None) -> None:
        if status not in ("failed", "dead"):
            return
        error = outcome.error or {}
        log.log(
            logging.ERROR if status == "dead" else logging.WARNING,
            "run %s (%s v%s) %s: %s: %s",
            run.id,
            run.workflow,
            run.workflow_version,
            status,
            error.get("type", "Error"),
            error.get("message", ""),
            extra=run_fields(run, self.worker_id),
        )

    def _wake_soon(self, run_id: str, wake_at: datetime) -> None:
        """Claim a run at its wake time when that comes before the next poll."""
        delay = (wake_at - self._clock()).total_seconds()
        if self._tg is not None and delay < self._cfg.poll_interval:

            async def wake() -> None:
                await anyio.sleep(max(0.0, delay))
                await self._claim(run_id)

            self._tg.start_soon(wake)

    async def _execute(self, run: RunRecord, *, resend: bool) -> Outcome:
        if run.status != "running" or run.locked_by != self.worker_id:
            return Outcome("lost")
        fields = run_fields(run, self.worker_id)
        if run.recovery_attempts > self._cfg.max_recovery_attempts:
            return Outcome(
                "dead",
                error={
                    "type": "MaxRecoveryAttemptsExceeded",
                    "message": f"run {run.id} was recovered {run.recovery_attempts - 1} times"
                    f" after its worker died; giving up (max_recovery_attempts="
                    f"{self._cfg.max_recovery_attempts})",
                },
            )
        if run.recovery_attempts:
            log.info(
                "run %s: recovering after its worker's lease expired (recovery %d)",
                run.id,
                run.recovery_attempts,
                extra=fields,
            )
        try:
            wf = self._workflows.get(run.workflow, run.workflow_version)
        except WorkflowNotRegistered as exc:  # a store that ignored the claim's filter
            log.warning("run %s: %s; left for another worker", run.id, exc, extra=fields)
            return Outcome("release")
        history = await self.store.list_checkpoints(run.id)
        turn = Turn(
            run=run,
            history=history,
            store=self.store,
            transport=self.transport,
            owner=self.worker_id,
            clock=self._clock,
            lease=self._cfg.lease,
            draining=lambda: self._draining,
            resend=resend or run.recovery_attempts > 0,
        )
        try:
            return await turn.execute(wf)
        except InputValidationError as exc:
            return Outcome("failed", error=error_info(exc))


def _release_patch(outcome: Outcome) -> RunPatch:
    if outcome.status == "completed":
        return {
            "status": "completed",
            "output": outcome.output,
            "error": None,
            "wake_at": None,
            "recovery_attempts": 0,
        }
    if outcome.status in ("failed", "dead"):
        return {"status": outcome.status, "error": outcome.error, "wake_at": None}
    if outcome.status == "suspended":
        return {"status": "suspended", "wake_at": outcome.wake_at, "recovery_attempts": 0}
    if outcome.status in ("pending", "retry", "release"):
        return {"status": "pending"}
    return {}
