"""Transports that each break one part of the transport contract, to prove the suite notices.

Each subclasses ``InProcessTransport`` and overrides one method or setting, reaching into its
private inboxes and routing on purpose.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from durable.core.transport import PROTOCOL_VERSION
from durable.transports.inprocess import InProcessTransport
from durable.transports.inprocess._logs import RateLimitedLog
from durable.transports.inprocess.transport import _Message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable.core import StepResult, StepTask, TransportReceiver


class ResultsToEveryoneTransport(InProcessTransport):
    """Hands every result to every receiver, driving runs or not."""

    async def send_result(self, result: StepResult) -> None:
        message = _Message("result", json.dumps(result.to_wire()))
        for inbox in self._inboxes:
            inbox.send.send_nowait(message)


class StepBlindTransport(InProcessTransport):
    """Hands tasks to every receiver in turn, whatever steps it serves."""

    def _route(self, message: _Message) -> None:
        if message.kind != "task" or not self._inboxes:
            return super()._route(message)
        inbox = self._inboxes[next(self._turns["task"]) % len(self._inboxes)]
        inbox.send.send_nowait(message)
        return None


class NudgeEveryoneTransport(InProcessTransport):
    """Nudges every receiver, driving runs or not."""

    async def nudge(self, run_id: str) -> None:
        for inbox in self._inboxes:
            inbox.send.send_nowait(_Message("nudge", json.dumps(run_id)))


class NoRedeliveryTransport(InProcessTransport):
    """Drops a task or result the first time its handler raises."""

    def __init__(self) -> None:
        super().__init__(max_redeliveries=0)


class LeakyHandlerTransport(InProcessTransport):
    """Lets a handler's exception out of ``serve``, as the transport did before issue 8."""

    async def _deliver(self, receiver: TransportReceiver, message: _Message) -> None:
        _, handle = self._decode(receiver, message)
        await handle()


class SortedKeysTransport(InProcessTransport):
    """Sorts the keys of every object on the wire, as a canonicalising encoder would."""

    async def send_task(self, task: StepTask) -> None:
        self._route(_Message("task", json.dumps(task.to_wire(), sort_keys=True), task.step))

    async def send_result(self, result: StepResult) -> None:
        self._route(_Message("result", json.dumps(result.to_wire(), sort_keys=True)))


class IntegralFloatsTransport(InProcessTransport):
    """Reads ``2.0`` as ``2``, as a JavaScript hop between sender and receiver would."""

    def _decode(
        self, receiver: TransportReceiver, message: _Message
    ) -> tuple[str, Callable[[], Awaitable[None]]]:
        data = json.loads(message.text, parse_float=_integral_as_int)
        return super()._decode(receiver, replace(message, text=json.dumps(data)))


def _integral_as_int(text: str) -> float | int:
    number = float(text)
    return int(number) if number.is_integer() else number


class TrustingTransport(InProcessTransport):
    """Delivers tasks and results of any protocol version as if they were version 1."""

    def _decode(
        self, receiver: TransportReceiver, message: _Message
    ) -> tuple[str, Callable[[], Awaitable[None]]]:
        data = json.loads(message.text)
        if isinstance(data, dict):
            data["protocol"] = PROTOCOL_VERSION
        return super()._decode(receiver, replace(message, text=json.dumps(data)))


class SilentTransport(InProcessTransport):
    """Drops malformed messages (and everything else it would log) without a word."""

    def __init__(self) -> None:
        super().__init__()
        silent = logging.getLogger("broken_transports.silent")
        silent.disabled = True
        self._log = RateLimitedLog(silent)


class RaisingWhenUnservedTransport(InProcessTransport):
    """Raises when nobody serves a task's step, instead of leaving it to the deadline."""

    def _route(self, message: _Message) -> None:
        if message.kind == "task" and not any(
            message.step in inbox.receiver.served_steps for inbox in self._inboxes
        ):
            raise LookupError(f"no receiver serves {message.step!r}")
        super()._route(message)


class CloseOnceTransport(InProcessTransport):
    """Refuses the second ``aclose``."""

    def __init__(self) -> None:
        super().__init__()
        self._closes = 0

    async def aclose(self) -> None:
        self._closes += 1
        if self._closes == 2:
            raise RuntimeError("transport already closed")
