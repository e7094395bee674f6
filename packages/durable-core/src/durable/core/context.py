"""``WorkflowCtx``: the durable calls a workflow makes.

Each call takes its sequence number when it is made and hands the work to the run's current
turn (:mod:`durable.core._turn`), which replays it from the checkpoints or does it.
"""

from __future__ import annotations

import functools
import inspect
import random as _random
import uuid
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio
import anyio.lowlevel

from durable.core._limits import check_key
from durable.core._time import Duration, to_timedelta
from durable.core.codec import ANY_CODEC, Codec, codec_for, return_codec
from durable.core.steps import (
    DEFAULT_OPTIONS,
    RemoteStepDef,
    StepDef,
    check_timeout,
    make_options,
)
from durable.core.store import TransactionalStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from durable.core._turn import Turn
    from durable.core.steps import Backoff, StepOptions

R = TypeVar("R")
T = TypeVar("T")


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
        name, fn, call_args, options, codec, is_async = _resolve(
            "step", name_or_fn, args, (retries, backoff, timeout)
        )
        seq = self._turn.next_seq()
        if is_async:
            call = functools.partial(fn, *call_args)
        else:
            call = functools.partial(
                anyio.to_thread.run_sync, functools.partial(fn, *call_args), abandon_on_cancel=True
            )
        return self._turn.local(seq, name, call, options, codec)

    @overload
    def transaction(
        self,
        fn: StepDef[..., R],
        /,
        *args: object,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def transaction(
        self,
        name: str,
        fn: Callable[..., Awaitable[R]],
        /,
        *args: object,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, R]: ...
    def transaction(
        self,
        name_or_fn: str | StepDef[..., Any],
        /,
        *args: Any,
        retries: int | None = None,
        backoff: Backoff | Duration | None = None,
        timeout: Duration | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run a step in the store's database transaction, committed with its checkpoint.

        The async function is called as ``fn(transaction, *args)``; ``transaction`` is the
        store's (``SqlAlchemyStateStore``: an ``AsyncConnection`` on its engine, inside a
        transaction; ``InMemoryStateStore``: None). Its writes commit together with the
        step's checkpoint, fenced by the run's lease, or not at all: they happen exactly once
        however the worker dies. A failed attempt rolls them back; retries, backoff, timeout
        and replay are those of :meth:`step`. Do not commit or roll back yourself, and keep
        the function short: the transaction stays open while it runs. Added in 0.1.

        Raises:
            TypeError: The store does not implement
                :class:`~durable.core.store.TransactionalStore`, or ``fn`` is not async.
            StepFailedError: The step failed for good (the same on replay).
        """
        name, fn, call_args, options, codec, is_async = _resolve(
            "transaction", name_or_fn, args, (retries, backoff, timeout)
        )
        store = self._turn.store
        if not isinstance(store, TransactionalStore):
            raise TypeError(
                f"ctx.transaction({name!r}): {type(store).__qualname__} does not implement"
                " TransactionalStore, so it cannot commit a step's writes with its checkpoint"
                " (use SqlAlchemyStateStore, or ctx.step)"
            )
        if not is_async:
            raise TypeError(
                f"ctx.transaction({name!r}): the function must be async (it receives the"
                " store's transaction and awaits its statements)"
            )
        seq = self._turn.next_seq()

        def call(transaction: object) -> Awaitable[Any]:
            return cast("Awaitable[Any]", fn(transaction, *call_args))

        return self._turn.local(seq, name, call, options, codec, transactional=True)

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
        check_key(token, "signal token")
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


def _resolve(
    kind: str,
    name_or_fn: str | StepDef[..., Any],
    args: tuple[Any, ...],
    given: tuple[int | None, Backoff | Duration | None, Duration | None],
) -> tuple[str, Callable[..., Any], tuple[Any, ...], StepOptions, Codec[Any], bool]:
    """What ``ctx.step`` or ``ctx.transaction`` was asked to run.

    The step's name, function, arguments, options (those ``given`` at the call, each falling
    back to a ``@step``'s own), result codec, and whether the function is async.
    """
    if isinstance(name_or_fn, StepDef):
        sdef = name_or_fn
        name, fn, call_args = sdef.name, sdef.fn, args
        options = make_options(*given, sdef.options)
        codec, is_async, target = sdef.result_codec, sdef.is_async, sdef.fn
    else:
        if not args or not callable(args[0]):
            raise TypeError(f"ctx.{kind}({name_or_fn!r}, fn, *args) needs the function")
        name, fn, call_args = name_or_fn, args[0], args[1:]
        options = make_options(*given)
        target = getattr(fn, "fn", fn)
        codec = _return_codec(target)
        is_async = _is_async(target)
    check_timeout(target, options, name)
    return name, fn, call_args, options, codec, is_async


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
