"""Helpers the engine suite uses: fast engines, crash and fault injection, waiting on conditions."""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from durable.core import Engine, StateStore, StoreUnavailableError
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable

    from durable.core import CheckpointRecord, StepHandler, WorkflowDef

FAST = {"poll_interval": 0.02, "lease": 1.0, "shutdown_grace": 2}


class StoreProxy:
    """Wraps a store and forwards every call through :meth:`forward`; subclasses intercept.

    Only the protocol's methods are called on a store, so one hook sees everything the engine
    asks of it. Attributes that are not methods are read from the wrapped store.
    """

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.forward(name, args, kwargs)

        return call

    async def forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Make the call ``name(*args, **kwargs)`` on the wrapped store."""
        return await getattr(self.inner, name)(*args, **kwargs)


class SimulatedCrash(BaseException):
    """Raised where a worker process would have died; nothing it does afterwards counts."""


class CrashingStore(StoreProxy):
    """Wraps a store; after ``crash_after_saves`` checkpoint writes by a worker it "dies".

    A checkpoint write is a fenced ``save_checkpoint`` that wrote, or each checkpoint a
    ``release_run_lock`` wrote with its release. From the crash on every call raises
    :class:`SimulatedCrash`, so the dying worker can neither release its lease nor write
    anything else, exactly like a process killed with SIGKILL right after that commit.

    Attributes:
        dead: Whether the store has "died".
        written: Every checkpoint written through this store, in order.
    """

    def __init__(self, inner: StateStore, crash_after_saves: int) -> None:
        super().__init__(inner)
        self._left = crash_after_saves
        self.dead = False
        self.written: list[CheckpointRecord] = []

    async def forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Forward the call unless dead; die after the checkpoint write that uses up the count."""
        if self.dead:
            raise SimulatedCrash(name)
        result = await super().forward(name, args, kwargs)
        written = _checkpoints_written(name, args, kwargs, result)
        self.written += written
        self._left -= len(written)
        if written and self._left < 0:
            self.dead = True
            raise SimulatedCrash(f"after {name}")
        return result


