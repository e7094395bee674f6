"""``InProcessTransport``: an in-memory queue per receiver, JSON on the wire."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from durable.core.transport import ProtocolError, StepResult, StepTask

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from anyio.streams.memory import MemoryObjectSendStream

    from durable.core.transport import TransportReceiver

log = logging.getLogger("durable.transports.inprocess")

_Message = tuple[str, str]  # (kind, JSON text)


@dataclass(slots=True)
class _Inbox:
    receiver: TransportReceiver
    send: MemoryObjectSendStream[_Message]


class InProcessTransport:
    """Carries tasks, results and nudges between engines of one process.

    Args:
        max_redeliveries: How often a task whose handling raised is delivered again before it
            is dropped (the engine then dispatches it again at the step's deadline).
    """

    def __init__(self, *, max_redeliveries: int = 3) -> None:
        self._inboxes: list[_Inbox] = []
        self._turns = {"task": itertools.count(), "result": itertools.count()}
        self._max_redeliveries = max_redeliveries

    async def send_task(self, task: StepTask) -> None:
        """Queue the task for one receiver that serves its step."""
        await self._send_one("task", task.to_wire(), lambda r: task.step in r.served_steps)

    async def send_result(self, result: StepResult) -> None:
        """Deliver the result to one driving receiver."""
        await self._send_one("result", result.to_wire(), lambda r: r.drives_runs)

    async def nudge(self, run_id: str) -> None:
        """Tell every driving receiver that the run is pending."""
        for inbox in list(self._inboxes):
            if inbox.receiver.drives_runs:
                await inbox.send.send(("nudge", json.dumps(run_id)))

    async def serve(self, receiver: TransportReceiver) -> None:
        """Deliver this receiver's messages until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Message](max_buffer_size=10_000)
        inbox = _Inbox(receiver, send)
        self._inboxes.append(inbox)
        try:
            async with anyio.create_task_group() as tg, receive:
                async for kind, text in receive:
                    tg.start_soon(self._deliver, receiver, kind, text)
        finally:
            self._inboxes.remove(inbox)
            send.close()

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _send_one(
        self, kind: str, wire: Mapping[str, object], wants: Callable[[TransportReceiver], bool]
    ) -> None:
        candidates = [i for i in self._inboxes if wants(i.receiver)]
        if not candidates:
            log.warning("no receiver for %s %s; it is dispatched again at its deadline", kind, wire)
            return
        inbox = candidates[next(self._turns[kind]) % len(candidates)]
        await inbox.send.send((kind, json.dumps(wire)))

    async def _deliver(self, receiver: TransportReceiver, kind: str, text: str) -> None:
        try:
            data = json.loads(text)
            if kind == "nudge":
                await receiver.handle_nudge(str(data))
            elif kind == "result":
                await receiver.handle_result(StepResult.from_wire(data))
            else:
                await self._run_task(receiver, StepTask.from_wire(data))
        except ProtocolError:
            log.exception("dropping malformed %s message", kind)

    async def _run_task(self, receiver: TransportReceiver, task: StepTask) -> None:
        for delivery in range(1 + self._max_redeliveries):
            try:
                result = await receiver.handle_task(task)
            except Exception:
                log.exception("task %s delivery %d failed", task.task_id, delivery + 1)
                await anyio.lowlevel.checkpoint()
                continue
            await self.send_result(result)
            return
