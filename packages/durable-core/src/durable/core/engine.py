"""``Engine``: starts runs, drives them on workers, serves remote steps, answers queries."""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio

from durable.core._time import Duration, to_seconds, utcnow
from durable.core._types import TERMINAL_STATUSES
from durable.core.codec import ANY_CODEC
from durable.core.context import Outcome, Turn, error_info
from durable.core.errors import (
    FatalError,
    InputValidationError,
    RunNotFound,
    StepNotRegistered,
    WorkflowNotRegistered,
)
from durable.core.records import ErrorInfo, RunPatch, RunQuery, RunRecord
from durable.core.steps import StepHandler, StepInfo, _current_step
from durable.core.transport import StepResult, StepTask
from durable.core.workflow import WorkflowDef, WorkflowRegistry

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType
    from typing import Self

    from durable.core._time import Clock
    from durable.core._types import AttributeValue, JSONValue, RunStatus
    from durable.core.store import StateStore
    from durable.core.transport import Transport


log = logging.getLogger("durable.engine")


@dataclass(frozen=True, slots=True)
class RunHandle:
    """What ``start`` returns: the run's id and its status when ``start`` returned."""

    run_id: str
    status: RunStatus
    created: bool


@dataclass(frozen=True, slots=True)
class Run:
    """A run as the engine reports it.

    ``output`` is decoded into the workflow's output type when the workflow is registered
    with this engine, and left as JSON otherwise.
    """

    id: str
    workflow: str
    version: str
    status: RunStatus
    input: JSONValue
    output: object
    error: ErrorInfo | None
    namespace: str
    tags: list[str]
    attributes: dict[str, AttributeValue]
    wake_at: datetime | None
    recovery_attempts: int
    created_at: datetime
    updated_at: datetime

    @property
    def done(self) -> bool:
        """Whether the run reached a terminal status."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RunList:
    """One page of ``list_runs``."""

    runs: list[Run]
    next_cursor: str | None = None


@dataclass(slots=True)
class _Settings:
    lease: float
    poll_interval: float
    max_recovery_attempts: int
    max_concurrent_runs: int
    shutdown_grace: float
    active: set[str] = field(default_factory=set)


class Engine:
    """The durable engine. Use as ``async with Engine(...) as engine:``.

    A driving engine (``drive=True``, the default) takes pending runs, replays them, renews
    their leases, recovers runs whose worker died, and wakes due timers. A client-only engine
    (``drive=False``) only starts, signals, cancels and reads runs.
    """

    def __init__(
        self,
        store: StateStore,
        transport: Transport | None = None,
        *,
        workflows: Iterable[WorkflowDef[Any, Any]] = (),
        steps: Iterable[StepHandler[Any, Any]] = (),
        namespace: str = "default",
        auto_schema: bool = True,
        drive: bool = True,
        lease: Duration = 30,
        poll_interval: Duration = 1.0,
        max_recovery_attempts: int = 10,
        max_concurrent_runs: int = 100,
        shutdown_grace: Duration = 10,
        worker_id: str | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.transport = transport
        self.namespace = namespace
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._workflows = WorkflowRegistry(workflows)
        self._handlers: dict[str, StepHandler[Any, Any]] = {}
        for handler in steps:
            if handler.definition.name in self._handlers:
                raise ValueError(f"two handlers for remote step {handler.definition.name!r}")
            self._handlers[handler.definition.name] = handler
        self._auto_schema = auto_schema
        self._drive = drive
        self._clock = clock
        self._cfg = _Settings(
            lease=to_seconds(lease),
            poll_interval=to_seconds(poll_interval),
            max_recovery_attempts=max_recovery_attempts,
            max_concurrent_runs=max_concurrent_runs,
            shutdown_grace=to_seconds(shutdown_grace),
        )
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._poke = anyio.Event()
        self._changed = anyio.Event()
        self._idle = anyio.Event()
        self._draining = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this Engine is already running")
        if self._auto_schema:
            await self.store.ensure_schema()
        self._draining = False
        stack = AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        if self.transport is not None and (self._drive or self._handlers):
            self._tg.start_soon(self.transport.serve, self)
        if self._drive:
            self._tg.start_soon(self._poll_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
            return
        self._draining = True
        with anyio.move_on_after(self._cfg.shutdown_grace, shield=True):
            while self._cfg.active:
                self._idle = anyio.Event()
                await self._idle.wait()
        tg.cancel_scope.cancel()
        self._stack = self._tg = None
        await stack.aclose()

    async def serve(self) -> None:
        """Run this engine as a worker until cancelled, then shut down gracefully."""
        if self._stack is not None:
            await anyio.sleep_forever()
        async with self:
            await anyio.sleep_forever()

    @property
    def served_steps(self) -> frozenset[str]:
        """Names of the remote steps this engine has handlers for."""
        return frozenset(self._handlers)

    @property
    def drives_runs(self) -> bool:
        """Whether this engine executes runs."""
        return self._drive

    # -- client API -----------------------------------------------------------------------------

    async def start(
        self,
        workflow: str | WorkflowDef[Any, Any],
        input: object = None,
        *,
        run_id: str | None = None,
        tags: Sequence[str] = (),
        attributes: dict[str, AttributeValue] | None = None,
        version: str | None = None,
    ) -> RunHandle:
        """Create a run ``pending`` and return at once; a worker executes it.

        A repeated ``run_id`` returns the existing run and creates nothing.

        Raises:
            WorkflowNotRegistered: The workflow (or version) is unknown.
            InputValidationError: ``input`` does not fit the workflow's input type; nothing
                is created.
        """
        name = workflow if isinstance(workflow, str) else workflow.name
        if version is None and not isinstance(workflow, str):
            version = workflow.version
        wf = self._workflows.get(name, version) if version else self._workflows.latest(name)
        subject = f"workflow {name!r} input"
        payload = wf.input_codec.encode(wf.input_codec.validate(input, subject), subject)
        now = self._clock()
        run = RunRecord(
            id=run_id or uuid.uuid4().hex,
            workflow=wf.name,
            workflow_version=wf.version,
            status="pending",
            input=payload,
            created_at=now,
            updated_at=now,
            namespace=self.namespace,
            tags=list(dict.fromkeys(tags)),
            attributes=dict(attributes or {}),
        )
        if not await self.store.create_run(run):
            existing = await self.store.get_run(run.id)
            if existing is None:  # deleted in between: the id is free again
                return await self.start(wf, input, run_id=run.id, tags=tags, attributes=attributes)
            return RunHandle(existing.id, existing.status, created=False)
        await self._nudge(run.id)
        return RunHandle(run.id, "pending", created=True)

    async def signal(self, token: str, payload: object = None) -> None:
        """Deliver ``payload`` to the run waiting on ``token``, or buffer it (FIFO per token).

        Once this returns the signal is durable and will be delivered exactly once.
        """
        data = ANY_CODEC.encode(payload, f"signal {token!r} payload")
        now = self._clock()
        await self.store.buffer_signal(token, data, now)
        waiter = await self.store.pair_signal(token, now)
        if waiter is not None:
            await self._nudge(waiter.run_id)

    async def signal_with_start(
        self,
        workflow: str | WorkflowDef[Any, Any],
        input: object,
        *,
        run_id: str,
        token: str,
        payload: object = None,
        tags: Sequence[str] = (),
        version: str | None = None,
    ) -> RunHandle:
        """Start the run if it does not exist (idempotent on ``run_id``), then signal it."""
        handle = await self.start(workflow, input, run_id=run_id, tags=tags, version=version)
        await self.signal(token, payload)
        return handle

    async def get_run(self, run_id: str) -> Run:
        """The run.

        Raises:
            RunNotFound: No run has that id.
        """
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}")
        return self._view(record)

    async def wait_for_run(
        self,
        run_id: str,
        timeout: Duration | None = None,
        *,
        until: Literal["settled", "terminal"] = "settled",
    ) -> Run:
        """Wait until the run is terminal, or (``until="settled"``) suspended.

        Raises:
            RunNotFound: No run has that id.
            TimeoutError: ``timeout`` passed first.
        """
        wanted: frozenset[str] = (
            TERMINAL_STATUSES if until == "terminal" else TERMINAL_STATUSES | {"suspended"}
        )
        poll = min(self._cfg.poll_interval, 0.25)
        with anyio.fail_after(None if timeout is None else to_seconds(timeout)):
            while True:
                changed = self._changed
                run = await self.get_run(run_id)
                if run.status in wanted:
                    return run
                with anyio.move_on_after(poll):
                    await changed.wait()

    async def list_runs(
        self,
        *,
        status: RunStatus | Iterable[RunStatus] | None = None,
        workflow: str | None = None,
        tags: Iterable[str] = (),
        attributes: dict[str, AttributeValue] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunList:
        """Runs of this engine's namespace, newest first, a page at a time."""
        statuses = (
            None if status is None else frozenset([status] if isinstance(status, str) else status)
        )
        page = await self.store.list_runs(
            RunQuery(
                namespace=self.namespace,
                statuses=statuses,
                workflow=workflow,
                tags=frozenset(tags),
                attributes=dict(attributes or {}),
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        )
        return RunList([self._view(r) for r in page.runs], page.next_cursor)

    async def cancel(self, run_id: str) -> Run:
        """Cancel a run.

        A pending or suspended run is cancelled at once; a running one is marked cancelled
        at once and its worker stops at its next checkpoint boundary (the in-flight step's
        result is discarded). A finished run is left as it is.

        Raises:
            RunNotFound: No run has that id.
        """
        await self.store.update_run(
            run_id,
            if_status=("pending", "suspended", "running"),
            status="cancelled",
            error={"type": "Cancelled", "message": "cancelled by request"},
            wake_at=None,
        )
        self._notify()
        return await self.get_run(run_id)

    # -- transport receiver ---------------------------------------------------------------------

    async def handle_nudge(self, run_id: str) -> None:
        """Try to take a run that just became pending."""
        if self._drive:
            await self._claim(run_id)

    async def handle_result(self, result: StepResult) -> None:
        """Record a remote step's result and wake its run; drop duplicates and stale ones."""
        cp = await self.store.get_checkpoint(result.run_id, result.seq)
        if cp is None or cp.kind != "remote" or cp.step_id != result.step_id:
            return
        if cp.status != "pending":
            return
        current = f"{cp.step_id}:{cp.attempts}"
        if not result.ok and result.task_id != current:
            return  # a failure of an earlier attempt; the current one is still out
        now = self._clock()
        cp.finished_at = now
        cp.wake_at = None
        if result.ok:
            cp.status, cp.output = "completed", result.output
        else:
            cp.status, cp.error = "failed", result.error or {"type": "Error", "message": ""}
        await self.store.save_checkpoint(cp)
        if await self.store.wake_run(result.run_id):
            await self._nudge(result.run_id)

    async def handle_task(self, task: StepTask) -> StepResult:
        """Run a remote step's handler and report its outcome (never raises)."""
        started = self._clock().isoformat()
        handler = self._handlers.get(task.step)

        def result(
            ok: bool, output: JSONValue = None, error: ErrorInfo | None = None
        ) -> StepResult:
            return StepResult(
                task_id=task.task_id,
                run_id=task.run_id,
                step_id=task.step_id,
                seq=task.seq,
                ok=ok,
                output=output,
                error=error,
                started_at=started,
                finished_at=self._clock().isoformat(),
                worker_id=self.worker_id,
            )

        if handler is None:
            exc = StepNotRegistered(f"no handler for remote step {task.step!r} here")
            return result(False, error={**error_info(exc), "retryable": False})
        definition = handler.definition
        try:
            value = definition.input_codec.decode(task.input, f"remote step {task.step!r} input")
        except InputValidationError as exc:
            return result(False, error={**error_info(exc), "retryable": False})
        token = _current_step.set(StepInfo(task.run_id, task.step_id, task.seq, task.attempt))
        try:
            if handler.is_async:
                out = await handler.fn(value)
            else:
                out = await anyio.to_thread.run_sync(functools.partial(handler.fn, value))
            subject = f"remote step {task.step!r} output"
            output = definition.output_codec.encode(
                definition.output_codec.validate(out, subject), subject
            )
            return result(True, output=output)
        except (FatalError, InputValidationError) as exc:
            return result(False, error={**error_info(exc), "retryable": False})
        except Exception as exc:  # noqa: BLE001 - handler code may raise anything
            return result(False, error={**error_info(exc), "retryable": True})
        finally:
            _current_step.reset(token)

    # -- driving --------------------------------------------------------------------------------

    async def _nudge(self, run_id: str) -> None:
        if self._drive and self._tg is not None and not self._draining:
            self._tg.start_soon(self._claim, run_id)
        elif self.transport is not None:
            await self.transport.nudge(run_id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _poll_loop(self) -> None:
        while not self._draining:
            try:
                await self._tick()
            except Exception:  # a worker outlives a database outage
                log.exception("worker %s: poll failed; retrying", self.worker_id)
            with anyio.move_on_after(self._cfg.poll_interval):
                await self._poke.wait()
            self._poke = anyio.Event()

    async def _tick(self) -> None:
        ns, now = self.namespace, self._clock()
        free = self._cfg.max_concurrent_runs - len(self._cfg.active)
        if free <= 0:
            return
        for run in await self.store.list_pending_runs(free, ns):
            await self._claim(run.id)
        for run in await self.store.list_due_timers(now, ns, free):
            await self._claim(run.id)
        for run in await self.store.list_incomplete_runs(now, ns):
            await self._claim(run.id)
        for token in await self.store.list_pairable_tokens(free):
            waiter = await self.store.pair_signal(token, now)
            if waiter is not None:
                await self._claim(waiter.run_id)

    async def _claim(self, run_id: str) -> None:
        cfg = self._cfg
        if run_id in cfg.active or len(cfg.active) >= cfg.max_concurrent_runs or self._draining:
            return
        now = self._clock()
        cfg.active.add(run_id)
        try:
            locked = await self.store.try_lock_run(
                run_id, self.worker_id, now + timedelta(seconds=cfg.lease), now
            )
        except BaseException:
            cfg.active.discard(run_id)
            raise
        if not locked or self._tg is None:
            cfg.active.discard(run_id)
            return
        self._tg.start_soon(self._drive_run, run_id)

    async def _drive_run(self, run_id: str) -> None:
        try:
            while True:
                try:
                    status = await self._turn(run_id)
                except Exception:  # its lease expires and the run is recovered
                    log.exception("worker %s: run %s failed to execute", self.worker_id, run_id)
                    return
                self._notify()
                if status != "pending" or self._draining:
                    return
                now = self._clock()
                until = now + timedelta(seconds=self._cfg.lease)
                if not await self.store.try_lock_run(run_id, self.worker_id, until, now):
                    return
        finally:
            cfg = self._cfg
            cfg.active.discard(run_id)
            self._idle.set()
            if len(cfg.active) == cfg.max_concurrent_runs - 1:
                self._poke.set()  # a slot opened in a full worker: look for more work now

    async def _turn(self, run_id: str) -> RunStatus | None:
        """Execute one turn of a run this worker has just locked; returns its new status."""
        outcome: Outcome | None = None
        status: RunStatus | None = None
        try:
            run = await self.store.get_run(run_id)
            if run is None:
                return None
            outcome = await self._execute(run)
        finally:
            # Shielded so a cancelled turn still releases its lease; bounded so a dead
            # database cannot hold shutdown forever (the lease then simply expires).
            with anyio.move_on_after(self._cfg.lease, shield=True):
                ended = outcome or Outcome("pending")
                status = await self.store.release_run_lock(
                    run_id, self.worker_id, checkpoints=ended.checkpoints, **_release_patch(ended)
                )
        if status == "suspended" and outcome is not None and outcome.wake_at is not None:
            self._wake_soon(run_id, outcome.wake_at)
        return status

    def _wake_soon(self, run_id: str, wake_at: datetime) -> None:
        """Claim a run at its wake time when that comes before the next poll."""
        delay = (wake_at - self._clock()).total_seconds()
        if self._tg is not None and delay < self._cfg.poll_interval:

            async def wake() -> None:
                await anyio.sleep(max(0.0, delay))
                await self._claim(run_id)

            self._tg.start_soon(wake)

    async def _execute(self, run: RunRecord) -> Outcome:
        if run.status != "running":
            return Outcome("lost")
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
        try:
            wf = self._workflows.get(run.workflow, run.workflow_version)
        except WorkflowNotRegistered as exc:
            return Outcome("failed", error={**error_info(exc), "retryable": False})
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
        )
        try:
            return await turn.execute(wf)
        except InputValidationError as exc:
            return Outcome("failed", error=error_info(exc))

    def _view(self, record: RunRecord) -> Run:
        output: object = record.output
        if record.status == "completed":
            try:
                wf = self._workflows.get(record.workflow, record.workflow_version)
                output = wf.output_codec.decode(record.output, f"workflow {wf.name!r} output")
            except (WorkflowNotRegistered, InputValidationError):
                output = record.output
        return Run(
            id=record.id,
            workflow=record.workflow,
            version=record.workflow_version,
            status=record.status,
            input=record.input,
            output=output,
            error=record.error,
            namespace=record.namespace,
            tags=record.tags,
            attributes=record.attributes,
            wake_at=record.wake_at,
            recovery_attempts=record.recovery_attempts,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


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
    if outcome.status == "pending":
        return {"status": "pending"}
    return {}