def _checkpoints_written(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> list[CheckpointRecord]:
    """The checkpoints a worker's successful call wrote (fenced writes only)."""
    if name == "save_checkpoint" and result and kwargs.get("owner") is not None:
        return [args[0]]
    if name == "release_run_lock" and result not in (None, "cancelled"):
        return list(kwargs.get("checkpoints", ()))
    return []


POLLER_CALLS = frozenset(
    {"list_pending_runs", "list_due_timers", "list_incomplete_runs", "list_pairable_tokens"}
)
"""The poller's listings: how many a run sees depends on timing, not on the run."""

RUN_CALLS = (
    frozenset(
        name
        for name in vars(StateStore)
        if not name.startswith("_") and callable(getattr(StateStore, name))
    )
    - POLLER_CALLS
    - {"ensure_schema", "aclose"}
)
"""The protocol calls an engine makes for a run: every method but the poller's listings and
the store's lifecycle (an engine that cannot create its schema does not start)."""


class FaultyStore(StoreProxy):
    """Wraps a store and fails chosen calls: the k-th counted call raises, for each k chosen.

    Every call whose method is in ``methods`` (default: every method) is counted, 1-based, in
    the order the store receives them; the calls numbered in ``fail_at`` raise ``error``
    (default: a :class:`~durable.core.StoreUnavailableError` naming the call) instead of
    reaching the wrapped store, as when the database is unreachable. With ``lose_reply`` they
    reach it and the reply is lost instead: the call took effect, yet its caller sees the
    error, as when a connection drops during a commit.

    With nothing to fail, it counts: run a clean run through it and ``len(calls)`` is the
    ``N`` of "fail the k-th call, for every k in 1..N".

    Attributes:
        calls: The counted calls' method names, in order.
        faults: The calls that raised, as ``"<k>:<method>"``.
        received: How many calls of each method arrived, counted or not.
    """

    def __init__(
        self,
        inner: StateStore,
        fail_at: int | Collection[int] = (),
        error: Exception | None = None,
        *,
        methods: Collection[str] | None = None,
        lose_reply: bool = False,
    ) -> None:
        super().__init__(inner)
        self._fail_at = frozenset([fail_at]) if isinstance(fail_at, int) else fail_at
        self._error = error
        self._methods = methods
        self._lose_reply = lose_reply
        self.calls: list[str] = []
        self.faults: list[str] = []
        self.received: Counter[str] = Counter()

    async def forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Count the call; fail it when its number is chosen, else forward it."""
        self.received[name] += 1
        if self._methods is not None and name not in self._methods:
            return await super().forward(name, args, kwargs)
        self.calls.append(name)
        number = len(self.calls)
        if number not in self._fail_at:
            return await super().forward(name, args, kwargs)
        self.faults.append(f"{number}:{name}")
        if self._lose_reply:
            await super().forward(name, args, kwargs)
        raise self._error or StoreUnavailableError(f"injected fault: call {number} ({name})")


class PausingStore(StoreProxy):
    """Wraps a store and holds the first call that ``matches`` until :attr:`release` is set.

    The held call reaches the wrapped store only once released: it models a slow database,
    or a reply that arrives after the world has moved on. With ``freeze`` every later call is
    held too, as if the worker's process stopped (a long GC pause, a suspended VM): its lease
    lapses while it sleeps, and it carries on where it was once released.

    Attributes:
        held: Set when the matching call arrives and is being held.
        release: Set it to let the held calls through.
    """

    def __init__(
        self,
        inner: StateStore,
        matches: Callable[[str, tuple[Any, ...]], bool],
        *,
        freeze: bool = False,
    ) -> None:
        super().__init__(inner)
        self._matches = matches
        self._freeze = freeze
        self.held = anyio.Event()
        self.release = anyio.Event()

    async def forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Hold the first matching call (and, frozen, every later one) until released."""
        if self.held.is_set() and self._freeze:
            await self.release.wait()
        elif not self.held.is_set() and self._matches(name, args):
            self.held.set()
            await self.release.wait()
        return await super().forward(name, args, kwargs)


def engine(
    store: StateStore | StoreProxy,
    workflows: Iterable[WorkflowDef[Any, Any]],
    *,
    transport: InProcessTransport | None = None,
    steps: Iterable[StepHandler[Any, Any]] = (),
    **options: Any,
) -> Engine:
    """An engine tuned for tests: fast polling and short leases."""
    return Engine(
        store,
        transport if transport is not None else InProcessTransport(),
        workflows=workflows,
        steps=steps,
        **{**FAST, **options},
    )


@asynccontextmanager
async def crashing(engine: Engine) -> AsyncIterator[Engine]:
    """Run ``engine`` and swallow the :class:`SimulatedCrash` that kills it."""
    try:
        async with engine:
            yield engine
    except BaseException as exc:
        if not _only_crashes(exc):
            raise


def _only_crashes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_crashes(e) for e in exc.exceptions)
    return isinstance(exc, SimulatedCrash | anyio.get_cancelled_exc_class())


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not await condition():  # noqa: ASYNC110 - the condition lives in the store
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def new_id() -> str:
    """A fresh random id, for workflow names, run ids and tokens no other test uses."""
    return uuid.uuid4().hex


async def engine_start(store: StateStore, wf: WorkflowDef[Any, Any], arg: object) -> str:
    """Start a run with a client-only engine (nothing executes it yet); returns its id."""
    async with engine(store, [wf], drive=False) as client:
        return (await client.start(wf, arg)).run_id


def crashed(store: CrashingStore) -> Callable[[], Awaitable[bool]]:
    """A :func:`wait_until` condition: the crashing store has died."""

    async def dead() -> bool:
        return store.dead

    return dead


def has_status(e: Engine, run_id: str, status: str) -> Callable[[], Awaitable[bool]]:
    """A :func:`wait_until` condition: the run has ``status``."""

    async def check() -> bool:
        return (await e.get_run(run_id)).status == status

    return check


def unlocked(store: StateStore, run_id: str) -> Callable[[], Awaitable[bool]]:
    """A :func:`wait_until` condition: no worker holds the run's lease."""

    async def check() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.locked_by is None

    return check
