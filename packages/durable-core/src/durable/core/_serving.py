"""Serving a remote step: run its handler on a task and make the result message."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import anyio

from durable.core._turn import error_info
from durable.core.errors import FatalError, InputValidationError, StepNotRegistered
from durable.core.steps import StepInfo, _current_step
from durable.core.transport import StepResult

if TYPE_CHECKING:
    from durable.core._time import Clock
    from durable.core._types import JSONValue
    from durable.core.records import ErrorInfo
    from durable.core.steps import StepHandler
    from durable.core.transport import StepTask


async def serve_task(
    handler: StepHandler[Any, Any] | None, task: StepTask, worker_id: str, clock: Clock
) -> StepResult:
    """Run ``handler`` on ``task`` and report its outcome (never raises).

    A handler error is retryable unless it is a :class:`FatalError` or an invalid input or
    output; a sync handler runs in a thread, abandoned if the caller is cancelled.
    """
    started = clock().isoformat()

    def result(ok: bool, output: JSONValue = None, error: ErrorInfo | None = None) -> StepResult:
        return StepResult(
            task_id=task.task_id,
            run_id=task.run_id,
            step_id=task.step_id,
            seq=task.seq,
            ok=ok,
            output=output,
            error=error,
            started_at=started,
            finished_at=clock().isoformat(),
            worker_id=worker_id,
        )

    if handler is None:
        exc = StepNotRegistered(f"no handler for remote step {task.step!r} here")
        return result(False, error={**error_info(exc), "retryable": False})
    definition = handler.definition
    try:
        value = definition.input_codec.decode(task.input, f"remote step {task.step!r} input")
    except InputValidationError as exc:
        return result(False, error={**error_info(exc), "retryable": False})
    token = _current_step.set(StepInfo(task.run_id, task.step_id, task.seq, task.attempt))
    try:
        if handler.is_async:
            out = await handler.fn(value)
        else:
            call = functools.partial(handler.fn, value)
            out = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        subject = f"remote step {task.step!r} output"
        output = definition.output_codec.encode(
            definition.output_codec.validate(out, subject), subject
        )
        return result(True, output=output)
    except (FatalError, InputValidationError) as exc:
        return result(False, error={**error_info(exc), "retryable": False})
    except Exception as exc:  # noqa: BLE001 - handler code may raise anything
        return result(False, error={**error_info(exc), "retryable": True})
    finally:
        _current_step.reset(token)
