"""Which tasks belong to a turn, and whether every one of them is waiting on durable's say-so.

The rule: **a turn ends (the run suspends) only when every task of the workflow is waiting on a
durable call, or on other tasks of the workflow** (a task group or ``asyncio.gather`` waiting
for its children, an ``await`` of one of its tasks). A task that awaits anything else (an HTTP
call, ``anyio.sleep``, a lock or an event) keeps the turn open until that returns.
Coordinating branches with asyncio or anyio primitives (one branch waiting on an event that
another sets after a durable wait) therefore keeps the run in memory: use durable calls for it.

*Membership.* The tasks of a turn are its body's task and every asyncio task created, directly
or transitively, while a context variable names the turn's :class:`Branches`. A task factory,
installed on the loop by :func:`tracking` and chained to any factory already there, reads that
variable when a task is created. The alternatives were weaker: anyio records a parent only for
the tasks of its own task groups (not for ``asyncio.gather``, ``asyncio.TaskGroup`` or
``asyncio.create_task``), and finding a turn's tasks among ``asyncio.all_tasks()`` costs a pass
over every run of the worker and, before Python 3.12, needs ``Task.get_context()``, which does
not exist. Two more ways in keep membership right when the factory is bypassed (a factory
installed later that does not chain ours, a task created with an explicit context): a task
that parks joins, and so does a task that a member waits on. Tasks created under
:func:`detached` (a step's function, the store, the transport) do not join: while such a call
runs, the branch that made it is working anyway, and whatever outlives it is not the
workflow's.

*Waiting.* A suspended asyncio task waits on one future, ``task._fut_waiter`` (an attribute of
the C and the Python task alike). It is waiting on tasks of the turn when that future is a
member task, the future of ``asyncio.gather`` over member tasks, or the future the innermost
frame of ``asyncio.TaskGroup.__aexit__``, anyio's ``TaskGroup.__aexit__`` or ``asyncio.wait``
(without a timeout) waits on for its member tasks; the frame is found by following
``cr_await`` from the task's coroutine. A task with no such future (about to run), or with
any other future, is working; so is ``TaskGroup.start()`` waiting for ``started()``.

*Notifications.* Parking and the end of a member task call ``on_change``. :meth:`Branches.idle`
answers for the present; when it answers False it arranges a later ``on_change`` itself: after
one scheduler pass if a task is about to run, or when the future a working task waits on
completes. So a branch that finishes its sleep and then waits on a parked sibling ends the
turn without calling ``ctx`` again.

*Cost.* Creating a task on the loop costs one Python call and one context-variable read more
(and, for a member, a set insert and a done callback): about 2 us on a 12 us task creation.
Nothing is checked while nothing is parked, so a workflow doing steps in sequence pays nothing
else. :meth:`Branches.idle` looks first at the task that kept the turn open last time, and
never scans parked tasks.

*Other backends.* On trio (any loop that is not asyncio) nothing of the above is available:
:meth:`Branches.settled` falls back to the turn's own count of calls in flight, a parked count,
and a few scheduler passes, which cannot see a branch awaiting something that is not a ``ctx``
call.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, cast

import anyio
import anyio.lowlevel
from anyio._backends import _asyncio as anyio_asyncio

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Coroutine, Generator, Iterator, Mapping
    from types import CodeType, FrameType

_FALLBACK_PASSES = 4
"""Scheduler passes the fallback lets just-resumed branches take before it trusts the counts."""

_CURRENT: contextvars.ContextVar[Branches | None] = contextvars.ContextVar(
    "durable_branches", default=None
)

_GatherFuture: type[object] | None = getattr(asyncio.tasks, "_GatheringFuture", None)


class Branches:
    """The asyncio tasks that run one turn's workflow body, and whether they can still progress.

    Args:
        on_change: Called (on the loop, synchronously) when a branch parks, when a member task
            ends, and when a state :meth:`idle` last answered False may have changed. The turn's
            watcher sets its event here and then asks :meth:`settled`.
    """

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._exact = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unparked: set[asyncio.Task[Any]] = set()
        self._parked = 0
        self._hint: asyncio.Task[Any] | None = None
        self._armed: set[asyncio.Future[Any]] = set()
        self._recheck_due = False

    @property
    def parked(self) -> int:
        """How many branches are parked now."""
        return self._parked

    @property
    def exact(self) -> bool:
        """Whether membership is tracked (asyncio), rather than the fallback's counts."""
        return self._exact

    @contextmanager
    def running(self) -> Iterator[None]:
        """Await the workflow body inside this block, in the task that runs it.

        That task and every task it creates from here on are the turn's branches. On asyncio
        this enters :func:`tracking` (free when the engine already holds it).
        """
        try:
            root = asyncio.current_task()
        except RuntimeError:  # no asyncio loop here (trio): the fallback
            root = None
        if root is None or not hasattr(root, "_fut_waiter"):
            yield
            return
        with tracking():
            self._exact = True
            token = _CURRENT.set(self)
            self._join(root)
            try:
                yield
            finally:
                _CURRENT.reset(token)
                root.remove_done_callback(self._finished)
                self._leave(root)

    async def park(self) -> NoReturn:
        """Wait until the turn ends (the caller is cancelled); the branch counts as parked."""
        await self.nap(None)
        raise AssertionError("unreachable")  # pragma: no cover

    async def nap(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: until the turn ends); meanwhile the branch counts as parked.

        A branch napping until a wake time does not keep the turn open: if every other
        branch waits too, the turn ends and the run resumes at that time. If the turn goes on,
        the nap returns when its time is up.
        """
        task = asyncio.current_task() if self._exact else None
        if task is not None:
            if task not in self._tasks:
                self._join(task)
            self._unparked.discard(task)
        self._parked += 1
        self._notify()
        try:
            if seconds is None:
                await anyio.sleep_forever()
            else:
                await anyio.sleep(seconds)
        finally:
            self._parked -= 1
            if task is not None and task in self._tasks:
                self._unparked.add(task)

    def idle(self) -> bool:
        """Whether every branch is parked or waits only on other branches, and one is parked.

        When the answer is False, ``on_change`` is arranged for when it may change. Without
        exact tracking (see :attr:`exact`) this only says whether something is parked.
        """
        if not self._parked:
            return False
        if not self._exact:
            return True
        hint = self._hint
        if hint is not None and hint in self._unparked and not self._waits_on_turn(hint, []):
            return False
        pending = list(self._unparked)
        while pending:
            task = pending.pop()
            if not self._waits_on_turn(task, pending):
                self._hint = task
                return False
        self._hint = None
        return True

    async def settled(self, busy: Callable[[], bool]) -> bool:
        """Whether the turn may end now.

        Args:
            busy: The turn's own evidence of work: True while a durable call is between its
                ``begin()`` and ``end()``. On asyncio :meth:`idle` decides the rest; otherwise
                the fallback lets branches take a few scheduler passes and asks again.
        """
        if busy() or not self.idle():
            return False
        if self._exact:
            return True
        for _ in range(_FALLBACK_PASSES):
            await anyio.lowlevel.cancel_shielded_checkpoint()
        return not busy() and self._parked > 0

    # -- membership -----------------------------------------------------------------------------

    def _join(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        self._unparked.add(task)
        task.add_done_callback(self._finished)

    def _leave(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._unparked.discard(task)
        if self._hint is task:
            self._hint = None

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._leave(task)
        self._notify()

    # -- waiting --------------------------------------------------------------------------------

    def _waits_on_turn(self, task: asyncio.Task[Any], pending: list[asyncio.Task[Any]]) -> bool:
        """Whether ``task`` waits only on branches; when not, a later ``on_change`` is arranged.

        Children it waits on that were not yet members join and go to ``pending``.
        """
        if task.done():
            return True
        # The future a suspended task waits on; private to asyncio, present on C and Python tasks.
        waiter = cast("asyncio.Future[Any] | None", getattr(task, "_fut_waiter", None))
        if waiter is None or waiter.done() or task is _running_task():
            self._recheck_soon()
            return False
        children = _children(task, waiter)
        if children is None:
            self._arm(waiter)
            return False
        for child in children:
            if isinstance(child, asyncio.Future) and child.done():
                continue
            if not isinstance(child, asyncio.Task):  # a plain future: anyone may complete it
                self._arm(waiter)
                return False
            if child not in self._tasks:
                self._join(child)
                pending.append(child)
        return True

    def _recheck_soon(self) -> None:
        if not self._recheck_due:
            self._recheck_due = True
            asyncio.get_running_loop().call_soon(self._rechecked)

    def _rechecked(self) -> None:
        self._recheck_due = False
        self._notify()

    def _arm(self, waiter: asyncio.Future[Any]) -> None:
        if waiter not in self._armed:
            self._armed.add(waiter)
            waiter.add_done_callback(self._armed_done)

    def _armed_done(self, waiter: asyncio.Future[Any]) -> None:
        self._armed.discard(waiter)
        self._notify()

    def _notify(self) -> None:
        if self._parked:
            self._on_change()


@contextmanager
def detached() -> Iterator[None]:
    """Tasks created inside this block are not branches of the turn whose code runs it.

    For the work of a durable call: a step's function, the store, the transport.
    """
    token = _CURRENT.set(None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


# -- the task factory ---------------------------------------------------------------------------


@dataclass
class _Installed:
    factory: _BranchFactory
    users: int = 0


_INSTALLED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Installed] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def tracking() -> Iterator[None]:
    """Make the running asyncio loop tell turns about the tasks their branches create.

    Installs a task factory that chains the one already installed (if any), counted per loop
    so engines and turns may nest this freely; the last to leave restores the previous factory.
    If another factory was installed over ours meanwhile, ours stays in its chain (as a plain
    pass-through once no turn runs) rather than break it.
    """
    loop = asyncio.get_running_loop()
    installed = _INSTALLED.get(loop)
    if installed is None:
        installed = _INSTALLED[loop] = _Installed(_BranchFactory(loop.get_task_factory()))
        loop.set_task_factory(installed.factory)
    installed.users += 1
    try:
        yield
    finally:
        installed.users -= 1
        if not installed.users:
            del _INSTALLED[loop]
            if loop.get_task_factory() is installed.factory:
                loop.set_task_factory(installed.factory.previous)


class _BranchFactory:
    """Creates a task through the previous factory, then adds it to the creator's turn."""

    def __init__(self, previous: Callable[..., asyncio.Future[Any]] | None) -> None:
        self.previous = previous

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        /,
        **options: Any,
    ) -> asyncio.Future[Any]:
        if self.previous is None:
            task: asyncio.Future[Any] = asyncio.Task(coro, loop=loop, **options)
        else:
            task = self.previous(loop, coro, **options)
        context: contextvars.Context | None = options.get("context")
        branches = _CURRENT.get() if context is None else context.get(_CURRENT)
        if branches is not None and isinstance(task, asyncio.Task):
            branches._join(task)
        return task


