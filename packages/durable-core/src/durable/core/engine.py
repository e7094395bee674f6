"""``Engine``: starts runs, drives them on workers, serves remote steps, answers queries."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal

import anyio

from durable.core._branches import tracking
from durable.core._limits import check_key
from durable.core._logs import Throttle
from durable.core._serving import serve_task
from durable.core._time import Duration, to_seconds, utcnow
from durable.core._turn import REFUSED, error_info
from durable.core._types import TERMINAL_STATUSES
from durable.core._views import Run, RunHandle, RunList, run_view
from durable.core._watch import RunWatch
from durable.core._worker import Settings, WorkerLoop
from durable.core.codec import ANY_CODEC
from durable.core.errors import (
    EngineNotRunningError,
    RunConflictError,
    RunNotFound,
    StoreUnavailableError,
)
from durable.core.records import RunQuery, RunRecord
from durable.core.workflow import WorkflowDef, WorkflowRegistry

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime
    from types import TracebackType
    from typing import Self

    from durable.core._time import Clock
    from durable.core._types import AttributeValue, CheckpointStatus, RunStatus
    from durable.core.steps import StepHandler
    from durable.core.store import StateStore
    from durable.core.transport import StepResult, StepTask, Transport


log = logging.getLogger("durable.engine")


class Engine(WorkerLoop):
    """The durable engine. Use as ``async with Engine(...) as engine:``.

    A driving engine (``drive=True``, the default) takes pending runs, replays them, renews
    their leases, recovers runs whose worker died, and wakes due timers. It only ever takes
    runs of its own namespace whose workflow *and version* it has registered; other runs wait
    for a worker that has them. A client-only engine (``drive=False``) only starts, signals,
    cancels and reads runs.
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
        self.namespace = check_key(namespace, "namespace")
        self.worker_id = check_key(
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            "worker_id",
        )
        self._workflows = WorkflowRegistry(workflows)
        self._handlers: dict[str, StepHandler[Any, Any]] = {}
        for handler in steps:
            if handler.definition.name in self._handlers:
                raise ValueError(f"two handlers for remote step {handler.definition.name!r}")
            self._handlers[handler.definition.name] = handler
        self._auto_schema = auto_schema
        self._drive = drive
        self._clock = clock
        self._cfg = Settings(
            lease=to_seconds(lease),
            poll_interval=to_seconds(poll_interval),
            max_recovery_attempts=max_recovery_attempts,
            max_concurrent_runs=max_concurrent_runs,
            shutdown_grace=to_seconds(shutdown_grace),
        )
        if self._cfg.lease <= 0 or self._cfg.poll_interval <= 0:
            raise ValueError("lease and poll_interval must be positive durations")
        self._runnable = self._workflows.versions()
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._watch = RunWatch(
            store, min(self._cfg.poll_interval, 0.25), held=self._cfg.active.__contains__
        )
        self._throttle = Throttle(log)
        self._stranded: set[tuple[str, str]] = set()
        self._draining = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this Engine is already running")
        if self._auto_schema:
            await self.store.ensure_schema()
        else:
            await self._check_schema()
        self._draining = False
        self._poke = anyio.Event()
        self._idle = anyio.Event()
        stack = AsyncExitStack()
        if _on_asyncio():
            stack.enter_context(tracking())  # turns learn which tasks their branches create
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
            while True:
                idle = self._idle = anyio.Event()
                if not self._cfg.active and not self._cfg.serving:
                    break
                await idle.wait()
        tg.cancel_scope.cancel()
        self._stack = self._tg = None
        await stack.aclose()

    async def _check_schema(self) -> None:
        """With ``auto_schema=False``, fail now if the durable tables are missing.

        Raises:
            SchemaMissingError: A table is missing (raised by the store).
        """
        await self.store.get_run("-")
        await self.store.get_checkpoint("-", 0)
        await self.store.list_pairable_tokens(1)
        await self.store.list_runs(RunQuery(attributes={"-": "-"}, limit=1))

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

    def _running(self, what: str) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise EngineNotRunningError(
                f"Engine.{what}() needs a running engine: use it inside `async with engine:`"
            )
        return self._tg

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

        A repeated ``run_id`` returns the existing run of that workflow and creates nothing.

        Raises:
            WorkflowNotRegistered: The workflow (or version) is unknown.
            InputValidationError: ``input`` does not fit the workflow's input type; nothing
                is created.
            RunConflictError: ``run_id`` belongs to a run of another workflow.
            ValueError: ``run_id``, a tag or an attribute key is empty or too long.
            EngineNotRunningError: Called outside ``async with engine``.
        """
        self._running("start")
        name = workflow if isinstance(workflow, str) else workflow.name
        if version is None and not isinstance(workflow, str):
            version = workflow.version
        wf = self._workflows.get(name, version) if version else self._workflows.latest(name)
        if run_id is not None:
            check_key(run_id, "run_id")
        for tag in tags:
            check_key(tag, "tag")
        for key in attributes or {}:
            check_key(key, "attribute key")
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
            if existing.workflow != wf.name:
                raise RunConflictError(run.id, existing.workflow, wf.name)
            return RunHandle(
                existing.id, existing.status, False, existing.workflow, existing.workflow_version
            )
        self._watch.report(run.id, "pending")
        await self._nudge(run.id)
        return RunHandle(run.id, "pending", True, wf.name, wf.version)

    async def signal(self, token: str, payload: object = None) -> None:
        """Deliver ``payload`` to the run waiting on ``token``, or buffer it (FIFO per token).

        Once this returns the signal is durable and will be delivered exactly once.

        Raises:
            ValueError: ``token`` is empty or too long.
            SerializationError: ``payload`` cannot be stored as JSON.
            EngineNotRunningError: Called outside ``async with engine``.
        """
        self._running("signal")
        check_key(token, "signal token")
        data = ANY_CODEC.encode(payload, f"signal {token!r} payload")
        now = self._clock()
        await self.store.buffer_signal(token, data, now)
        waiter = await self.store.pair_signal(token, now)
        if waiter is not None:
            self._watch.report(waiter.run_id, "pending")
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
        check_key(token, "signal token")
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
        return run_view(record, self._workflows)

    async def wait_for_run(
        self,
        run_id: str,
        timeout: Duration | None = None,
        *,
        until: Literal["settled", "terminal"] = "settled",
    ) -> Run:
        """Wait until the run is terminal, or (``until="settled"``) suspended.

        A waiter costs nothing while its run does not change: this engine's own transitions
        wake it, and runs driven elsewhere are read by one shared poll for every waiter. A
        store outage is waited out (within ``timeout``).

        Raises:
            RunNotFound: No run has that id.
            TimeoutError: ``timeout`` passed first (names the run and its status).
            ValueError: ``until`` is neither ``"settled"`` nor ``"terminal"``.
            EngineNotRunningError: Called outside ``async with engine``.
        """
        if until not in ("settled", "terminal"):
            raise ValueError(f"wait_for_run(until={until!r}): use 'settled' or 'terminal'")
        tg = self._running("wait_for_run")
        wanted: frozenset[str] = (
            TERMINAL_STATUSES if until == "terminal" else TERMINAL_STATUSES | {"suspended"}
        )
        seen = "unread"  # for the timeout's message
        with anyio.move_on_after(None if timeout is None else to_seconds(timeout)):
            run = await self._read(run_id)
            status: RunStatus = run.status
            while status not in wanted:
                seen = status
                status, record = await self._watch.next_change(run_id, status, tg)
                if status in wanted:
                    run = (
                        run_view(record, self._workflows)
                        if record is not None
                        else await self._read(run_id)
                    )
                    status = run.status
            return run
        raise TimeoutError(
            f"run {run_id!r} is still {seen!r} after {to_seconds(timeout or 0)}s"
            f" (waited until {until})"
        )

    async def _read(self, run_id: str) -> Run:
        """``get_run``, riding out a store outage (the waiter's timeout bounds it)."""
        delay = 0.05
        while True:
            try:
                return await self.get_run(run_id)
            except StoreUnavailableError as exc:
                self._throttle.log(
                    "read", logging.WARNING, "reading run %s: %s; retrying", run_id, exc
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)

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
        return RunList([run_view(r, self._workflows) for r in page.runs], page.next_cursor)

    async def cancel(self, run_id: str) -> Run:
        """Cancel a run.

        A pending or suspended run is cancelled at once; a running one is marked cancelled
        at once and its worker stops at its next checkpoint boundary: no step starts after
        the cancel is recorded (the in-flight step's result is discarded). A finished run is
        left as it is.

        Raises:
            RunNotFound: No run has that id.
            EngineNotRunningError: Called outside ``async with engine``.
        """
        self._running("cancel")
        await self.store.update_run(
            run_id,
            if_status=("pending", "suspended", "running"),
            status="cancelled",
            error={"type": "Cancelled", "message": "cancelled by request"},
            wake_at=None,
        )
        run = await self.get_run(run_id)
        self._watch.report(run_id, run.status)
        return run

    # -- transport receiver ---------------------------------------------------------------------

    async def handle_nudge(self, run_id: str) -> None:
        """Try to take a run that just became pending (never raises)."""
        if self._drive:
            await self._claim(run_id)

    async def handle_result(self, result: StepResult) -> None:
        """Record a remote step's result and wake its run (never raises).

        A store fault is retried with backoff for up to one lease; after that the result is
        dropped and the step dispatched again at its deadline. Duplicates and stale results
        are dropped: the write is a compare-and-set on the attempt the checkpoint is waiting
        for, so a result never overwrites a checkpoint the workflow already saw finish (a
        timeout, an earlier result).
        """
        delay = 0.05
        with anyio.move_on_after(self._cfg.lease):
            while True:
                try:
                    woken = await self._record_result(result)
                    break
                except Exception as exc:  # noqa: BLE001 - a brief fault: try again
                    self._throttle.log(
                        "result",
                        logging.WARNING,
                        "worker %s: could not record the result of step %s of run %s (%s: %s);"
                        " retrying",
                        self.worker_id,
                        result.step_id,
                        result.run_id,
                        type(exc).__qualname__,
                        exc,
                    )
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
            if woken:
                self._watch.report(result.run_id, "pending")
                await self._nudge(result.run_id)
            return
        log.warning(
            "worker %s: gave up recording the result of step %s of run %s; the step is"
            " dispatched again at its deadline",
            self.worker_id,
            result.step_id,
            result.run_id,
        )

    async def _record_result(self, result: StepResult) -> bool:
        cp = await self.store.get_checkpoint(result.run_id, result.seq)
        if cp is None or cp.kind != "remote" or cp.step_id != result.step_id:
            return False
        if cp.status != "pending":
            return False
        if not result.ok and result.task_id != f"{cp.step_id}:{cp.attempts}":
            return False  # a failure of an earlier attempt; the current one is still out
        seen: tuple[CheckpointStatus, int] = ("pending", cp.attempts)
        cp.finished_at = max(self._clock(), cp.started_at)
        cp.wake_at = None
        if result.ok:
            cp.status, cp.output = "completed", result.output
        else:
            cp.status, cp.error = "failed", result.error or {"type": "Error", "message": ""}
        try:
            written = await self.store.save_checkpoint(cp, expect=seen)
        except REFUSED as exc:  # the output cannot be stored: the step fails for good
            cp.status, cp.output = "failed", None
            cp.error = {**error_info(exc), "retryable": False}
            written = await self.store.save_checkpoint(cp, expect=seen)
        return written and await self.store.wake_run(result.run_id)

    async def handle_task(self, task: StepTask) -> StepResult:
        """Run a remote step's handler and report its outcome (never raises).

        A shutdown waits for running handlers up to ``shutdown_grace``; a sync handler still
        running then is abandoned in its thread (its task is delivered again elsewhere).
        """
        self._cfg.serving += 1
        try:
            return await serve_task(
                self._handlers.get(task.step), task, self.worker_id, self._clock
            )
        finally:
            self._cfg.serving -= 1
            self._idle.set()

    # -- driving --------------------------------------------------------------------------------

    async def _nudge(self, run_id: str) -> None:
        if self._drive and self._tg is not None and not self._draining:
            self._tg.start_soon(self._claim, run_id)
        elif self.transport is not None:
            try:
                await self.transport.nudge(run_id)
            except Exception as exc:  # noqa: BLE001 - a nudge is best effort; the poll finds it
                self._throttle.log(
                    "nudge", logging.WARNING, "could not nudge run %s: %s", run_id, exc
                )


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
