"""``TransportSuite``: the transport contract, checked with recording receivers.

No engine and no store: each test serves a few :class:`FakeReceiver` instances, sends through a
transport of its own and waits, under a deadline, for what must arrive. Areas: routing (tasks
to servers of their step, results and nudges to driving receivers), the wire (every field and
awkward payloads intact, malformed messages dropped), sharing and at-least-once redelivery,
receivers whose handlers raise, and the life cycle (``serve`` cancelled, ``aclose``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance._receivers import FakeReceiver, serving, unique
from durable.conformance._wire import (
    ERRORS,
    MALFORMED,
    PAYLOADS,
    assert_intact,
    failed,
    result,
    task,
)
from durable.core import ProtocolError, StepResult, StepTask, StoreUnavailableError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from durable.conformance._receivers import Serving, TransportFactory
    from durable.core import Transport


class TransportSuite(SuiteBase):
    """The transport contract, run against the factory ``durable_transport`` yields."""

    @pytest.fixture
    def durable_transport(self) -> TransportFactory:
        """The transport under test: override it to yield a factory of connected transports.

        Each call of the factory returns a transport on the same medium: for a networked
        transport a new client of the same broker (the suite gives every receiver, and the
        sender, its own); for an in-process one, the same instance. The medium is fresh for
        every test. After the ``yield``, close every transport the factory made.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override the durable_transport fixture: define "
            "`@pytest.fixture async def durable_transport(self)` on the class, yielding a "
            "callable that returns a transport on a fresh medium (see docs/conformance.md)"
        )

    def _serving(
        self, connect: TransportFactory, *receivers: FakeReceiver
    ) -> AbstractAsyncContextManager[Serving]:
        return serving(connect, *receivers, timeout=self.options.delivery_timeout)

    # -- routing --------------------------------------------------------------------------------

    async def test_a_task_reaches_only_receivers_that_serve_its_step(
        self, durable_transport: TransportFactory
    ) -> None:
        alpha, beta = unique("alpha"), unique("beta")
        alpha_server = FakeReceiver("alpha server", steps=[alpha])
        beta_server = FakeReceiver("beta server", steps=[beta])
        driver = FakeReceiver("driver", drives=True)
        receivers = (alpha_server, beta_server, driver)
        run_id = unique("run")
        sent = [task(run_id, n, alpha if n % 2 else beta) for n in range(10)]
        async with self._serving(durable_transport, *receivers) as s:
            for message in sent:
                await s.sender.send_task(message)
            await s.until(
                lambda: _delivered(*receivers) >= {t.task_id for t in sent}, "10 tasks to arrive"
            )
            await s.settle()
        assert {t.step for t in alpha_server.tasks} == {alpha}, "a task reached a non-server"
        assert {t.step for t in beta_server.tasks} == {beta}, "a task reached a non-server"
        assert driver.tasks == [], "a task reached a receiver serving no step"

    @pytest.mark.parametrize("sent_by", ["send_result", "handle_task"])
    async def test_a_result_reaches_only_driving_receivers(
        self, durable_transport: TransportFactory, sent_by: str
    ) -> None:
        step, run_id = unique("step"), unique("run")
        server = FakeReceiver("server", steps=[step])
        bystander = FakeReceiver("bystander", steps=[unique("other")])
        drivers = [FakeReceiver(f"driver {i}", drives=True) for i in range(2)]
        ids = {result(run_id, n).task_id for n in range(10)}
        async with self._serving(durable_transport, server, bystander, *drivers) as s:
            for n in range(10):
                if sent_by == "send_result":
                    await s.sender.send_result(result(run_id, n))
                else:
                    await s.sender.send_task(task(run_id, n, step))
            await s.until(
                lambda: {r.task_id for d in drivers for r in d.results} >= ids,
                f"10 results ({sent_by}) to reach the driving receivers",
            )
            await s.settle()
        assert server.results == bystander.results == [], "a result reached a non-driving one"

    async def test_a_nudge_reaches_every_driving_receiver_and_no_other(
        self, durable_transport: TransportFactory
    ) -> None:
        server = FakeReceiver("server", steps=[unique("step")])
        drivers = [FakeReceiver(f"driver {i}", drives=True) for i in range(3)]
        runs = [unique("run") for _ in range(5)]
        async with self._serving(durable_transport, server, *drivers) as s:
            for run_id in runs:
                await s.sender.nudge(run_id)
            await s.until(
                lambda: all(set(d.nudges) >= set(runs) for d in drivers),
                "5 nudges to reach each of 3 driving receivers",
            )
            await s.settle()
        assert server.nudges == [], "a nudge reached a receiver that does not drive runs"

    async def test_sending_with_no_receiver_does_not_raise(
        self, durable_transport: TransportFactory
    ) -> None:
        step, run_id = unique("step"), unique("run")
        await self._send_unwanted(durable_transport(), run_id, "no receiver at all")
        server = FakeReceiver("server", steps=[step])
        async with self._serving(durable_transport, server) as s:
            await self._send_unwanted(s.sender, run_id, "only a non-driving server of another step")
            served = task(run_id, 5, step)
            await s.sender.send_task(served)
            await s.until(lambda: server.tasks, "a served task sent after unserved messages")
            await s.settle()
        assert {t.task_id for t in server.tasks} == {served.task_id}
        assert (server.results, server.nudges) == ([], [])

    async def _send_unwanted(self, sender: Transport, run_id: str, receivers: str) -> None:
        try:
            with anyio.fail_after(self.options.delivery_timeout):
                await sender.send_task(task(run_id, 1, unique("unserved")))
                await sender.send_result(result(run_id, 2))
                await sender.nudge(run_id)
        except Exception as exc:
            raise AssertionError(f"sending with {receivers} to take it raised {exc!r}") from exc

    # -- the wire -------------------------------------------------------------------------------

    @pytest.mark.parametrize("payload", sorted(PAYLOADS))
    async def test_task_fields_arrive_intact(
        self, durable_transport: TransportFactory, payload: str
    ) -> None:
        step = unique("payments.charge-card")
        server = FakeReceiver("server", steps=[step])
        sent = task(unique("run ü ✓"), 3, step, PAYLOADS[payload])
        async with self._serving(durable_transport, server) as s:
            await s.sender.send_task(sent)
            await s.until(lambda: server.tasks, "the task to arrive")
        assert_intact(sent, server.tasks[0])

    @pytest.mark.parametrize("payload", sorted(PAYLOADS))
    async def test_result_fields_arrive_intact(
        self, durable_transport: TransportFactory, payload: str
    ) -> None:
        await self._arrives_intact(
            durable_transport, result(unique("run ü ✓"), 3, PAYLOADS[payload])
        )

    @pytest.mark.parametrize("payload", sorted(PAYLOADS))
    async def test_a_handled_tasks_result_arrives_intact(
        self, durable_transport: TransportFactory, payload: str
    ) -> None:
        step, run_id = unique("step"), unique("run ü ✓")
        server = FakeReceiver(
            "server", steps=[step], reply=lambda t: result(t.run_id, t.seq, PAYLOADS[payload])
        )
        driver = FakeReceiver("driver", drives=True)
        async with self._serving(durable_transport, server, driver) as s:
            await s.sender.send_task(task(run_id, 3, step))
            await s.until(lambda: driver.results, "the handled task's result to arrive")
        assert_intact(result(run_id, 3, PAYLOADS[payload]), driver.results[0])

    @pytest.mark.parametrize("error", sorted(ERRORS))
    async def test_a_failed_results_error_arrives_intact(
        self, durable_transport: TransportFactory, error: str
    ) -> None:
        await self._arrives_intact(durable_transport, failed(unique("run"), 1, ERRORS[error]))

    async def _arrives_intact(self, durable_transport: TransportFactory, sent: StepResult) -> None:
        driver = FakeReceiver("driver", drives=True)
        async with self._serving(durable_transport, driver) as s:
            await s.sender.send_result(sent)
            await s.until(lambda: driver.results, "the result to arrive")
        assert_intact(sent, driver.results[0])

    async def test_a_nudges_run_id_arrives_intact(
        self, durable_transport: TransportFactory
    ) -> None:
        driver = FakeReceiver("driver", drives=True)
        run_id = unique("run ü ✓ 🚀 :/\\ \"quoted\" 'single'")
        async with self._serving(durable_transport, driver) as s:
            await s.sender.nudge(run_id)
            await s.until(lambda: driver.nudges, "the nudge to arrive")
        assert set(driver.nudges) == {run_id}

    @pytest.mark.parametrize("malformed", sorted(MALFORMED))
    async def test_a_malformed_message_is_dropped_with_a_log(
        self,
        durable_transport: TransportFactory,
        caplog: pytest.LogCaptureFixture,
        malformed: str,
    ) -> None:
        step, run_id = unique("step"), unique("run")
        server = FakeReceiver("server", steps=[step])
        driver = FakeReceiver("driver", drives=True)
        bad = MALFORMED[malformed](run_id, step)
        is_task = isinstance(bad, StepTask)
        valid = [task(run_id, n, step) if is_task else result(run_id, n) for n in (1, 2, 3)]
        async with self._serving(durable_transport, server, driver) as s:
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                try:
                    await _send(s.sender, bad)
                except ProtocolError:
                    refused = True  # refusing to send it is as good as dropping it on receipt
                else:
                    refused = False
                for message in valid:
                    await _send(s.sender, message)
                await s.until(
                    lambda: _delivered(server, driver) >= {m.task_id for m in valid},
                    f"3 valid messages sent after a {malformed} message",
                )
                await s.settle()
        assert bad.task_id not in _delivered(server, driver), f"a {malformed} message arrived"
        assert refused or any(r.levelno >= logging.WARNING for r in caplog.records), (
            f"a {malformed} message was dropped without a log record at WARNING or above"
        )

    # -- sharing and redelivery -----------------------------------------------------------------

    async def test_receivers_of_one_step_share_its_tasks(
        self, durable_transport: TransportFactory
    ) -> None:
        step, run_id = unique("step"), unique("run")
        gate = anyio.Event()
        servers = [FakeReceiver(f"server {i}", steps=[step], gate=gate) for i in range(3)]
        driver = FakeReceiver("driver", drives=True)
        sent = [task(run_id, n, step) for n in range(30)]
        ids = {t.task_id for t in sent}
        async with self._serving(durable_transport, *servers, driver) as s:
            for message in sent:
                await s.sender.send_task(message)
            await s.until(
                lambda: all(server.tasks for server in servers),
                "each of 3 servers of a step to hold one of 30 tasks while none is answered",
            )
            gate.set()
            await s.until(
                lambda: {r.task_id for r in driver.results} >= ids,
                "the results of all 30 tasks",
            )
        assert {t.task_id for server in servers for t in server.tasks} == ids

    async def test_every_task_is_handled_at_least_once_under_load(
        self, durable_transport: TransportFactory
    ) -> None:
        step, run_id = unique("step"), unique("run")
        servers = [FakeReceiver(f"server {i}", steps=[step]) for i in range(3)]
        driver = FakeReceiver("driver", drives=True)
        sent = [task(run_id, n, step, {"n": n}) for n in range(200)]
        async with self._serving(durable_transport, *servers, driver) as s:
            async with anyio.create_task_group() as senders:
                for first in range(10):
                    senders.start_soon(_send_all, s.sender, sent[first::10])
            await s.until(
                lambda: {r.task_id for r in driver.results} >= {t.task_id for t in sent},
                "the results of 200 tasks sent by 10 concurrent senders",
            )
        handled = {t.task_id for server in servers for t in server.tasks}
        assert handled == {t.task_id for t in sent}

    @needs("redeliveries")
    async def test_a_task_whose_handler_raised_is_delivered_again(
        self, durable_transport: TransportFactory
    ) -> None:
        times, step = self.options.redeliveries, unique("step")
        server = FakeReceiver("flaky server", steps=[step], raise_times=times)
        driver = FakeReceiver("driver", drives=True)
        sent = task(unique("run"), 1, step)
        async with self._serving(durable_transport, server, driver) as s:
            await s.sender.send_task(sent)
            await s.until(
                lambda: driver.results,
                f"the result of a task whose handler raised on its first {times} deliveries",
            )
        assert {t.task_id for t in server.tasks} == {sent.task_id}
        assert len(server.tasks) >= times + 1

    @needs("redeliveries")
    async def test_a_result_whose_handler_raised_is_delivered_again(
        self, durable_transport: TransportFactory
    ) -> None:
        times = self.options.redeliveries
        driver = FakeReceiver("flaky driver", drives=True, raise_times=times)
        sent = result(unique("run"), 1)
        async with self._serving(durable_transport, driver) as s:
            await s.sender.send_result(sent)
            await s.until(
                lambda: len(driver.results) > times,
                f"delivery {times + 1} of a result whose handler raised on the first {times}",
            )
        assert {r.task_id for r in driver.results} == {sent.task_id}

    # -- receivers that raise -------------------------------------------------------------------

    @pytest.mark.parametrize(
        "error", [RuntimeError, StoreUnavailableError], ids=lambda e: e.__name__
    )
    @pytest.mark.parametrize("handler", ["handle_task", "handle_result", "handle_nudge"])
    async def test_a_raising_handler_does_not_stop_later_deliveries(
        self, durable_transport: TransportFactory, handler: str, error: type[Exception]
    ) -> None:
        step = unique("step")
        poison = [unique("poison") for _ in range(20)]
        healthy = [unique("healthy") for _ in range(5)]
        receiver = FakeReceiver("victim", steps=[step], drives=True, raise_on=poison, error=error)
        async with self._serving(durable_transport, receiver) as s:
            for run_id in poison:
                await _send_kind(s.sender, handler, run_id, step)
            await s.until(
                lambda: set(_seen_runs(receiver, handler)) >= set(poison),
                f"20 messages whose {handler} raises {error.__name__}",
            )
            for run_id in healthy:
                await _send_kind(s.sender, handler, run_id, step)
            await s.until(
                lambda: set(_seen_runs(receiver, handler)) >= set(healthy),
                f"5 messages sent after 20 whose {handler} raised {error.__name__}",
            )

    # -- life cycle -----------------------------------------------------------------------------

    async def test_a_cancelled_serve_returns_and_its_receiver_gets_nothing_more(
        self, durable_transport: TransportFactory
    ) -> None:
        step, run_id = unique("step"), unique("run")
        leaving = FakeReceiver("leaving", steps=[step], drives=True)
        staying = FakeReceiver("staying", steps=[step], drives=True)
        async with self._serving(durable_transport, leaving, staying) as s:
            await s.stop(leaving)
            before = (list(leaving.tasks), list(leaving.results), list(leaving.nudges))
            for n in range(10):
                await s.sender.send_task(task(run_id, n, step))
                await s.sender.send_result(result(run_id, 100 + n))
            await s.sender.nudge(run_id)
            await s.until(
                lambda: (
                    len(staying.tasks) >= 10
                    and len(staying.results) >= 20
                    and run_id in staying.nudges
                ),
                "the receiver still served to get 10 tasks, 20 results and a nudge",
            )
            await s.settle()
        after = (leaving.tasks, leaving.results, leaving.nudges)
        assert after == before, "a receiver got messages after its serve was cancelled"

    async def test_a_receiver_served_again_after_a_cancel_gets_messages(
        self, durable_transport: TransportFactory
    ) -> None:
        step, run_id = unique("step"), unique("run")
        returning = FakeReceiver("returning", steps=[step], drives=True)
        async with self._serving(durable_transport, returning) as s:
            await s.stop(returning)
            await s.start(returning)
            await s.settle()
            await s.sender.send_task(task(run_id, 1, step))
            await s.sender.nudge(run_id)
            await s.until(
                lambda: returning.tasks and returning.results and returning.nudges,
                "a task, its result and a nudge after serve was called again",
            )

    async def test_aclose_twice_is_harmless(self, durable_transport: TransportFactory) -> None:
        transport = durable_transport()
        await transport.nudge(unique("run"))
        with anyio.fail_after(self.options.delivery_timeout):
            await transport.aclose()
            try:
                await transport.aclose()
            except Exception as exc:
                raise AssertionError(f"a second aclose() raised {exc!r}") from exc


async def _send(transport: Transport, message: StepTask | StepResult) -> None:
    if isinstance(message, StepTask):
        await transport.send_task(message)
    else:
        await transport.send_result(message)


async def _send_all(transport: Transport, messages: list[StepTask]) -> None:
    for message in messages:
        await transport.send_task(message)


async def _send_kind(transport: Transport, handler: str, run_id: str, step: str) -> None:
    if handler == "handle_task":
        await transport.send_task(task(run_id, 1, step))
    elif handler == "handle_result":
        await transport.send_result(result(run_id, 1))
    else:
        await transport.nudge(run_id)


def _seen_runs(receiver: FakeReceiver, handler: str) -> list[str]:
    if handler == "handle_task":
        return [t.run_id for t in receiver.tasks]
    if handler == "handle_result":
        return [r.run_id for r in receiver.results]
    return receiver.nudges


def _delivered(*receivers: FakeReceiver) -> set[str]:
    return {t.task_id for r in receivers for t in r.tasks} | {
        m.task_id for r in receivers for m in r.results
    }
