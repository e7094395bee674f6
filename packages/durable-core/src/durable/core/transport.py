"""The transport contract and its JSON wire messages (protocol version 1).

A transport carries step tasks from engines to step handlers, results back, and nudges
(``this run became pending``) to driving engines. It never decides anything: the store is the
truth, so a lost nudge only delays and a lost task is dispatched again at its deadline.
See ``docs/wire-protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from durable.core.errors import DurableError

if TYPE_CHECKING:
    from collections.abc import Collection

    from durable.core._types import JSONValue
    from durable.core.records import ErrorInfo

PROTOCOL_VERSION = 1


class ProtocolError(DurableError):
    """A wire message is malformed or speaks an unknown protocol version."""


@dataclass(frozen=True, slots=True)
class StepTask:
    """Engine → handler: run step ``step`` for ``(run_id, seq)``; ``step_id`` dedupes."""

    task_id: str
    run_id: str
    step_id: str
    seq: int
    step: str
    input: JSONValue
    attempt: int
    deadline: str | None = None
    traceparent: str | None = None
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, JSONValue]:
        """The JSON object sent on the wire."""
        return {
            "protocol": self.protocol,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "seq": self.seq,
            "step": self.step,
            "input": self.input,
            "attempt": self.attempt,
            "deadline": self.deadline,
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_wire(cls, data: Any) -> StepTask:
        """Parse a task, checking the protocol version and field types.

        Raises:
            ProtocolError: The message is not a valid version-1 task.
        """
        msg = _check(data, "task")
        return cls(
            task_id=_field(msg, "task_id", str),
            run_id=_field(msg, "run_id", str),
            step_id=_field(msg, "step_id", str),
            seq=_field(msg, "seq", int),
            step=_field(msg, "step", str),
            input=msg.get("input"),
            attempt=_field(msg, "attempt", int),
            deadline=_optional(msg, "deadline", str),
            traceparent=_optional(msg, "traceparent", str),
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    """Handler → engine: the outcome of one task. ``error`` is set when ``ok`` is false."""

    task_id: str
    run_id: str
    step_id: str
    seq: int
    ok: bool
    output: JSONValue = None
    error: ErrorInfo | None = None
    events: list[JSONValue] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    worker_id: str | None = None
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, JSONValue]:
        """The JSON object sent on the wire."""
        wire: dict[str, JSONValue] = {
            "protocol": self.protocol,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "seq": self.seq,
            "ok": self.ok,
            "events": list(self.events),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker_id": self.worker_id,
        }
        if self.ok:
            wire["output"] = self.output
        else:
            wire["error"] = dict(self.error or {"type": "Error", "message": ""})  # type: ignore[arg-type]
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> StepResult:
        """Parse a result, checking the protocol version and field types.

        Raises:
            ProtocolError: The message is not a valid version-1 result.
        """
        msg = _check(data, "result")
        ok = _field(msg, "ok", bool)
        error: ErrorInfo | None = None
        if not ok:
            raw = msg.get("error")
            if not isinstance(raw, dict) or not isinstance(raw.get("message"), str):
                raise ProtocolError("result: a failed result needs error.message")
            error = {"type": str(raw.get("type") or "Error"), "message": raw["message"]}
            if isinstance(raw.get("code"), str):
                error["code"] = raw["code"]
            if isinstance(raw.get("retryable"), bool):
                error["retryable"] = raw["retryable"]
        events = msg.get("events") or []
        if not isinstance(events, list):
            raise ProtocolError("result: events must be a list")
        return cls(
            task_id=_field(msg, "task_id", str),
            run_id=_field(msg, "run_id", str),
            step_id=_field(msg, "step_id", str),
            seq=_field(msg, "seq", int),
            ok=ok,
            output=msg.get("output") if ok else None,
            error=error,
            events=events,
            started_at=_optional(msg, "started_at", str),
            finished_at=_optional(msg, "finished_at", str),
            worker_id=_optional(msg, "worker_id", str),
        )


def _check(data: Any, kind: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"{kind}: expected a JSON object, got {type(data).__name__}")
    version = data.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"{kind}: unsupported protocol version {version!r}")
    return data


def _field(msg: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = msg.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _optional(msg: dict[str, Any], key: str, kind: type[Any]) -> Any:
    return None if msg.get(key) is None else _field(msg, key, kind)


class TransportReceiver(Protocol):
    """What a transport delivers to (an :class:`~durable.core.Engine` implements it)."""

    @property
    def served_steps(self) -> Collection[str]:
        """Names of the remote steps this receiver has handlers for."""
        ...

    @property
    def drives_runs(self) -> bool:
        """Whether this receiver takes results and nudges (a driving engine)."""
        ...

    async def handle_task(self, task: StepTask) -> StepResult:
        """Run the handler; the transport sends the returned result, then acknowledges."""
        ...

    async def handle_result(self, result: StepResult) -> None:
        """Record a step result (duplicates and stale results are dropped by ``step_id``)."""
        ...

    async def handle_nudge(self, run_id: str) -> None:
        """A run became pending: try to take it now rather than at the next poll."""
        ...


class Transport(Protocol):
    """Carries tasks, results and nudges. Delivery is at least once; handlers dedupe."""

    async def send_task(self, task: StepTask) -> None:
        """Queue a task for a receiver that serves ``task.step``."""
        ...

    async def send_result(self, result: StepResult) -> None:
        """Deliver a result to a driving receiver."""
        ...

    async def nudge(self, run_id: str) -> None:
        """Tell driving receivers that ``run_id`` is pending. Best effort."""
        ...

    async def serve(self, receiver: TransportReceiver) -> None:
        """Deliver messages to ``receiver`` until cancelled (run inside the engine's tasks)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
