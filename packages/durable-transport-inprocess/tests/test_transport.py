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
    """Records what the transport hands it; its first ``fail_times`` deliveries raise."""

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
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("handler process hiccup")


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


async def test_a_task_whose_handling_keeps_raising_is_dropped_after_max_redeliveries(
    serving: tuple[InProcessTransport, list[Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, (a, b, c) = serving
    a.fail_times = b.fail_times = 100
    with caplog.at_level(logging.ERROR, "durable.transports.inprocess"):
        await transport.send_task(task(1))
        await until(a, lambda: "dropped it" in caplog.text)
    assert len(a.tasks) + len(b.tasks) == 3  # max_redeliveries=2: the first delivery and 2 more
    assert (len(a.tasks), len(b.tasks)) in ((2, 1), (1, 2))  # redelivered to the next in turn
    assert all(r.results == [] for r in (a, b, c))


async def test_handler_errors_are_logged_once_per_kind_and_serve_goes_on(
    serving: tuple[InProcessTransport, list[Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, (a, _, c) = serving
    a.fail_times = c.fail_times = 1_000
    with caplog.at_level(logging.ERROR, "durable.transports.inprocess"):
        for n in range(50):
            await transport.nudge(f"run-{n}")
        await until(a, lambda: len(a.nudges) == len(c.nudges) == 50)
    (record,) = caplog.records
    assert record.name == "durable.transports.inprocess"
    assert record.exc_info is not None
    assert "handling the nudge for run run-0 raised" in record.getMessage()


def test_max_redeliveries_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_redeliveries must be 0 or more, got -1"):
        InProcessTransport(max_redeliveries=-1)


async def test_a_task_nobody_serves_is_dropped_with_a_warning(
    serving: tuple[InProcessTransport, list[Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, receivers = serving
    with caplog.at_level(logging.WARNING, "durable.transports.inprocess"):
        await transport.send_task(task(1, step="unknown.step"))
    assert "no receiver" in caplog.text
    assert all(r.tasks == [] for r in receivers)
