"""What the transport suite hands the transport under test: recording receivers, and serving.

``FakeReceiver`` is a plain :class:`~durable.core.TransportReceiver` that records every
delivery and can be told to raise. Each also serves a private *probe* step, and a driving one
takes probe nudges: :meth:`Serving.settle` sends probes until every receiver has one. That is
how the suite knows a networked transport has subscribed (``serve`` gives no signal of its own),
and, before asserting that something did *not* arrive, that earlier messages had their chance.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import anyio
import anyio.abc

from durable.conformance._harness import wait_until
from durable.core import StepResult, StepTask, Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterable

    from durable.core import JSONValue

TransportFactory: TypeAlias = Callable[[], Transport]
"""What ``durable_transport`` yields: each call, a transport on the same medium."""

PROBE = "durable.conformance.probe"
"""Prefix of probe steps and probe run ids; receivers keep probes out of what they record."""

_RESEND_EVERY = 10  # polls (of 10 ms) between two rounds of probes still unanswered


def unique(name: str) -> str:
    """``name`` with a random suffix, so no two tests share a step or run on one broker."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def ok_result(task: StepTask, output: JSONValue) -> StepResult:
    """A successful result answering ``task``."""
    return StepResult(
        task_id=task.task_id,
        run_id=task.run_id,
        step_id=task.step_id,
        seq=task.seq,
        ok=True,
        output=output,
    )


class FakeReceiver:
    """A receiver that records every delivery, in order, and raises when told to.

    Args:
        name: Shown in failure messages.
        steps: The steps it serves.
        drives: Whether it takes results and nudges.
        raise_times: Each task, result (by ``task_id``) and nudge (by run id) makes its handler
            raise on its first ``raise_times`` deliveries here.
        raise_on: Run ids whose messages make the handlers raise on every delivery.
        error: The exception class raised.
        gate: When given, ``handle_task`` waits for it before answering.
        reply: Builds the result ``handle_task`` returns (default: ok, naming this receiver).
    """

    def __init__(
        self,
        name: str,
        *,
        steps: Iterable[str] = (),
        drives: bool = False,
        raise_times: int = 0,
        raise_on: Collection[str] = (),
        error: type[Exception] = RuntimeError,
        gate: anyio.Event | None = None,
        reply: Callable[[StepTask], StepResult] | None = None,
    ) -> None:
        self.name = name
        self.probe_step = unique(f"{PROBE}.{name}")
        self._steps = frozenset({*steps, self.probe_step})
        self._drives = drives
        self._raise_times = raise_times
        self._raise_on = frozenset(raise_on)
        self._error = error
        self._gate = gate
        self._reply = reply or (lambda task: ok_result(task, {"handled_by": self.name}))
        self._probes: set[tuple[str, int]] = set()
        self.tasks: list[StepTask] = []
        self.results: list[StepResult] = []
        self.nudges: list[str] = []

    @property
    def served_steps(self) -> Collection[str]:
        """The steps given, and this receiver's probe step."""
        return self._steps

    @property
    def drives_runs(self) -> bool:
        """Whether it takes results and nudges."""
        return self._drives

    async def handle_task(self, task: StepTask) -> StepResult:
        """Record the task, raise if told to, wait for the gate, answer."""
        if task.step == self.probe_step:
            self._probes.add(("task", task.seq))
            return ok_result(task, None)
        self.tasks.append(task)
        self._trouble("handle_task", task.run_id, [t.task_id for t in self.tasks], task.task_id)
        if self._gate is not None:
            await self._gate.wait()
        return self._reply(task)

    async def handle_result(self, result: StepResult) -> None:
        """Record the result (not a probe's) and raise if told to."""
        if result.run_id.startswith(PROBE):
            return
        self.results.append(result)
        ids = [r.task_id for r in self.results]
        self._trouble("handle_result", result.run_id, ids, result.task_id)

    async def handle_nudge(self, run_id: str) -> None:
        """Record the nudge (a probe's only as answered) and raise if told to."""
        if run_id.startswith(f"{PROBE}:"):
            self._probes.add(("nudge", int(run_id.rpartition(":")[2])))
            return
        self.nudges.append(run_id)
        self._trouble("handle_nudge", run_id, self.nudges, run_id)

    def answered(self, probe_round: int) -> bool:
        """Whether this receiver got its probe task, and a probe nudge if it drives, of a round."""
        return ("task", probe_round) in self._probes and (
            not self._drives or ("nudge", probe_round) in self._probes
        )

    def _trouble(self, handler: str, run_id: str, seen: list[str], key: str) -> None:
        delivery = seen.count(key)
        if run_id in self._raise_on or delivery <= self._raise_times:
            raise self._error(f"{self.name}.{handler} raised on purpose (delivery {delivery})")


