"""One execution ("turn") of a run: replay against the checkpoints, and the durable primitives.

A turn replays the workflow from the top against the run's checkpoints, read once. Each
``ctx`` call takes the next sequence number synchronously, at call time, so concurrent calls
(task groups, ``asyncio.gather``) number themselves in call order on every worker. A call that
must wait (sleep, signal, remote step) parks; when every branch of the workflow waits, the turn
ends and the run is suspended until the earliest wake time or the awaited event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn, TypeVar, cast

import anyio
import anyio.lowlevel

from durable.core._branches import Branches, detached
from durable.core._limits import later
from durable.core._logs import Throttle, run_fields
from durable.core.context import WorkflowCtx
from durable.core.errors import (
    FatalError,
    InputValidationError,
    NonDeterminismError,
    PayloadTooLargeError,
    RemoteStepError,
    ResultTypeError,
    SerializationError,
    SignalPayloadError,
    SignalTimeoutError,
    StepFailedError,
)
from durable.core.records import CheckpointRecord, ErrorInfo, SignalWaiter
from durable.core.transport import StepTask

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable.core._time import Clock
    from durable.core._types import CheckpointKind, CheckpointStatus, JSONValue
    from durable.core.codec import Codec
    from durable.core.records import RunRecord
    from durable.core.steps import (
        RemoteStepDef,
        StepOptions,
    )
    from durable.core.store import StateStore, TransactionalStore
    from durable.core.transport import Transport
    from durable.core.workflow import WorkflowDef

R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger("durable.engine")
_FAULTS = Throttle(log)
"""Faults inside turns, logged once a minute per kind of error however many runs meet them."""


class _TurnOver(BaseException):
    """Unwinds a branch once its turn has ended.

    A ``BaseException``, so workflow code's ``except Exception`` never sees it: a store fault
    or a lost lease ends the turn; it is not the workflow's to handle.
    """


class _Fenced(_TurnOver):
    """This worker no longer owns the run (lease lost, or the run was cancelled)."""


class _Interrupted(_TurnOver):
    """A store or transport fault, or a checkpoint that changed under the turn."""


class _Success(NamedTuple):
    output: JSONValue
    value: Any


def error_info(exc: BaseException) -> ErrorInfo:
    """The stored form of an exception."""
    info: ErrorInfo = {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }
    if isinstance(exc, _PERMANENT):
        info["retryable"] = False
    return info


REFUSED = (SerializationError, PayloadTooLargeError)
"""Store errors about the value written, not the store: writing it again cannot succeed."""

_PERMANENT = (FatalError, ResultTypeError, InputValidationError, *REFUSED)
"""Step failures that another attempt cannot fix."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a turn ended; becomes the patch of the lease release.

    ``pending`` runs the run again at once (drain, a checkpoint changed under the turn);
    ``retry``: a store or transport fault, the worker keeps the lease and tries again;
    ``release`` hands the run back, pending, to whichever worker takes it next.
    """

    status: Literal[
        "completed", "failed", "dead", "suspended", "pending", "retry", "release", "lost"
    ]
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
        resend: bool = False,
    ) -> None:
        self.run = run
        self.resend = resend
        """Send again the task of every remote step still waiting: the turn before this one
        (a crash, a fault) may have written its checkpoint without sending it."""
        self.history = {cp.seq: cp for cp in history}
        self.store = store
        self.transport = transport
        self.owner = owner
        self.clock = clock
        self.lease = lease
        self._draining = draining
        self._seq = 0
        self._in_flight = 0
        self._branches = Branches(on_change=lambda: self._changed.set())
        self._wakes: list[datetime] = []
        self._requeue = False
        self._fatal: BaseException | None = None
        self._changed = anyio.Event()
        self._outcome: Outcome | None = None
        self._deferred: dict[int, CheckpointRecord] = {}
        self._scope: anyio.CancelScope | None = None
        self._fresh = False
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
            return replace(self._outcome, checkpoints=tuple(self._deferred.values()))
        return self._outcome

    def _settle(self, outcome: Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            if self._scope is not None:
                self._scope.cancel()

    async def _body(self, wf: WorkflowDef[Any, Any], arg: object) -> None:
        self._confirmed()  # the claim that started this turn just proved ownership
        try:
            with self._branches.running():
                result = await wf(self.ctx, arg)
            output, _ = wf.output_codec.record(result, f"workflow {wf.name!r} output")
            outcome = Outcome("completed", output=output)
        except BaseException as exc:  # sorted below; cancellation is re-raised
            if _contains(exc, _TurnOver):
                return  # the turn was settled where it ended
            if not isinstance(exc, Exception):
                raise
            outcome = Outcome("failed", error=error_info(exc))  # the workflow's own failure
        if self._fatal is not None:
            outcome = Outcome("failed", error=error_info(self._fatal))
        self._settle(outcome)

    async def _watch(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            if await self._branches.settled(lambda: self._in_flight > 0):
                if self._requeue:
                    self._settle(Outcome("pending"))
                else:
                    self._settle(Outcome("suspended", wake_at=min(self._wakes, default=None)))
                return

    async def _renew(self) -> None:
        held_until = self.clock() + timedelta(seconds=self.lease)
        while True:
            await anyio.sleep(self.lease / 3)
            until = self.clock() + timedelta(seconds=self.lease)
            try:
                renewed = await self.store.renew_run_lock(self.run.id, self.owner, until)
            except Exception as exc:  # noqa: BLE001 - a store fault: try again while the lease lasts
                if self.clock() >= held_until:
                    log.warning(
                        "run %s: lease could not be renewed before it expired (%s); giving the"
                        " run up",
                        self.run.id,
                        exc,
                        extra=self.log_fields(),
                    )
                    self._settle(Outcome("lost"))
                    return
                continue
            if not renewed:
                log.warning(
                    "run %s: lease lost (taken over, or the run was cancelled)",
                    self.run.id,
                    extra=self.log_fields(),
                )
                self._settle(Outcome("lost"))
                return
            held_until = until

    def log_fields(self) -> dict[str, object]:
        """The structured fields of this run's log records."""
        return run_fields(self.run, self.owner)

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

    async def enter(self, *, runs_user_code: bool = False) -> None:
        """A primitive is about to do work the turn must wait for: a checkpoint boundary.

        When the engine drains, the call stops here and the run is requeued. Before user code
        runs (a step, a remote dispatch), a cancel recorded since ownership was last proven
        stops it: ownership is proven by every fenced write, and a boundary reached without
        the event loop turning since then needs no round trip of its own (a step right after
        a step); otherwise the lease is renewed, which fails for a cancelled run.
        """
        if self._draining():
            self._requeue = True
        if self._requeue:
            await self.park(None)
        self._in_flight += 1
        if runs_user_code and not self._fresh:
            until = self.clock() + timedelta(seconds=self.lease)
            if not await self.io(self.store.renew_run_lock(self.run.id, self.owner, until)):
                self.lose()
            self._confirmed()

    def end(self) -> None:
        """That work is done; the turn may now be quiescent (only if a branch is parked)."""
        self._in_flight -= 1
        if self._branches.parked:
            self._changed.set()

    async def park(self, wake_at: datetime | None) -> NoReturn:
        """Wait until the turn ends; the run resumes at ``wake_at`` or when woken."""
        await self._wait(wake_at, resume=False)
        raise AssertionError("unreachable")  # pragma: no cover

    async def nap(self, wake_at: datetime) -> None:
        """Wait until ``wake_at``, in memory while the turn goes on.

        If every branch waits meanwhile, the turn ends and the run resumes at ``wake_at``.
        """
        await self._wait(wake_at, resume=True)

    async def _wait(self, wake_at: datetime | None, *, resume: bool) -> None:
        if wake_at is not None:
            self._wakes.append(wake_at)
        try:
            if resume and wake_at is not None:
                await self._branches.nap(max(0.0, (wake_at - self.clock()).total_seconds()))
            else:
                await self._branches.park()
        finally:
            if wake_at is not None:
                self._wakes.remove(wake_at)

    def _confirmed(self) -> None:
        """Ownership was just proven; it stays fresh until the event loop turns."""
        self._fresh = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another backend: check at every boundary
            self._fresh = False
            return
        loop.call_soon(self._stale)

    def _stale(self) -> None:
        self._fresh = False

    def lose(self) -> NoReturn:
        """This worker no longer owns the run: end the turn, write nothing more."""
        self._settle(Outcome("lost"))
        raise _Fenced

    async def io(self, call: Awaitable[T]) -> T:
        """Await a store or transport call made for the workflow.

        A fault ends the turn and leaves the run to be retried; it never reaches workflow
        code. A value the store refuses (:data:`REFUSED`: not JSON, too large) is the
        caller's to handle.
        """
        try:
            with detached():
                return await call
        except REFUSED:
            raise
        except Exception as exc:
            _FAULTS.log(
                type(exc).__qualname__,
                logging.WARNING,
                "run %s: store or transport call failed (%s: %s); the run will be retried",
                self.run.id,
                type(exc).__qualname__,
                exc,
                extra=self.log_fields(),
            )
            self._settle(Outcome("retry", error=error_info(exc)))
            raise _Interrupted from exc

    async def save(
        self, cp: CheckpointRecord, *, expect: tuple[CheckpointStatus, int] | None = None
    ) -> None:
        """Write a checkpoint fenced by this worker's lease (and ``expect``, when given)."""
        written = await self.io(self.store.save_checkpoint(cp, owner=self.owner, expect=expect))
        if not written:
            if expect is None:
                self.lose()
            # Changed under us (a result arrived): replay against the stored checkpoint.
            self._settle(Outcome("pending"))
            raise _Interrupted
        self.history[cp.seq] = cp
        self._confirmed()

    def defer(self, cp: CheckpointRecord) -> None:
        """Have the release that ends this turn write ``cp`` (no commit of its own)."""
        self.history[cp.seq] = cp
        self._deferred[cp.seq] = cp

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
        call: Callable[..., Awaitable[Any]],
        options: StepOptions,
        codec: Codec[Any],
        *,
        transactional: bool = False,
    ) -> Any:
        """Run a local step, or return its recorded result.

        Between attempts the step's checkpoint is ``pending`` with the attempts made, the
        last error and the next attempt's time, so a crash during a backoff neither restarts
        the count nor shortens the wait. A ``transactional`` step's ``call`` takes the store's
        transaction: each attempt runs in its own, which commits with the attempt's
        checkpoint when it succeeds and rolls back when it fails.
        """
        cp = self.expect(seq, "local", name)
        if cp is not None:
            if cp.status == "completed":
                return codec.decode(cp.output, f"step {name!r} result")
            if cp.status == "failed":
                raise _step_failed(StepFailedError, name, cp)
        while True:
            if cp is not None and cp.wake_at is not None and self.clock() < cp.wake_at:
                await self.nap(cp.wake_at)
            await self.enter(runs_user_code=True)
            try:
                made = (1, self.clock()) if cp is None else (cp.attempts + 1, cp.started_at)
                if transactional:
                    result, cp = await self._transact(seq, name, call, options, codec, made)
                else:
                    result = await _attempt(name, call, options, codec)
                    cp = await self._record_attempt(seq, name, options, made, result)
            finally:
                self.end()
            if isinstance(result, _Success) and cp.status == "completed":
                return result.value
            if cp.status == "failed":
                cause = result if isinstance(result, BaseException) else None
                raise _step_failed(StepFailedError, name, cp) from cause

    async def _record_attempt(
        self,
        seq: int,
        name: str,
        options: StepOptions,
        made: tuple[int, datetime],
        result: _Success | Exception,
    ) -> CheckpointRecord:
        """Record an attempt (``made``: its number and the step's start) in its checkpoint."""
        if isinstance(result, _Success):
            record = self._completed(seq, name, made, result)
            try:
                await self.save(record)
                return record
            except REFUSED as exc:  # the store refused the value (too large, ...)
                result = exc
        return await self._record_failure(seq, name, options, made, result)

    async def _transact(
        self,
        seq: int,
        name: str,
        call: Callable[[object], Awaitable[Any]],
        options: StepOptions,
        codec: Codec[Any],
        made: tuple[int, datetime],
    ) -> tuple[_Success | Exception, CheckpointRecord]:
        """One attempt of a transactional step, in the store's transaction with its checkpoint.

        A success commits with its checkpoint, or not at all (fenced off: the turn ends). A
        failure rolls its writes back; its checkpoint is written as a local step's is.
        """
        store = cast("TransactionalStore", self.store)
        records: list[CheckpointRecord] = []

        async def attempt_in(transaction: object) -> _Success | Exception:
            return await _attempt(name, functools.partial(call, transaction), options, codec)

        def completed(result: _Success | Exception) -> CheckpointRecord | None:
            if not isinstance(result, _Success):
                return None
            records.append(self._completed(seq, name, made, result))
            return records[-1]

        try:
            result, committed = await self.io(
                store.run_in_transaction(self.run.id, self.owner, attempt_in, completed)
            )
        except REFUSED as exc:  # the store refused the value: nothing was committed
            result = exc
        else:
            if committed:
                self.history[seq] = records[-1]
                self._confirmed()
                return result, records[-1]
            if isinstance(result, _Success):
                self.lose()
        return result, await self._record_failure(seq, name, options, made, result)

    def _completed(
        self, seq: int, name: str, made: tuple[int, datetime], result: _Success
    ) -> CheckpointRecord:
        """The checkpoint of a local step's successful attempt."""
        attempt, started = made
        return self.checkpoint(
            seq,
            name,
            "local",
            status="completed",
            output=result.output,
            finished_at=self.clock(),
            attempts=attempt,
            started_at=started,
        )

    async def _record_failure(
        self,
        seq: int,
        name: str,
        options: StepOptions,
        made: tuple[int, datetime],
        error: Exception,
    ) -> CheckpointRecord:
        """Record a failed attempt: ``pending`` until the next one, or ``failed`` for good."""
        attempt, started = made
        now = self.clock()
        common: dict[str, Any] = {"attempts": attempt, "started_at": started}
        if not isinstance(error, _PERMANENT) and attempt <= options.retries:
            delay = options.backoff.delay(attempt, f"{self.run.id}:{seq}")
            wake_at = later(now, timedelta(seconds=delay), f"step {name!r} backoff")
            record = self.checkpoint(
                seq,
                name,
                "local",
                status="pending",
                error=error_info(error),
                wake_at=wake_at,
                **common,
            )
        else:
            record = self.checkpoint(
                seq,
                name,
                "local",
                status="failed",
                error=error_info(error),
                finished_at=now,
                **common,
            )
        await self.save(record)
        return record

    async def sleep_until(self, seq: int, until: datetime | None, delta: timedelta | None) -> None:
        """Record a wake time once and wait until it."""
        cp = self.expect(seq, "sleep", "sleep")
        if cp is None:
            await self.enter()
            try:
                now = self.clock()
                wake_at = until if until is not None else later(now, delta or timedelta(), "sleep")
                cp = self.checkpoint(seq, "sleep", "sleep", status="pending", wake_at=wake_at)
                if self._in_flight == 1 and now < wake_at:
                    # Nothing else is working: this sleep ends the turn, and the release that
                    # suspends the run writes its checkpoint too (one commit, not two). If the
                    # worker dies first, the sleep starts over on recovery.
                    self.defer(cp)
                else:
                    await self.save(cp)
            finally:
                self.end()
        wake_at = cp.wake_at or cp.started_at
        if self.clock() < wake_at:
            await self.nap(wake_at)
        if cp.status != "completed":  # written with the release that ends this turn
            self.defer(replace(cp, status="completed", finished_at=max(self.clock(), wake_at)))

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
        await self.enter()
        try:
            now = self.clock()
            if cp is None:
                deadline = None if timeout is None else later(now, timeout, "signal timeout")
                cp = self.checkpoint(seq, token, "signal", status="pending", wake_at=deadline)
                new: CheckpointRecord | None = cp
            else:
                deadline, new = cp.wake_at, None
            if deadline is not None and now >= deadline:
                return await self._time_out_signal(cp, waiter)
            if not await self.io(
                self.store.put_signal_waiter(waiter, owner=self.owner, checkpoint=new)
            ):
                self.lose()
            self.history[seq] = cp
            self._confirmed()
            if await self.io(self.store.pair_signal(token, now, holder=self.owner)) == waiter:
                delivered = await self.io(self.store.get_checkpoint(self.run.id, seq))
                if delivered is not None and delivered.status == "completed":
                    return delivered
        finally:
            self.end()
        await self.park(deadline)

    async def _time_out_signal(
        self, cp: CheckpointRecord, waiter: SignalWaiter
    ) -> CheckpointRecord:
        if not await self.io(self.store.remove_signal_waiter(waiter)):
            delivered = await self.io(self.store.get_checkpoint(self.run.id, cp.seq))
            if delivered is not None and delivered.status == "completed":
                return delivered
        record = replace(
            cp,
            status="failed",
            finished_at=max(self.clock(), cp.started_at),
            error={"type": "SignalTimeoutError", "message": f"no signal {cp.name!r} in time"},
        )
        await self.save(record)
        return record

    async def remote(self, seq: int, sdef: RemoteStepDef[Any, R], value: object) -> R:
        """Dispatch a remote step, or return its recorded result.

        Every rewrite of an existing remote checkpoint (a new attempt, a timeout) is a
        compare-and-set on the attempt it saw, so a result that lands meanwhile is kept.
        """
        name = sdef.name
        cp = self.expect(seq, "remote", name)
        if cp is None:
            subject = f"remote step {name!r} input"
            payload = sdef.input_codec.encode(sdef.input_codec.validate(value, subject), subject)
            await self.park(await self._dispatch(seq, sdef, payload, 1, None))
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
            await self.park(
                await self._dispatch(seq, sdef, cp.input, cp.attempts + 1, ("failed", cp.attempts))
            )
        if cp.wake_at is not None and now >= cp.wake_at:  # this attempt's deadline passed
            seen: tuple[CheckpointStatus, int] = ("pending", cp.attempts)
            if cp.attempts <= retries:
                await self.park(await self._dispatch(seq, sdef, cp.input, cp.attempts + 1, seen))
            timed_out = replace(
                cp,
                status="failed",
                finished_at=now,
                error={
                    "type": "TimeoutError",
                    "message": f"no result within {sdef.options.timeout}s",
                },
            )
            await self.enter()
            try:
                await self.save(timed_out, expect=seen)
            finally:
                self.end()
            raise _step_failed(RemoteStepError, name, timed_out)
        if self.resend:
            await self.enter()
            try:
                await self._send(cp, sdef)
            finally:
                self.end()
        await self.park(cp.wake_at)

    def _transport(self, sdef: RemoteStepDef[Any, Any]) -> Transport:
        if self.transport is None:
            raise RuntimeError(f"remote step {sdef.name!r} needs an Engine with a transport")
        return self.transport

    async def _send(self, cp: CheckpointRecord, sdef: RemoteStepDef[Any, Any]) -> None:
        deadline = cp.wake_at.isoformat() if cp.wake_at else None
        await self.io(
            self._transport(sdef).send_task(
                StepTask(
                    task_id=f"{cp.step_id}:{cp.attempts}",
                    run_id=self.run.id,
                    step_id=cp.step_id,
                    seq=cp.seq,
                    step=sdef.name,
                    input=cp.input,
                    attempt=cp.attempts,
                    deadline=deadline,
                )
            )
        )

    async def _dispatch(
        self,
        seq: int,
        sdef: RemoteStepDef[Any, Any],
        payload: JSONValue,
        attempt: int,
        expect: tuple[CheckpointStatus, int] | None,
    ) -> datetime | None:
        self._transport(sdef)
        await self.enter(runs_user_code=True)
        try:
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
            await self.save(record, expect=expect)
            await self._send(record, sdef)
        finally:
            self.end()
        return deadline


async def _attempt(
    name: str, call: Callable[[], Awaitable[Any]], options: StepOptions, codec: Codec[Any]
) -> _Success | Exception:
    """One attempt of a local step: its recorded result, or what it failed with."""
    try:
        with detached():
            if options.timeout is None:
                value = await call()
            else:
                with anyio.move_on_after(options.timeout) as scope:
                    value = await call()
                if scope.cancel_called:  # even if the step swallowed its cancellation
                    raise TimeoutError(f"step {name!r} did not finish within {options.timeout}s")
        return _Success(*codec.record(value, f"step {name!r} result"))
    except Exception as exc:  # noqa: BLE001 - step code may raise anything
        return exc


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def _step_failed(kind: type[StepFailedError], name: str, cp: CheckpointRecord) -> StepFailedError:
    error = cp.error or {}
    return kind(name, error.get("type", "Error"), error.get("message", ""), cp.attempts)
