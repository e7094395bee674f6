"""Retries and timeouts of local steps.

A step that succeeds on a retry completes; between attempts its checkpoint records the attempts
made, the last error and the next attempt's time, so a crash during the backoff continues the
count. A timeout bounds each attempt of an async step: it is refused on a sync step (a thread
cannot be stopped) and must be positive, and an attempt that outlives it failed even when the
step swallowed the cancellation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._harness import (
    CrashingStore,
    crashed,
    crashing,
    engine,
    engine_start,
    new_id,
    wait_until,
)
from durable.core import WorkflowCtx, step, workflow

if TYPE_CHECKING:
    from durable.core import CheckpointRecord, StateStore


def _attempt_record(checkpoint: CheckpointRecord | None) -> tuple[object, ...] | None:
    """What a checkpoint says about past attempts: status, count, last error, next attempt."""
    if checkpoint is None:
        return None
    error = checkpoint.error or {}
    return (
        checkpoint.status,
        checkpoint.attempts,
        error.get("type"),
        error.get("message"),
        checkpoint.wake_at is not None,
    )


class RetryTimeoutTests(SuiteBase):
    """Local step retries, their records, and per-attempt timeouts."""

    async def test_a_step_that_succeeds_on_a_retry_completes_the_run(
        self, durable_store: StateStore
    ) -> None:
        calls: list[int] = []

        @step(retries=2, backoff=0.05)
        async def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError(f"attempt {len(calls)} failed")
            return "ok"

        @workflow(name=f"retried-{new_id()}")
        async def retried(ctx: WorkflowCtx) -> str:
            return await ctx.step(flaky)

        async with engine(durable_store, [retried]) as e:
            run = await e.wait_for_run((await e.start(retried)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", "ok"), run.error and run.error["message"]
        checkpoint = await durable_store.get_checkpoint(run.id, 0)
        assert checkpoint is not None
        assert (checkpoint.status, checkpoint.attempts) == ("completed", 3)
        assert len(calls) == 3

    async def test_a_step_that_times_out_then_finishes_in_time_completes_the_run(
        self, durable_store: StateStore
    ) -> None:
        calls: list[int] = []

        @step(retries=2, backoff=0.05, timeout=0.2)
        async def slow_then_fast() -> str:
            calls.append(1)
            if len(calls) < 3:
                await anyio.sleep(10)
            return "in time"

        @workflow(name=f"patient-{new_id()}")
        async def patient(ctx: WorkflowCtx) -> str:
            return await ctx.step(slow_then_fast)

        async with engine(durable_store, [patient]) as e:
            run = await e.wait_for_run((await e.start(patient)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", "in time"), (
            run.error and run.error["message"]
        )
        checkpoint = await durable_store.get_checkpoint(run.id, 0)
        assert checkpoint is not None
        assert (checkpoint.status, checkpoint.attempts) == ("completed", 3)

    async def test_each_failed_attempt_is_recorded_before_the_next_one(
        self, durable_store: StateStore
    ) -> None:
        found: list[tuple[object, ...] | None] = []

        @step(retries=2, backoff=0.05)
        async def flaky(run_id: str) -> str:
            found.append(_attempt_record(await durable_store.get_checkpoint(run_id, 0)))
            if len(found) < 3:
                raise ConnectionError(f"attempt {len(found)} failed")
            return "ok"

        @workflow(name=f"recorded-{new_id()}")
        async def recorded(ctx: WorkflowCtx) -> str:
            return await ctx.step(flaky, ctx.run_id)

        async with engine(durable_store, [recorded]) as e:
            run = await e.wait_for_run((await e.start(recorded)).run_id, 10, until="terminal")
        assert found == [
            None,
            ("pending", 1, "ConnectionError", "attempt 1 failed", True),
            ("pending", 2, "ConnectionError", "attempt 2 failed", True),
        ], "each attempt must find the previous one's pending record (attempts, error, wake_at)"
        assert run.status == "completed"

    async def test_a_crash_during_the_backoff_continues_the_attempt_count(
        self, durable_store: StateStore
    ) -> None:
        calls: list[int] = []

        @step(retries=2, backoff=0.05)
        async def always_fails() -> str:
            calls.append(1)
            raise ConnectionError(f"attempt {len(calls)} failed")

        @workflow(name=f"doomed-{new_id()}")
        async def doomed(ctx: WorkflowCtx) -> str:
            return await ctx.step(always_fails)

        dying = CrashingStore(durable_store, crash_after_saves=0)  # dies after the first write
        async with crashing(engine(dying, [doomed], lease=0.3)):
            run_id = await engine_start(durable_store, doomed, None)
            await wait_until(crashed(dying), what="the simulated crash")
        async with engine(durable_store, [doomed], lease=0.3) as survivor:
            run = await survivor.wait_for_run(run_id, timeout=15, until="terminal")
        assert run.status == "failed"
        assert run.error is not None
        assert run.error["type"] == "StepFailedError"
        assert "after 3 attempt(s)" in run.error["message"]
        assert len(calls) == 3, f"the step ran {len(calls)} times across the crash, not 3"
        assert _attempt_record(dying.written[0]) == (
            "pending",
            1,
            "ConnectionError",
            "attempt 1 failed",
            True,
        ), "the first write must be the pending record of attempt 1 (the crash came after it)"

    def test_a_timeout_on_a_sync_step_is_refused(self) -> None:
        def blocking_io() -> str:
            return "done"

        with pytest.raises(TypeError, match="blocking_io"):
            step(timeout=1)(blocking_io)

    @pytest.mark.parametrize("timeout", [0, -1])
    async def test_a_step_timeout_must_be_positive(
        self, durable_store: StateStore, timeout: float
    ) -> None:
        ran: list[int] = []

        async def quick() -> str:
            ran.append(1)
            return "ran"

        with pytest.raises(ValueError, match="timeout"):
            step(timeout=timeout)(quick)

        @workflow(name=f"rushed-{new_id()}")
        async def rushed(ctx: WorkflowCtx) -> str:
            try:
                await ctx.step("quick", quick, timeout=timeout)
            except ValueError as exc:
                return f"refused: {exc}"
            return "accepted"

        async with engine(durable_store, [rushed]) as e:
            run = await e.wait_for_run((await e.start(rushed)).run_id, 10, until="terminal")
        assert run.status == "completed"
        assert isinstance(run.output, str)
        assert run.output.startswith("refused: ")
        assert "timeout" in run.output
        assert ran == []

    async def test_an_attempt_that_swallows_its_timeout_still_timed_out(
        self, durable_store: StateStore
    ) -> None:
        @step(timeout=0.1)
        async def stubborn() -> str:
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                return "escaped"
            return "slept"

        @workflow(name=f"stubborn-{new_id()}")
        async def wf(ctx: WorkflowCtx) -> str:
            return await ctx.step(stubborn)

        async with engine(durable_store, [wf]) as e:
            run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
        checkpoint = await durable_store.get_checkpoint(run.id, 0)
        assert checkpoint is not None
        assert checkpoint.status == "failed", f"recorded {checkpoint.status}: {checkpoint.output}"
        assert checkpoint.error is not None
        assert checkpoint.error["type"] == "TimeoutError"
        assert run.status == "failed"