@dataclass(slots=True)
class _Served:
    scope: anyio.CancelScope
    ended: anyio.Event = field(default_factory=anyio.Event)
    problem: str | None = None


class Serving:
    """Receivers served by the transport under test, each through its own transport.

    Attributes:
        sender: A transport of the factory's that serves no receiver: the tests send with it.
        timeout: Seconds a wait lasts before the test fails.
    """

    def __init__(self, connect: TransportFactory, tg: anyio.abc.TaskGroup, timeout: float) -> None:
        self._connect = connect
        self._tg = tg
        self._served: dict[FakeReceiver, _Served] = {}
        self._rounds = itertools.count()
        self.sender = connect()
        self.timeout = timeout

    async def start(self, receiver: FakeReceiver) -> None:
        """Start ``serve(receiver)`` on a new transport of the factory's (no probe yet)."""
        self._served[receiver] = await self._tg.start(self._serve, self._connect(), receiver)

    async def stop(self, receiver: FakeReceiver) -> None:
        """Cancel ``serve(receiver)`` and wait for it to return; fail if it does not."""
        served = self._served[receiver]
        served.scope.cancel()
        with anyio.move_on_after(self.timeout):
            await served.ended.wait()
        if not served.ended.is_set():
            raise AssertionError(
                f"serve({receiver.name}) was still running {self.timeout}s after it was cancelled"
            )
        self.check()

    def check(self) -> None:
        """Fail if a ``serve`` raised, or returned before it was cancelled."""
        problems = [served.problem for served in self._served.values() if served.problem]
        if problems:
            raise AssertionError("; ".join(problems))

    async def until(self, condition: Callable[[], object], what: str) -> None:
        """Wait until ``condition()`` is true; fail after the timeout or if a ``serve`` broke."""

        async def holds() -> bool:
            self.check()
            return bool(condition())

        await wait_until(holds, self.timeout, what)

    async def settle(self, *receivers: FakeReceiver) -> None:
        """Probe ``receivers`` (default: every one still served) until each has answered.

        Probes are sent again every 100 ms: a transport may drop what it gets before a
        receiver subscribed (the in-process one has nowhere to put it).
        """
        targets = receivers or tuple(r for r, s in self._served.items() if not s.ended.is_set())
        probe_round = next(self._rounds)
        with anyio.move_on_after(self.timeout):
            for poll in itertools.count():
                self.check()
                missing = [r for r in targets if not r.answered(probe_round)]
                if not missing:
                    return
                if poll % _RESEND_EVERY == 0:
                    await self._probe(missing, probe_round)
                await anyio.sleep(0.01)
        names = ", ".join(r.name for r in targets if not r.answered(probe_round))
        raise AssertionError(
            f"timed out after {self.timeout}s waiting for probes to reach {names}: a task of the "
            "probe step each serves (and, for a driving receiver, a nudge)"
        )

    async def _probe(self, receivers: list[FakeReceiver], probe_round: int) -> None:
        run_id = f"{PROBE}:{probe_round}"
        for receiver in receivers:
            probe = f"{run_id}:{receiver.name}"
            await self.sender.send_task(
                StepTask(
                    task_id=probe,
                    run_id=run_id,
                    step_id=probe,
                    seq=probe_round,
                    step=receiver.probe_step,
                    input=None,
                    attempt=1,
                )
            )
        if any(r.drives_runs for r in receivers):
            await self.sender.nudge(run_id)

    async def _serve(
        self,
        transport: Transport,
        receiver: FakeReceiver,
        *,
        task_status: anyio.abc.TaskStatus[_Served] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.CancelScope() as scope:
            served = _Served(scope)
            task_status.started(served)
            try:
                await transport.serve(receiver)
            except Exception as exc:  # noqa: BLE001 - whatever the transport raises is reported
                served.problem = f"serve({receiver.name}) raised {exc!r}"
            else:
                if not scope.cancel_called:
                    served.problem = f"serve({receiver.name}) returned before it was cancelled"
            finally:
                served.ended.set()


@asynccontextmanager
async def serving(
    connect: TransportFactory, *receivers: FakeReceiver, timeout: float
) -> AsyncIterator[Serving]:
    """Serve ``receivers`` (each on its own transport), yield once every one has been probed.

    On exit every ``serve`` is cancelled; one that raised or returned early fails the test. A
    failure in the body comes out as itself, not wrapped in an exception group.
    """
    try:
        async with anyio.create_task_group() as tg:
            served = Serving(connect, tg, timeout)
            for receiver in receivers:
                await served.start(receiver)
            await served.settle()
            yield served
            served.check()
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