# -- recognising waits on other tasks ----------------------------------------------------------


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # pragma: no cover - idle() is called on the loop
        return None


def _children(task: asyncio.Task[Any], waiter: asyncio.Future[Any]) -> Collection[object] | None:
    """What ``task`` waits on if it waits only for other tasks, else None."""
    if isinstance(waiter, asyncio.Task):
        return (waiter,)
    if _GatherFuture is not None and type(waiter) is _GatherFuture:
        children = getattr(waiter, "_children", None)
        return None if children is None else tuple(children)
    frame = _innermost_frame(task)
    if frame is None:
        return None
    recognise = _WAITS.get(frame.f_code)
    return None if recognise is None else recognise(frame.f_locals, waiter)


def _innermost_frame(task: asyncio.Task[Any]) -> FrameType | None:
    frame: FrameType | None = None
    awaitable: object = task.get_coro()
    while True:
        inner = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if inner is None:
            return frame
        frame = inner
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


def _group_children(
    local: Mapping[str, object], waiter: asyncio.Future[Any]
) -> Collection[object] | None:
    """A task group's ``__aexit__`` waiting for its tasks (asyncio; anyio from 4.8)."""
    group = local.get("self")
    if getattr(group, "_on_completed_fut", None) is not waiter:
        return None
    tasks = getattr(group, "_tasks", None)
    return None if tasks is None else tuple(tasks)


def _wait_children(
    local: Mapping[str, object], waiter: asyncio.Future[Any]
) -> Collection[object] | None:
    """``asyncio.wait`` without a timeout (anyio 4.6 task groups), or anyio 4.7's ``_wait``."""
    if local.get("waiter") is not waiter or local.get("timeout") is not None:
        return None
    futures = local.get("fs", local.get("tasks"))
    return tuple(cast("Collection[object]", futures)) if futures else None


def _code(function: object) -> CodeType | None:
    return cast("CodeType | None", getattr(function, "__code__", None))


_Recogniser: TypeAlias = (
    "Callable[[Mapping[str, object], asyncio.Future[Any]], Collection[object] | None]"
)

_WAITS: dict[CodeType, _Recogniser] = {
    code: recognise
    for function, recognise in (
        (asyncio.TaskGroup.__aexit__, _group_children),
        (anyio_asyncio.TaskGroup.__aexit__, _group_children),
        (getattr(asyncio.tasks, "_wait", None), _wait_children),
        (getattr(anyio_asyncio, "_wait", None), _wait_children),
    )
    if (code := _code(function)) is not None
}
