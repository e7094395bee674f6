"""``InProcessTransport``: an in-memory queue per receiver, JSON on the wire.

A receiver's handler runs in a task of its ``serve`` call. Whatever the handler raises is
logged (rate-limited, under ``durable.transports.inprocess``) and never leaves ``serve``: a
store outage in one engine must not end that engine's task group. A task or result whose
handling raised goes back to the queue, to the next receiver in turn.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.lowlevel

from durable.core.transport import ProtocolError, StepResult, StepTask
from durable.transports.inprocess._logs import RateLimitedLog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectSendStream

    from durable.core.transport import TransportReceiver

log = logging.getLogger("durable.transports.inprocess")

_Kind = Literal["task", "result", "nudge"]


@dataclass(frozen=True, slots=True)
class _Message:
    kind: _Kind
    text: str  # the JSON wire form
    step: str | None = None  # a task's step: the receivers it may go to
    deliveries: int = 0  # how often it was delivered and its handling raised


@dataclass(slots=True)
class _Inbox:
    receiver: TransportReceiver
    send: MemoryObjectSendStream[_Message]


class InProcessTransport:
    """Carries tasks, results and nudges between engines of one process.

    Args:
        max_redeliveries: How often a task or result whose handling raised is delivered again
            before it is dropped (the engine then dispatches the step again at its deadline).

    Raises:
        ValueError: ``max_redeliveries`` is negative.
    """

    def __init__(self, *, max_redeliveries: int = 3) -> None:
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be 0 or more, got {max_redeliveries}")
        self._inboxes: list[_Inbox] = []
        self._turns = {"task": itertools.count(), "result": itertools.count()}
        self._max_redeliveries = max_redeliveries
        self._log = RateLimitedLog(log)

    async def send_task(self, task: StepTask) -> None:
        """Queue the task for one receiver that serves its step, in turn."""
        await anyio.lowlevel.checkpoint()
        self._route(_Message("task", json.dumps(task.to_wire()), task.step))

    async def send_result(self, result: StepResult) -> None:
        """Deliver the result to one driving receiver, in turn."""
        await anyio.lowlevel.checkpoint()
        self._route(_Message("result", json.dumps(result.to_wire())))

    async def nudge(self, run_id: str) -> None:
        """Tell every driving receiver that the run is pending."""
        await anyio.lowlevel.checkpoint()
        message = _Message("nudge", json.dumps(run_id))
        for inbox in self._inboxes:
            if inbox.receiver.drives_runs:
                inbox.send.send_nowait(message)

    async def serve(self, receiver: TransportReceiver) -> None:
        """Deliver this receiver's messages until cancelled; its handlers' errors are logged."""
        send, receive = anyio.create_memory_object_stream[_Message](max_buffer_size=math.inf)
        inbox = _Inbox(receiver, send)
        self._inboxes.append(inbox)
        try:
            async with anyio.create_task_group() as tg:
                async for message in receive:
                    tg.start_soon(self._deliver, receiver, message)
        finally:
            self._inboxes.remove(inbox)
            send.close()
            receive.close()

    async def aclose(self) -> None:
        """Nothing to release; calling it again is harmless."""

    def _route(self, message: _Message) -> None:
        # No await between choosing an inbox and queueing: the inbox cannot close in between.
        if message.kind == "task":
            candidates = [i for i in self._inboxes if message.step in i.receiver.served_steps]
        else:
            candidates = [i for i in self._inboxes if i.receiver.drives_runs]
        if not candidates:
            self._log.log(
                logging.WARNING,
                ("no receiver", message.kind, message.step),
                "no receiver for a %s%s; it is dispatched again at the step's deadline",
                message.kind,
                f" of step {message.step!r}" if message.step else "",
            )
            return
        inbox = candidates[next(self._turns[message.kind]) % len(candidates)]
        inbox.send.send_nowait(message)

    async def _deliver(self, receiver: TransportReceiver, message: _Message) -> None:
        try:
            what, handle = self._decode(receiver, message)
        except ProtocolError as exc:
            self._log.log(
                logging.WARNING,
                ("malformed", message.kind),
                "dropping a malformed %s message: %s",
                message.kind,
                exc,
            )
            return
        try:
            await handle()
        except Exception as exc:  # noqa: BLE001 - receiver code may raise anything; serve goes on
            self._failed(message, what, exc)

    def _decode(
        self, receiver: TransportReceiver, message: _Message
    ) -> tuple[str, Callable[[], Awaitable[None]]]:
        data = json.loads(message.text)  # our own json.dumps: always valid JSON
        if message.kind == "task":
            task = StepTask.from_wire(data)
            return f"task {task.task_id}", functools.partial(self._answer, receiver, task)
        if message.kind == "result":
            result = StepResult.from_wire(data)
            return f"result of {result.task_id}", functools.partial(receiver.handle_result, result)
        if not isinstance(data, str):
            raise ProtocolError(f"nudge: expected a run id string, got {type(data).__name__}")
        return f"nudge for run {data}", functools.partial(receiver.handle_nudge, data)

    async def _answer(self, receiver: TransportReceiver, task: StepTask) -> None:
        await self.send_result(await receiver.handle_task(task))

    def _failed(self, message: _Message, what: str, exc: Exception) -> None:
        if message.kind == "nudge":
            outcome = "dropped it (the run is found by the next poll)"
        elif message.deliveries < self._max_redeliveries:
            outcome = "delivering it again"
            self._route(replace(message, deliveries=message.deliveries + 1))
        else:
            outcome = "dropped it (the engine dispatches the step again at its deadline)"
        self._log.log(
            logging.ERROR,
            (message.kind, type(exc), outcome),
            "handling the %s raised (delivery %d); %s",
            what,
            message.deliveries + 1,
            outcome,
            exc_info=exc,
        )
