"""Checkpoint records tell the truth: the step history is what a dashboard shows.

A signal's checkpoint spans the wait, from when it began to when the signal arrived; a timed
out wait spans it to the timeout; a finished sleep is ``completed``, finished at or after its
wake time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from durable.conformance._base import SuiteBase
from durable.conformance._harness import engine, new_id
from durable.core import SignalTimeoutError, WorkflowCtx, workflow

if TYPE_CHECKING:
    from durable.core import CheckpointRecord, StateStore


async def _only_checkpoint(store: StateStore, run_id: str) -> CheckpointRecord:
    checkpoint = await store.get_checkpoint(run_id, 0)
    assert checkpoint is not None, f"run {run_id} has no checkpoint at seq 0"
    assert checkpoint.finished_at is not None, f"{checkpoint} has no finish time"
    return checkpoint


class RecordTests(SuiteBase):
    """What checkpoints record about the waits and sleeps of a run."""

    async def test_a_signal_checkpoint_spans_the_wait(self, durable_store: StateStore) -> None:
        token = f"awaited:{new_id()}"

        @workflow(name=f"awaiting-{new_id()}")
        async def awaiting(ctx: WorkflowCtx) -> str:
            return str(await ctx.wait_for_signal(token))

        async with engine(durable_store, [awaiting]) as e:
            run_id = (await e.start(awaiting)).run_id
            assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
            await anyio.sleep(0.5)  # the signal comes half a second into the wait
            await e.signal(token, "at last")
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "at last")
        checkpoint = await _only_checkpoint(durable_store, run_id)
        assert checkpoint.status == "completed"
        assert checkpoint.finished_at is not None
        waited = checkpoint.finished_at - checkpoint.started_at
        assert waited >= timedelta(seconds=0.4), f"a 0.5s wait is recorded as {waited}"

    async def test_a_timed_out_signal_checkpoint_spans_the_wait(
        self, durable_store: StateStore
    ) -> None:
        token = f"unanswered:{new_id()}"

        @workflow(name=f"unanswered-{new_id()}")
        async def unanswered(ctx: WorkflowCtx) -> str:
            try:
                await ctx.wait_for_signal(token, timeout=0.2)
            except SignalTimeoutError:
                return "timed out"
            return "signalled"

        async with engine(durable_store, [unanswered]) as e:
            run = await e.wait_for_run((await e.start(unanswered)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", "timed out")
        checkpoint = await _only_checkpoint(durable_store, run.id)
        assert checkpoint.status == "failed"
        assert checkpoint.finished_at is not None
        waited = checkpoint.finished_at - checkpoint.started_at
        assert waited >= timedelta(0), f"the wait finished {-waited} before it started"
        assert waited >= timedelta(seconds=0.15), f"a 0.2s timeout is recorded as {waited}"

    async def test_a_finished_sleep_is_recorded_completed(self, durable_store: StateStore) -> None:
        @workflow(name=f"sleeper-{new_id()}")
        async def sleeper(ctx: WorkflowCtx) -> str:
            await ctx.sleep(0.05)
            await ctx.sleep(0.05)
            return "rested"

        async with engine(durable_store, [sleeper]) as e:
            run = await e.wait_for_run((await e.start(sleeper)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", "rested")
        sleeps = [cp for cp in await durable_store.list_checkpoints(run.id) if cp.kind == "sleep"]
        assert len(sleeps) == 2
        for sleep in sleeps:
            assert sleep.status == "completed", f"sleep at seq {sleep.seq} is {sleep.status}"
            assert sleep.wake_at is not None
            assert sleep.finished_at is not None, f"sleep at seq {sleep.seq} never finished"
            assert sleep.finished_at >= sleep.wake_at, (
                f"sleep at seq {sleep.seq} finished at {sleep.finished_at}, before {sleep.wake_at}"
            )
