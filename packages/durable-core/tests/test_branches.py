from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from durable.core._branches import Branches, detached, tracking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

pytestmark = pytest.mark.anyio

T = TypeVar("T")
DEADLINE = 5.0


async def until(condition: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - the condition is plain state of the test
            await anyio.sleep(0.002)
        return
    raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")


class Turnish(Generic[T]):
    """A turn reduced to its watcher: ends at the first moment the branches are settled."""

    def __init__(self) -> None:
        self.changed = anyio.Event()
        self.branches = Branches(self._on_change)
        self.notifications = 0

    def _on_change(self) -> None:
        self.notifications += 1
        self.changed.set()

    async def run(
        self, body: Callable[[Branches], Awaitable[object]], observe: Callable[[], T]
    ) -> T:
        """What ``observe`` returns at the first moment the turn may end (the run suspend)."""
        seen: list[T] = []

        async def main() -> None:
            with self.branches.running():
                await body(self.branches)

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(main)
                while not seen:
                    await self.changed.wait()
                    self.changed = anyio.Event()
                    if await self.branches.settled(lambda: False):
                        seen.append(observe())
                tg.cancel_scope.cancel()
        return seen[0]


class Log:
    def __init__(self) -> None:
        self.entries: list[str] = []

    def snapshot(self) -> list[str]:
        return list(self.entries)

    async def sleeper(self, seconds: float = 0.05) -> None:
        await anyio.sleep(seconds)
        self.entries.append("slept")


async def _anyio_group(branches: Branches, log: Log) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(branches.park)
        tg.start_soon(log.sleeper)


async def _nested_anyio_groups(branches: Branches, log: Log) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(branches.park)
        tg.start_soon(_anyio_group, branches, log)


async def _gather(branches: Branches, log: Log) -> None:
    await asyncio.gather(branches.park(), log.sleeper())  # noqa: TID251 - the case under test


async def _asyncio_group(branches: Branches, log: Log) -> None:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(branches.park())
        tg.create_task(log.sleeper())


async def _asyncio_wait(branches: Branches, log: Log) -> None:
    tasks = [
        asyncio.create_task(branches.park()),  # noqa: TID251 - the case under test
        asyncio.create_task(log.sleeper()),  # noqa: TID251
    ]
    await asyncio.wait(tasks)


async def _foreign_context(branches: Branches, log: Log) -> None:
    """The sleeper's task does not inherit the turn: it is found through the group's wait."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(branches.park())
        tg.create_task(log.sleeper(), context=contextvars.Context())


async def _unchained_factory(branches: Branches, log: Log) -> None:
    """A factory replaces ours without chaining it: branches are found through their waits."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(_recording([]))
    try:
        await _anyio_group(branches, log)
    finally:
        loop.set_task_factory(None)


SHAPES: dict[str, Callable[[Branches, Log], Awaitable[None]]] = {
    "anyio-task-group": _anyio_group,
    "nested-anyio-task-groups": _nested_anyio_groups,
    "asyncio-gather": _gather,
    "asyncio-task-group": _asyncio_group,
    "asyncio-wait": _asyncio_wait,
    "task-in-a-foreign-context": _foreign_context,
    "factory-replaced-unchained": _unchained_factory,
}


async def log_at_suspension(shape: Callable[[Branches, Log], Awaitable[None]]) -> list[str]:
    log = Log()
    return await Turnish[list[str]]().run(lambda b: shape(b, log), log.snapshot)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
async def test_a_sleeping_branch_keeps_the_turn_open_beside_a_parked_one(
    shape: Callable[[Branches, Log], Awaitable[None]],
) -> None:
    assert await log_at_suspension(shape) == ["slept"]


async def test_a_branch_that_parks_after_its_sleep_ends_the_turn() -> None:
    log = Log()

    async def sleep_then_park(branches: Branches) -> None:
        await log.sleeper()
        await branches.park()

    async def body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(sleep_then_park, branches)

    turn = Turnish[int]()
    assert await turn.run(body, lambda: turn.branches.parked) == 2
    assert log.entries == ["slept"]


async def test_a_task_awaited_later_after_a_finished_one() -> None:
    log = Log()

    async def body(branches: Branches) -> None:
        sleeping = asyncio.create_task(log.sleeper())  # noqa: TID251 - the case under test
        parked = asyncio.create_task(branches.park())  # noqa: TID251
        await sleeping
        log.entries.append("awaited")
        await parked

    assert await Turnish[list[str]]().run(body, log.snapshot) == ["slept", "awaited"]


async def test_the_body_sleeping_before_it_awaits_a_parked_task() -> None:
    log = Log()

    async def body(branches: Branches) -> None:
        parked = asyncio.create_task(branches.park())  # noqa: TID251 - the case under test
        await log.sleeper()
        await parked

    assert await Turnish[list[str]]().run(body, log.snapshot) == ["slept"]


async def test_the_body_running_a_few_passes_before_it_awaits_a_parked_task() -> None:
    passes: list[int] = []

    async def body(branches: Branches) -> None:
        parked = asyncio.create_task(branches.park())  # noqa: TID251 - the case under test
        for n in range(10):
            await anyio.lowlevel.checkpoint()
            passes.append(n)
        await parked

    assert await Turnish[int]().run(body, lambda: len(passes)) == 10


async def test_a_branch_waiting_on_a_socket_keeps_the_turn_open() -> None:
    replies: list[bytes] = []

    async def echo_later(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = await stream.receive()
            await anyio.sleep(0.05)
            await stream.send(data)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def call() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"ping")
            replies.append(await stream.receive())

    async def body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(call)

    async with listener, anyio.create_task_group() as server_tg:
        server_tg.start_soon(listener.serve, echo_later)
        assert await Turnish[list[bytes]]().run(body, lambda: list(replies)) == [b"ping"]
        server_tg.cancel_scope.cancel()


async def test_an_event_between_branches_keeps_the_turn_open_until_set() -> None:
    gate = anyio.Event()
    log = Log()
    turn = Turnish[bool]()
    result: list[bool] = []

    async def waiter() -> None:
        log.entries.append("waiting")
        await gate.wait()

    async def body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(waiter)

    async def run() -> None:
        result.append(await turn.run(body, gate.is_set))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await until(lambda: turn.branches.parked == 1 and log.entries == ["waiting"], "both")
        assert not turn.branches.idle()
        gate.set()
    assert result == [True]


async def test_a_finished_task_notifies() -> None:
    release = anyio.Event()
    turn = Turnish[None]()

    async def body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(release.wait)

    async def main() -> None:
        with turn.branches.running():
            await body(turn.branches)

    async with anyio.create_task_group() as tg:
        tg.start_soon(main)
        await until(lambda: turn.branches.parked == 1, "the park")
        before = turn.notifications
        release.set()
        await until(lambda: turn.notifications > before, "a notification")
        assert turn.branches.idle()
        tg.cancel_scope.cancel()


async def test_tasks_of_other_turns_and_outside_any_turn_are_not_counted() -> None:
    hold = anyio.Event()
    outside_started = anyio.Event()
    other = Turnish[bool]()
    finished: list[bool] = []

    async def outside() -> None:
        outside_started.set()
        await hold.wait()

    async def other_body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(hold.wait)

    async def run_other() -> None:
        finished.append(await other.run(other_body, hold.is_set))

    async def body(branches: Branches) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(branches.park)
            tg.start_soon(branches.park)

    async with anyio.create_task_group() as tg:
        tg.start_soon(outside)
        tg.start_soon(run_other)
        await outside_started.wait()
        await until(lambda: other.branches.parked == 1, "the other turn's park")
        assert await Turnish[bool]().run(body, hold.is_set) is False
        assert not other.branches.idle()
        hold.set()
    assert finished == [True]


async def test_tasks_created_detached_are_not_branches() -> None:
    hold = anyio.Event()
    background: list[asyncio.Task[Any]] = []

    async def body(branches: Branches) -> None:
        with detached():
            background.append(asyncio.create_task(hold.wait()))  # noqa: TID251 - under test
        await branches.park()

    assert await Turnish[bool]().run(body, lambda: background[0].done()) is False
    hold.set()
    await background[0]


def _recording(seen: list[object]) -> Callable[..., asyncio.Future[Any]]:
    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **options: Any,
    ) -> asyncio.Future[Any]:
        seen.append(coro)
        return asyncio.Task(coro, loop=loop, **options)

    return factory


