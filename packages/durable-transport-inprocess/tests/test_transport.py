from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import pytest

from durable.core import StepResult, StepTask, Transport
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _is_transport(transport: InProcessTransport) -> Transport:
    return transport


@dataclass
class Receiver:
    """Records what the transport hands it."""

    steps: frozenset[str] = frozenset()
    drives: bool = True
    fail_times: int = 0
    tasks: list[StepTask] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    nudges: list[str] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def served_steps(self) -> Collection[str]:
        return self.steps

    @property
    def drives_runs(self) -> bool:
        return self.drives

    async def handle_task(self, task: StepTask) -> StepResult:
        self.tasks.append(task)
        self._poke()
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("handler process hiccup")
        return StepResult(
            task_id=task.task_id,
            run_id=task.run_id,
            step_id=task.step_id,
            seq=task.seq,
            ok=True,
            output={"echo": task.input},
        )

    async def handle_result(self, result: StepResult) -> None:
        self.results.append(result)
        self._poke()

    async def handle_nudge(self, run_id: str) -> None:
        self.nudges.append(run_id)
        self._poke()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


def task(n: int, step: str = "double") -> StepTask:
    return StepTask(
        task_id=f"r:{n}:1",
        run_id="r",
        step_id=f"r:{n}",
        seq=n,
        step=step,
        input={"n": n, "text": "héllo ✓"},
        attempt=1,
    )


async def until(receiver: Receiver, done: Callable[[], bool]) -> None:
    """Wait, up to a deadline, until ``done()`` holds (checked whenever a receiver is handed
    something, and at least every 10 ms since the message may reach another receiver)."""
    with anyio.fail_after(5):
        while not done():
            with anyio.move_on_after(0.01):
                await receiver.changed.wait()


@pytest.fixture
async def serving() -> AsyncIterator[tuple[InProcessTransport, list[Receiver]]]:
    transport = InProcessTransport(max_redeliveries=2)
    receivers = [
        Receiver(steps=frozenset({"double"}), drives=True),
        Receiver(steps=frozenset({"double"}), drives=False),
        Receiver(steps=frozenset(), drives=True),
    ]
    async with anyio.create_task_group() as tg:
        for receiver in receivers:
            tg.start_soon(transport.serve, receiver)
        await anyio.wait_all_tasks_blocked()
        yield transport, receivers
        tg.cancel_scope.cancel()


async def test_tasks_go_round_robin_to_receivers_serving_the_step(
    serving: tuple[InProcessTransport, list[Receiver]],
) -> None:
    transport, (a, b, c) = serving
    for n in range(4):
        await transport.send_task(task(n))
    await until(a, lambda: len(a.tasks) + len(b.tasks) == 4)
    assert (len(a.tasks), len(b.tasks), c.tasks) == (2, 2, [])


async def test_task_results_travel_as_json_to_a_driving_receiver(
    serving: tuple[InProcessTransport, list[Receiver]],
) -> None:
    transport, (a, b, c) = serving
    await transport.send_task(task(7))
    await until(a, lambda: len(a.results) + len(c.results) == 1)
    (result,) = a.results + c.results
    assert result.ok
    assert result.output == {"echo": {"n": 7, "text": "héllo ✓"}}
    assert b.results == []


async def test_nudges_reach_every_driving_receiver(
    serving: tuple[InProcessTransport, list[Receiver]],
) -> None:
    transport, (a, b, c) = serving
    await transport.nudge("run-1")
    await until(c, lambda: a.nudges == ["run-1"] and c.nudges == ["run-1"])
    assert b.nudges == []


async def test_a_crashed_delivery_is_delivered_again(
    serving: tuple[InProcessTransport, list[Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, (a, b, c) = serving
    a.steps = b.steps = frozenset()
    flaky = Receiver(steps=frozenset({"flaky"}), drives=True, fail_times=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.serve, flaky)
        await anyio.wait_all_tasks_blocked()
        with caplog.at_level(logging.ERROR, "durable.transports.inprocess"):
            await transport.send_task(task(1, step="flaky"))
            await until(flaky, lambda: len(flaky.tasks) == 3)
            await until(flaky, lambda: sum(len(r.results) for r in (a, b, c, flaky)) == 1)
        tg.cancel_scope.cancel()
    assert len(flaky.tasks) == 3
    assert caplog.text.count("delivery") == 2


async def test_a_task_nobody_serves_is_dropped_with_a_warning(
    serving: tuple[InProcessTransport, list[Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, receivers = serving
    with caplog.at_level(logging.WARNING, "durable.transports.inprocess"):
        await transport.send_task(task(1, step="unknown.step"))
    assert "no receiver" in caplog.text
    assert all(r.tasks == [] for r in receivers)
