"""Steps: ``@step`` for local steps, ``remote_step`` contracts and ``@durable_step`` handlers."""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from durable.core._time import Duration, to_seconds
from durable.core.codec import Codec, codec_for, parameter_annotations, return_codec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

P = ParamSpec("P")
R = TypeVar("R")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between attempts, with jitter.

    The delay before attempt ``n + 1`` is ``initial * factor ** (n - 1)``, capped at
    ``maximum``, then scaled by a factor drawn in ``[1 - jitter, 1]``. The draw is derived
    from the step id and attempt, so a replay computes the same delay.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for field, value in (("initial", self.initial), ("maximum", self.maximum)):
            if not 0 <= value < math.inf:
                raise ValueError(f"Backoff.{field} must be a finite duration >= 0, got {value!r}")
        if not 1 <= self.factor < math.inf:
            raise ValueError(f"Backoff.factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be within [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, key: str) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        except OverflowError:
            base = self.maximum
        digest = hashlib.blake2b(f"{key}:{attempt}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        return base * (1 - self.jitter * fraction)


DEFAULT_BACKOFF = Backoff()


def as_backoff(value: Backoff | Duration | None) -> Backoff:
    """A :class:`Backoff` from one, from an initial delay, or the default."""
    if value is None:
        return DEFAULT_BACKOFF
    if isinstance(value, Backoff):
        return value
    return Backoff(initial=to_seconds(value))


@dataclass(frozen=True, slots=True)
class StepOptions:
    """How a step is retried and timed out. ``retries`` counts attempts after the first."""

    retries: int = 0
    backoff: Backoff = DEFAULT_BACKOFF
    timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError(f"retries must be an int, got {self.retries!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise ValueError(f"timeout must be a positive, finite duration, got {self.timeout!r}")


def check_timeout(fn: Callable[..., object], options: StepOptions, name: str) -> None:
    """Refuse a timeout on a sync step: a thread cannot be stopped once it runs.

    Raises:
        TypeError: ``options`` has a timeout and ``fn`` is not an async function.
    """
    if options.timeout is not None and not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"step {name!r}: a timeout needs an async function; this one is sync, and its"
            " thread could not be stopped when the time is up (make it async, or drop the"
            " timeout)"
        )


DEFAULT_OPTIONS = StepOptions()


def make_options(
    retries: int | None,
    backoff: Backoff | Duration | None,
    timeout: Duration | None,
    base: StepOptions | None = None,
) -> StepOptions:
    """Options from call-site arguments, each falling back to ``base``."""
    base = base or DEFAULT_OPTIONS
    if retries is None and backoff is None and timeout is None:
        return base
    try:
        seconds = base.timeout if timeout is None else to_seconds(timeout)
    except ValueError as exc:
        raise ValueError(f"timeout must be a positive, finite duration: {exc}") from exc
    return StepOptions(
        retries=base.retries if retries is None else retries,
        backoff=base.backoff if backoff is None else as_backoff(backoff),
        timeout=seconds,
    )


class StepDef(Generic[P, R]):
    """A function declared with ``@step``: its name, options and result codec.

    Calling it calls the function directly (no checkpoint); inside a workflow use
    ``await ctx.step(fn, *args)``.
    """

    __slots__ = ("fn", "is_async", "name", "options", "result_codec")

    def __init__(self, fn: Callable[P, Any], name: str, options: StepOptions) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.result_codec: Codec[R] = return_codec(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call the function directly, without a checkpoint."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"


@overload
def step(fn: Callable[P, Awaitable[R]], /) -> StepDef[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> StepDef[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int | None = None,
    backoff: Backoff | Duration | None = None,
    timeout: Duration | None = None,
) -> _StepDecorator: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int | None = None,
    backoff: Backoff | Duration | None = None,
    timeout: Duration | None = None,
) -> Any:
    """Declare a local step, so ``ctx.step(fn, *args)`` takes its name and options from it.

    Args:
        fn: The function (sync or async) when used bare as ``@step``.
        name: The checkpoint name (default: the function's qualified name).
        retries: Attempts after the first (default 0).
        backoff: A :class:`Backoff` or the initial delay.
        timeout: Per-attempt timeout.
    """
    options = make_options(retries, backoff, timeout)

    def decorate(f: Callable[..., Any]) -> StepDef[Any, Any]:
        check_timeout(f, options, name or f.__qualname__)
        return StepDef(f, name or f.__qualname__, options)

    return decorate(fn) if fn is not None else _StepDecorator(decorate)


class _StepDecorator:
    def __init__(self, decorate: Callable[[Callable[..., Any]], StepDef[Any, Any]]) -> None:
        self._decorate = decorate

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> StepDef[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> StepDef[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> StepDef[Any, Any]:
        return self._decorate(fn)


@dataclass(frozen=True, slots=True, eq=False)
class RemoteStepDef(Generic[I, O]):
    """The contract of a step that runs wherever the transport delivers it.

    Input is validated before dispatch and output on arrival, each error naming the step.
    """

    name: str
    input_codec: Codec[I]
    output_codec: Codec[O]
    options: StepOptions


DEFAULT_REMOTE_TIMEOUT = 300.0


def remote_step(
    name: str,
    *,
    input: type[I],
    output: type[O],
    retries: int = 0,
    backoff: Backoff | Duration | None = None,
    timeout: Duration = DEFAULT_REMOTE_TIMEOUT,
) -> RemoteStepDef[I, O]:
    """Declare a remote step's contract.

    Args:
        name: The step's name on the wire (any language may serve it).
        input: The input type.
        output: The output type.
        retries: Attempts after the first when a handler fails or times out.
        backoff: Delay policy between attempts.
        timeout: How long one attempt may take before it counts as failed and is dispatched
            again (this also redelivers a task lost with a crashed process).
    """
    return RemoteStepDef(
        name=name,
        input_codec=codec_for(input),
        output_codec=codec_for(output),
        options=make_options(retries, backoff, timeout),
    )


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a remote step handler may know about the task it serves (``current_step()``)."""

    run_id: str
    step_id: str
    seq: int
    attempt: int


_current_step: contextvars.ContextVar[StepInfo] = contextvars.ContextVar("durable_step")


def current_step() -> StepInfo:
    """The task being served, inside a ``@durable_step`` handler.

    ``step_id`` is stable across attempts and redeliveries: dedupe side effects on it.

    Raises:
        LookupError: Called outside a step handler.
    """
    return _current_step.get()


@dataclass(frozen=True, slots=True, eq=False)
class StepHandler(Generic[I, O]):
    """A handler serving a :class:`RemoteStepDef` (made by ``@durable_step``)."""

    definition: RemoteStepDef[I, O]
    fn: Callable[[I], Awaitable[O] | O]
    is_async: bool


def durable_step(
    definition: RemoteStepDef[I, O],
) -> Callable[[Callable[[I], Awaitable[O] | O]], StepHandler[I, O]]:
    """Declare the handler of a remote step; pass it to ``Engine(steps=[...])``."""

    def decorate(fn: Callable[[I], Awaitable[O] | O]) -> StepHandler[I, O]:
        if len(parameter_annotations(fn)) != 1:
            raise TypeError(f"a step handler takes exactly one input; {fn!r} does not")
        return StepHandler(definition, fn, inspect.iscoroutinefunction(fn))

    return decorate
