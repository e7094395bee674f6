"""``WorkflowCtx``: the durable calls a workflow makes, and one execution ("turn") of a run.

A turn replays the workflow from the top against the run's checkpoints, read once. Each
``ctx`` call takes the next sequence number synchronously, at call time, so concurrent calls
(task groups, ``asyncio.gather``) number themselves in call order on every worker. A call that
must wait (sleep, signal, remote step) parks; when every branch of the workflow is parked, the
turn ends and the run is suspended until the earliest wake time or the awaited event.
"""

from __future__ import annotations

import functools
import inspect
import random as _random
import traceback
import uuid
import weakref
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, overload

import anyio
import anyio.lowlevel

from durable.core._time import Duration, to_timedelta
from durable.core.codec import ANY_CODEC, Codec, codec_for, return_codec
from durable.core.errors import (
    FatalError,
    InputValidationError,
    NonDeterminismError,
    RemoteStepError,
    SerializationError,
    SignalPayloadError,
    SignalTimeoutError,
    StepFailedError,
)
from durable.core.records import CheckpointRecord, ErrorInfo, SignalWaiter
from durable.core.steps import DEFAULT_OPTIONS, RemoteStepDef, StepDef, StepOptions, make_options
from durable.core.transport import StepTask

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from durable.core._time import Clock
    from durable.core._types import CheckpointKind, JSONValue
    from durable.core.records import RunRecord
    from durable.core.steps import Backoff
    from durable.core.store import StateStore
    from durable.core.transport import Transport
    from durable.core.workflow import WorkflowDef

R = TypeVar("R")
T = TypeVar("T")


class _Fenced(BaseException):
    """This worker no longer owns the run (lease lost, or the run was cancelled)."""


