"""Messages the transport suite sends, awkward payloads, and the exact comparison it applies.

"Intact" is stricter than ``==``: in Python ``1 == 1.0 == True`` and dicts compare without
order, but a transport that turns ``2.0`` into ``2`` or sorts keys changes what a workflow
sees. :func:`assert_intact` compares types and key order too.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, TypeVar, cast

from durable.core import StepResult, StepTask

if TYPE_CHECKING:
    from collections.abc import Callable

    from durable.core import ErrorInfo, JSONValue

_Message = TypeVar("_Message", StepTask, StepResult)

DEADLINE = "2026-11-21T18:00:30.123456+00:00"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _nested(depth: int) -> JSONValue:
    value: JSONValue = "bottom ✓"
    for level in range(depth):
        value = {"level": level, "next": value} if level % 2 else [level, value]
    return value


PAYLOADS: dict[str, JSONValue] = {
    "unicode": {
        "text": 'héllo ✓ 🚀 𝄞 עברית 中文 \u202e \u0000 \t\n"\\/',
        "ключ ✓ 🔑": "\U0001d518\U0001d52b astral letters",
    },
    "nested-100-levels": _nested(100),
    "big-ints": [2**53, -(2**53), 2**31, -(2**31) - 1, 0, -1],
    "floats": [0.1, 2.0, -1.5, 6.02e23, 1e-300, 1.7976931348623157e308, 5e-324],
    "bools-and-null": {"true": True, "false": False, "one": 1, "zero": 0, "null": None},
    "empty": {"list": [], "object": {}, "string": ""},
    "unsorted-keys": {"zeta": 1, "alpha": {"mu": 2, "beta": 3}, "10": 4, "9": 5, "": 6},
    "one-megabyte": {"blob": "0123456789abcdef" * 65_536},
    "bare-string": "just a string",
    "null": None,
}
"""Payloads every message field that carries JSON must deliver exactly, by name."""

ERRORS: dict[str, ErrorInfo] = {
    "full": {
        "type": "CardDeclined",
        "message": "carte refusée ✓ 🚀",
        "code": "card_declined",
        "retryable": False,
    },
    "minimal": {"type": "Error", "message": ""},
}
"""A failed result's ``error`` as the wire carries it: ``type`` and ``message``, or all four."""


def task(run_id: str, seq: int, step: str, payload: JSONValue = None) -> StepTask:
    """A task with every field set (attempt 2, so ``task_id`` ends in ``:2``)."""
    step_id = f"{run_id}:{seq}"
    return StepTask(
        task_id=f"{step_id}:2",
        run_id=run_id,
        step_id=step_id,
        seq=seq,
        step=step,
        input=payload,
        attempt=2,
        deadline=DEADLINE,
        traceparent=TRACEPARENT,
    )


def result(run_id: str, seq: int, payload: JSONValue = None) -> StepResult:
    """The successful result of :func:`task` ``(run_id, seq)``, with every field set."""
    step_id = f"{run_id}:{seq}"
    return StepResult(
        task_id=f"{step_id}:2",
        run_id=run_id,
        step_id=step_id,
        seq=seq,
        ok=True,
        output=payload,
        events=[{"kind": "progress", "done": 0.5}, payload],
        started_at="2026-11-21T18:00:00.1+00:00",
        finished_at="2026-11-21T18:00:00.3+00:00",
        worker_id="host ü:1234:ab12cd34",
    )


def failed(run_id: str, seq: int, error: ErrorInfo) -> StepResult:
    """The failed result of :func:`task` ``(run_id, seq)``."""
    return replace(result(run_id, seq), ok=False, error=error)


def _without(message: _Message, name: str) -> _Message:
    """``message`` whose wire form lacks the field ``name``, as a buggy producer sends it."""
    base = type(message)

    def to_wire(self: _Message) -> dict[str, JSONValue]:
        wire = base.to_wire(self)
        del wire[name]
        return wire

    lacking = type(f"{base.__name__}Without_{name}", (base,), {"__slots__": (), "to_wire": to_wire})
    fields_of = {f.name: getattr(message, f.name) for f in fields(message)}
    return cast("type[_Message]", lacking)(**fields_of)


MALFORMED: dict[str, Callable[[str, str], StepTask | StepResult]] = {
    "task-of-protocol-2": lambda run_id, step: replace(task(run_id, 0, step), protocol=2),
    "task-without-step_id": lambda run_id, step: _without(task(run_id, 0, step), "step_id"),
    "result-of-protocol-2": lambda run_id, step: replace(result(run_id, 0), protocol=2),
    "result-without-run_id": lambda run_id, step: _without(result(run_id, 0), "run_id"),
}
"""Messages a receiver must never get, by name; each built from ``(run_id, step)``."""


def assert_intact(sent: StepTask | StepResult, got: StepTask | StepResult) -> None:
    """Fail, naming the first difference, unless ``got`` has ``sent``'s wire form exactly."""
    difference = _difference(sent.to_wire(), got.to_wire(), "$")
    assert difference is None, f"{type(sent).__name__} changed on the way: {difference}"


def _difference(sent: object, got: object, path: str) -> str | None:
    if type(sent) is not type(got):
        return f"{path}: sent {_show(sent)}, got {_show(got)}"
    if isinstance(sent, dict) and isinstance(got, dict):
        if list(sent) != list(got):
            return f"{path}: sent keys {_show(list(sent))}, got keys {_show(list(got))}"
        pairs = [(sent[k], got[k], f"{path}[{k!r}]") for k in sent]
    elif isinstance(sent, list) and isinstance(got, list):
        if len(sent) != len(got):
            return f"{path}: sent {len(sent)} items, got {len(got)}"
        pairs = [(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(sent, got, strict=True))]
    else:
        return None if sent == got else f"{path}: sent {_show(sent)}, got {_show(got)}"
    return next((d for a, b, p in pairs if (d := _difference(a, b, p)) is not None), None)


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = f"{text[:60]}... ({len(text)} characters)"
    return f"{text} ({type(value).__name__})"