async def test_an_existing_factory_keeps_running_and_is_restored() -> None:
    loop = asyncio.get_running_loop()
    seen: list[object] = []
    existing = _recording(seen)
    loop.set_task_factory(existing)
    try:
        assert await log_at_suspension(_anyio_group) == ["slept"]
        assert len(seen) >= 2
        assert loop.get_task_factory() is existing
    finally:
        loop.set_task_factory(None)


async def test_no_factory_is_left_behind() -> None:
    loop = asyncio.get_running_loop()
    assert loop.get_task_factory() is None
    with tracking(), tracking():
        assert loop.get_task_factory() is not None
    assert loop.get_task_factory() is None


async def test_a_factory_installed_later_is_left_in_place() -> None:
    loop = asyncio.get_running_loop()
    try:
        with tracking():
            ours = loop.get_task_factory()
            assert ours is not None

            def chained(
                loop: asyncio.AbstractEventLoop,
                coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
            ) -> asyncio.Future[Any]:
                return ours(loop, coro)

            loop.set_task_factory(chained)
        assert loop.get_task_factory() is chained
        assert await asyncio.create_task(answer()) == 42  # noqa: TID251 - the factory under test
    finally:
        loop.set_task_factory(None)


async def answer() -> int:
    return 42


def test_trio_falls_back_to_counts_and_scheduler_passes() -> None:
    pytest.importorskip("trio")

    async def main() -> None:
        branches = Branches(lambda: None)

        async def body() -> None:
            with branches.running():
                await branches.park()

        async with anyio.create_task_group() as tg:
            tg.start_soon(body)
            await until(lambda: branches.parked == 1, "the park")
            assert not branches.exact
            assert await branches.settled(lambda: False)
            assert not await branches.settled(lambda: True)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")