def error_info(exc: BaseException) -> ErrorInfo:
    """The stored form of an exception."""
    info: ErrorInfo = {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }
    if isinstance(exc, FatalError):
        info["retryable"] = False
    return info


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a turn ended; becomes the patch of the lease release."""

    status: Literal["completed", "failed", "dead", "suspended", "pending", "lost"]
    output: JSONValue = None
    error: ErrorInfo | None = None
    wake_at: datetime | None = None
    checkpoints: tuple[CheckpointRecord, ...] = ()
    """Checkpoints the release writes (fenced like every other)."""


class Turn:
    """One execution of a run by the worker that holds its lease."""

    def __init__(
        self,
        *,
        run: RunRecord,
        history: list[CheckpointRecord],
        store: StateStore,
        transport: Transport | None,
        owner: str,
        clock: Clock,
        lease: float,
        draining: Callable[[], bool],
    ) -> None:
        self.run = run
        self.history = {cp.seq: cp for cp in history}
        self.store = store
        self.transport = transport
        self.owner = owner
        self.clock = clock
        self.lease = lease
        self._draining = draining
        self._seq = 0
        self._in_flight = 0
        self._parked = 0
        self._earliest: datetime | None = None
        self._requeue = False
        self._fatal: BaseException | None = None
        self._changed = anyio.Event()
        self._outcome: Outcome | None = None
        self._deferred: list[CheckpointRecord] = []
        self._scope: anyio.CancelScope | None = None
        self.ctx = WorkflowCtx(self)

    # -- running --------------------------------------------------------------------------------

    async def execute(self, wf: WorkflowDef[Any, Any]) -> Outcome:
        """Run the workflow body until it returns, fails, or every branch is parked."""
        arg = wf.input_codec.decode(self.run.input, f"workflow {wf.name!r} input")
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            tg.start_soon(self._body, wf, arg)
            tg.start_soon(self._watch)
            tg.start_soon(self._renew)
        assert self._outcome is not None
        if self._deferred:
            return replace(self._outcome, checkpoints=tuple(self._deferred))
        return self._outcome

    def _settle(self, outcome: Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            if self._scope is not None:
                self._scope.cancel()

    async def _body(self, wf: WorkflowDef[Any, Any], arg: object) -> None:
        subject = f"workflow {wf.name!r} output"
        try:
            result = await wf(self.ctx, arg)
            outcome = Outcome("completed", output=wf.output_codec.encode(result, subject))
        except BaseException as exc:  # sorted below; cancellation is re-raised
            if _contains(exc, _Fenced):
                outcome = Outcome("lost")
            elif isinstance(exc, Exception):  # the workflow's own failure ends the run
                outcome = Outcome("failed", error=error_info(exc))
            else:
                raise
        if self._fatal is not None:
            outcome = Outcome("failed", error=error_info(self._fatal))
        self._settle(outcome)

    async def _watch(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            if not self._quiescent():
                continue
            for _ in range(4):  # let branches that were just resumed reach their next call
                await anyio.lowlevel.cancel_shielded_checkpoint()
            if self._quiescent():
                if self._requeue:
                    self._settle(Outcome("pending"))
                else:
                    self._settle(Outcome("suspended", wake_at=self._earliest))
                return

    def _quiescent(self) -> bool:
        return self._in_flight == 0 and self._parked > 0

    async def _renew(self) -> None:
        while True:
            await anyio.sleep(self.lease / 2)
            until = self.clock() + timedelta(seconds=self.lease)
            if not await self.store.renew_run_lock(self.run.id, self.owner, until):
                self._settle(Outcome("lost"))
                return

    # -- helpers for primitives -----------------------------------------------------------------

    def next_seq(self) -> int:
        """Take the next sequence number (synchronously, at call time)."""
        seq = self._seq
        self._seq += 1
        return seq

    def expect(self, seq: int, kind: CheckpointKind, name: str) -> CheckpointRecord | None:
        """The recorded checkpoint at ``seq``, checked against the call made now."""
        cp = self.history.get(seq)
        if cp is not None and (cp.kind != kind or cp.name != name):
            err = NonDeterminismError(
                self.run.id, seq, f"{cp.kind} {cp.name!r}", f"{kind} {name!r}"
            )
            self._fatal = self._fatal or err
            raise err
        return cp

    def begin(self) -> None:
        """A primitive starts doing work that the turn must wait for."""
        self._in_flight += 1
        if self._draining():
            self._requeue = True

    def end(self) -> None:
        """That work is done; the turn may now be quiescent (only if a branch is parked)."""
        self._in_flight -= 1
        if self._parked:
            self._changed.set()

    async def park(self, wake_at: datetime | None) -> NoReturn:
        """Wait until the turn ends; the run resumes at ``wake_at`` or when woken."""
        if wake_at is not None and (self._earliest is None or wake_at < self._earliest):
            self._earliest = wake_at
        self._parked += 1
        self._changed.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def boundary(self) -> None:
        """A checkpoint boundary: when the engine drains, stop here and requeue the run."""
        if self._requeue:
            await self.park(None)

    async def save(self, cp: CheckpointRecord) -> None:
        """Write a checkpoint fenced by this worker's lease."""
        if not await self.store.save_checkpoint(cp, owner=self.owner):
            raise _Fenced
        self.history[cp.seq] = cp

    def checkpoint(
        self, seq: int, name: str, kind: CheckpointKind, **values: Any
    ) -> CheckpointRecord:
        """A checkpoint record of this run at ``seq``."""
        now = self.clock()
        return CheckpointRecord(
            run_id=self.run.id,
            seq=seq,
            name=name,
            kind=kind,
            step_id=f"{self.run.id}:{seq}",
            started_at=values.pop("started_at", now),
            **values,
        )

    # -- primitives -----------------------------------------------------------------------------

    async def local(
        self,
        seq: int,
        name: str,
        call: Callable[[], Awaitable[Any]],
        options: StepOptions,
        codec: Codec[Any],
    ) -> Any:
        """Run a local step, or return its recorded result."""
        cp = self.expect(seq, "local", name)
        if cp is not None:
            if cp.status == "completed":
                return codec.decode(cp.output, f"step {name!r} result")
            if cp.status == "failed":
                raise _step_failed(StepFailedError, name, cp)
        self.begin()
        try:
            await self.boundary()
            started = self.clock()
            attempt = 0
            failure: BaseException | None = None
            while True:
                attempt += 1
                try:
                    if options.timeout is not None:
                        with anyio.fail_after(options.timeout):
                            result = await call()
                    else:
                        result = await call()
                    output = codec.encode(result, f"step {name!r} result")
                    break
                except (FatalError, SerializationError) as exc:
                    failure = exc
                except Exception as exc:  # noqa: BLE001 - step code may raise anything
                    failure = exc
                    if attempt <= options.retries:
                        await anyio.sleep(options.backoff.delay(attempt, f"{self.run.id}:{seq}"))
                        continue
                break
            finished = self.clock()
            if failure is None:
                record = self.checkpoint(
                    seq,
                    name,
                    "local",
                    status="completed",
                    output=output,
                    attempts=attempt,
                    started_at=started,
                    finished_at=finished,
                )
            else:
                record = self.checkpoint(
                    seq,
                    name,
                    "local",
                    status="failed",
                    error=error_info(failure),
                    attempts=attempt,
                    started_at=started,
                    finished_at=finished,
                )
            await self.save(record)
        finally:
            self.end()
        if failure is not None:
            raise _step_failed(StepFailedError, name, record) from failure
        return result

    async def sleep_until(self, seq: int, until: datetime | None, delta: timedelta | None) -> None:
        """Record a wake time once and park until it."""
        cp = self.expect(seq, "sleep", "sleep")
        if cp is None:
            self.begin()
            try:
                await self.boundary()
                wake_at = until if until is not None else self.clock() + (delta or timedelta())
                record = self.checkpoint(seq, "sleep", "sleep", status="pending", wake_at=wake_at)
                if self._in_flight == 1 and self.clock() < wake_at:
                    # Nothing else is working: this sleep ends the turn, and the release that
                    # suspends the run writes its checkpoint too (one commit, not two). If the
                    # worker dies first, the sleep starts over on recovery.
                    self.history[seq] = record
                    self._deferred.append(record)
                else:
                    await self.save(record)
            finally:
                self.end()
        else:
            wake_at = cp.wake_at or self.clock()
        if self.clock() < wake_at:
            await self.park(wake_at)

    async def wait_signal(
        self, seq: int, token: str, codec: Codec[T], timeout: timedelta | None
    ) -> T:
        """Return a signal's payload, waiting for it if needed."""
        cp = self.expect(seq, "signal", token)
        if cp is None or cp.status not in ("completed", "failed"):
            cp = await self._await_signal(seq, token, cp, timeout)
        if cp.status == "failed":
            raise SignalTimeoutError(token)
        try:
            return codec.decode(cp.output, f"signal {token!r} payload")
        except InputValidationError as exc:
            raise SignalPayloadError(token, str(exc), exc.validation_error) from exc

    async def _await_signal(
        self, seq: int, token: str, cp: CheckpointRecord | None, timeout: timedelta | None
    ) -> CheckpointRecord:
        waiter = SignalWaiter(token, self.run.id, seq)
        self.begin()
        try:
            await self.boundary()
            deadline = cp.wake_at if cp is not None else None
            if cp is None and timeout is not None:
                deadline = self.clock() + timeout
                await self.save(
                    self.checkpoint(seq, token, "signal", status="pending", wake_at=deadline)
                )
            if deadline is not None and self.clock() >= deadline:
                return await self._time_out_signal(seq, token, waiter)
            await self.store.put_signal_waiter(waiter)
            if await self.store.pair_signal(token, self.clock(), holder=self.owner) == waiter:
                delivered = await self.store.get_checkpoint(self.run.id, seq)
                if delivered is not None and delivered.status == "completed":
                    return delivered
        finally:
            self.end()
        await self.park(deadline)

    async def _time_out_signal(
        self, seq: int, token: str, waiter: SignalWaiter
    ) -> CheckpointRecord:
        if not await self.store.remove_signal_waiter(waiter):
            delivered = await self.store.get_checkpoint(self.run.id, seq)
            if delivered is not None and delivered.status == "completed":
                return delivered
        record = self.checkpoint(
            seq,
            token,
            "signal",
            status="failed",
            finished_at=self.clock(),
            error={"type": "SignalTimeoutError", "message": f"no signal {token!r} in time"},
        )
        await self.save(record)
        return record

    async def remote(self, seq: int, sdef: RemoteStepDef[Any, R], value: object) -> R:
        """Dispatch a remote step, or return its recorded result."""
        name = sdef.name
        cp = self.expect(seq, "remote", name)
        if cp is None:
            subject = f"remote step {name!r} input"
            payload = sdef.input_codec.encode(sdef.input_codec.validate(value, subject), subject)
            await self.park(await self._dispatch(seq, sdef, payload, attempt=1))
        if cp.status == "completed":
            try:
                return sdef.output_codec.decode(cp.output, f"remote step {name!r} output")
            except InputValidationError as exc:
                raise RemoteStepError(name, "InputValidationError", str(exc), cp.attempts) from exc
        now = self.clock()
        retries = sdef.options.retries
        if cp.status == "failed":
            retryable = (cp.error or {}).get("retryable", True)
            if not retryable or cp.attempts > retries:
                raise _step_failed(RemoteStepError, name, cp)
            retry_at = (cp.finished_at or now) + timedelta(
                seconds=sdef.options.backoff.delay(cp.attempts, cp.step_id)
            )
            if now < retry_at:
                await self.park(retry_at)
            await self.park(await self._dispatch(seq, sdef, cp.input, attempt=cp.attempts + 1))
        if cp.wake_at is not None and now >= cp.wake_at:  # this attempt's deadline passed
            if cp.attempts <= retries:
                await self.park(await self._dispatch(seq, sdef, cp.input, cp.attempts + 1))
            timed_out = replace(
                cp,
                status="failed",
                finished_at=now,
                error={
                    "type": "TimeoutError",
                    "message": f"no result within {sdef.options.timeout}s",
                },
            )
            self.begin()
            try:
                await self.save(timed_out)
            finally:
                self.end()
            raise _step_failed(RemoteStepError, name, timed_out)
        await self.park(cp.wake_at)

    async def _dispatch(
        self, seq: int, sdef: RemoteStepDef[Any, Any], payload: JSONValue, attempt: int
    ) -> datetime | None:
        if self.transport is None:
            raise RuntimeError(f"remote step {sdef.name!r} needs an Engine with a transport")
        self.begin()
        try:
            await self.boundary()
            now = self.clock()
            timeout = sdef.options.timeout
            deadline = now + timedelta(seconds=timeout) if timeout is not None else None
            record = self.checkpoint(
                seq,
                sdef.name,
                "remote",
                status="pending",
                input=payload,
                attempts=attempt,
                wake_at=deadline,
            )
            await self.save(record)
            await self.transport.send_task(
                StepTask(
                    task_id=f"{record.step_id}:{attempt}",
                    run_id=self.run.id,
                    step_id=record.step_id,
                    seq=seq,
                    step=sdef.name,
                    input=payload,
                    attempt=attempt,
                    deadline=deadline.isoformat() if deadline else None,
                )
            )
        finally:
            self.end()
        return deadline


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def _step_failed(kind: type[StepFailedError], name: str, cp: CheckpointRecord) -> StepFailedError:
    error = cp.error or {}
    return kind(name, error.get("type", "Error"), error.get("message", ""), cp.attempts)


class WorkflowCtx:
    """What a workflow body uses for everything that must survive a crash.

    Every call is checkpointed at the next sequence number; on replay a completed call returns
    its saved result without running again. The one rule: the sequence of ``ctx`` calls must
    depend only on the input and on results returned by ``ctx``.
    """

    __slots__ = ("_turn",)

    def __init__(self, turn: Turn) -> None:
        self._turn = turn

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._turn.run.id

    @property
    def workflow(self) -> str:
        """The workflow's name."""
        return self._turn.run.workflow

    @property
    def version(self) -> str:
        """The workflow version this run is pinned to."""
        return self._turn.run.workflow_version

    @overload
    def step(
        self,
        fn: StepDef[..., R],
        /,
        *args: object,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[R]],
        /,
        *args: object,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def step(
        self,
        name: str,
        fn: Callable[..., R],
        /,
        *args: object,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, R]: ...
    def step(
        self,
        name_or_fn: str | StepDef[..., Any],
        /,
        *args: Any,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run a local step once; replay returns its checkpointed result.

        ``ctx.step(decorated_fn, *args)`` takes the name and options from ``@step``;
        ``ctx.step("name", fn, *args)`` names an undecorated function. Sync functions run in
        a worker thread. The result is validated against the function's return annotation on
        replay, so a model comes back as a model.

        Raises:
            StepFailedError: The step failed for good (the same on replay).
        """
        seq = self._turn.next_seq()
        if isinstance(name_or_fn, StepDef):
            sdef = name_or_fn
            name, fn, call_args = sdef.name, sdef.fn, args
            options = make_options(retries, backoff, timeout, sdef.options)
            codec, is_async = sdef.result_codec, sdef.is_async
        else:
            if not args or not callable(args[0]):
                raise TypeError(f"ctx.step({name_or_fn!r}, fn, *args) needs the function")
            name, fn, call_args = name_or_fn, args[0], args[1:]
            options = make_options(retries, backoff, timeout)
            inner = getattr(fn, "fn", fn)
            codec = _return_codec(inner)
            is_async = _is_async(inner)
        if is_async:
            call = functools.partial(fn, *call_args)
        else:
            call = functools.partial(
                anyio.to_thread.run_sync, functools.partial(fn, *call_args), abandon_on_cancel=True
            )
        return self._turn.local(seq, name, call, options, codec)

    def sleep(self, duration: Duration) -> Coroutine[Any, Any, None]:
        """Sleep durably: the run is suspended and holds no memory until it wakes."""
        seq = self._turn.next_seq()
        return self._turn.sleep_until(seq, None, to_timedelta(duration))

    def sleep_until(self, when: datetime) -> Coroutine[Any, Any, None]:
        """Sleep durably until an aware datetime."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs a timezone-aware datetime")
        seq = self._turn.next_seq()
        return self._turn.sleep_until(seq, when, None)

    @overload
    def wait_for_signal(
        self,
        token: str,
        type: None = None,
        *,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, Any]: ...
    @overload
    def wait_for_signal(
        self,
        token: str,
        type: type[T],
        *,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, T]: ...
    def wait_for_signal(
        self,
        token: str,
        type: type[Any] | None = None,
        *,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Wait for ``engine.signal(token, payload)`` and return the payload.

        Tokens are global: embed an id (``f"approve:{order_id}"``). A signal sent before the
        wait is buffered and delivered to it; each signal is delivered exactly once.

        Raises:
            SignalTimeoutError: ``timeout`` passed first.
            SignalPayloadError: The payload does not match ``type`` (names the token).
        """
        seq = self._turn.next_seq()
        codec = ANY_CODEC if type is None else codec_for(type)
        limit = None if timeout is None else to_timedelta(timeout)
        return self._turn.wait_signal(seq, token, codec, limit)

    def remote(self, step: RemoteStepDef[Any, R], input: object) -> Coroutine[Any, Any, R]:
        """Run a remote step through the transport; the run suspends until its result.

        Raises:
            InputValidationError: ``input`` does not match the step's input type.
            RemoteStepError: The step failed for good or returned an invalid output.
        """
        seq = self._turn.next_seq()
        return self._turn.remote(seq, step, input)

    def now(self) -> Coroutine[Any, Any, datetime]:
        """The current time, recorded once and replayed thereafter."""
        seq = self._turn.next_seq()
        clock = self._turn.clock
        return self._turn.local(
            seq, "durable.now", _constant(clock), DEFAULT_OPTIONS, codec_for(datetime)
        )

    def uuid4(self) -> Coroutine[Any, Any, uuid.UUID]:
        """A random UUID, recorded once and replayed thereafter."""
        seq = self._turn.next_seq()
        return self._turn.local(
            seq, "durable.uuid4", _constant(uuid.uuid4), DEFAULT_OPTIONS, codec_for(uuid.UUID)
        )

    def random(self) -> Coroutine[Any, Any, float]:
        """A float in [0, 1), recorded once and replayed thereafter."""
        seq = self._turn.next_seq()
        return self._turn.local(
            seq, "durable.random", _constant(_random.random), DEFAULT_OPTIONS, codec_for(float)
        )


def _constant(produce: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def call() -> T:
        return produce()

    return call


_RETURN_CODECS: weakref.WeakKeyDictionary[Callable[..., object], Codec[Any]] = (
    weakref.WeakKeyDictionary()
)


def _return_codec(fn: Callable[..., object]) -> Codec[Any]:
    """The result codec of a function passed to ``ctx.step("name", fn)``.

    Remembered per function while the function lives, so a closure made for one run is not
    kept alive by the cache (an unbounded cache would grow with every run).
    """
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    try:
        return _RETURN_CODECS[target]
    except KeyError:
        codec = _RETURN_CODECS[target] = return_codec(target)
        return codec
    except TypeError:  # not weak-referenceable (a builtin, a partial of one): no caching
        return return_codec(fn)


def _is_async(fn: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(fn)
