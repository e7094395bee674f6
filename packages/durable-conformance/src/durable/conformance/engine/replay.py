"""Replay and crashes: work done once, whatever dies when.

A worker killed at any checkpoint boundary, the dead-letter after too many recoveries,
non-determinism detection, and two engines sharing one store.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
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
from durable.core import NonDeterminismError, WorkflowCtx, step, workflow
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from durable.core import StateStore


class ReplayTests(SuiteBase):
    """Replay after crashes, the dead-letter, non-determinism, several engines on one store."""

    @pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4])
    async def test_steps_never_rerun_after_a_crash_at_any_checkpoint(
        self, durable_store: StateStore, crash_after: int
    ) -> None:
        ran: Counter[str] = Counter()

        @step
        async def work(name: str) -> str:
            ran[name] += 1
            return name.upper()

        @workflow(name=f"five-steps-{new_id()}")
        async def five(ctx: WorkflowCtx, prefix: str) -> list[str]:
            return [await ctx.step(work, f"{prefix}{i}") for i in range(5)]

        dying = CrashingStore(durable_store, crash_after_saves=crash_after)
        async with crashing(engine(dying, [five], lease=0.3)):
            handle = await engine_start(durable_store, five, "s")
            await wait_until(crashed(dying), what="the simulated crash")
        async with engine(durable_store, [five], lease=0.3) as survivor:
            run = await survivor.wait_for_run(handle, timeout=15, until="terminal")
        assert run.status == "completed"
        assert run.output == ["S0", "S1", "S2", "S3", "S4"]
        assert run.recovery_attempts == 0
        assert ran == Counter({f"s{i}": 1 for i in range(5)})

    async def test_run_goes_dead_after_max_recovery_attempts(
        self, durable_store: StateStore
    ) -> None:
        @step
        async def work() -> int:
            return 1

        @workflow(name=f"doomed-{new_id()}")
        async def doomed(ctx: WorkflowCtx) -> int:
            return await ctx.step(work) + await ctx.step(work)

        run_id = await engine_start(durable_store, doomed, None)
        for _ in range(2):
            dying = CrashingStore(durable_store, crash_after_saves=0)
            async with crashing(engine(dying, [doomed], lease=0.2, max_recovery_attempts=1)):
                await wait_until(crashed(dying), what="the simulated crash")
        async with engine(durable_store, [doomed], lease=0.2, max_recovery_attempts=1) as e:
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert run.status == "dead"
        assert run.error is not None
        assert "max_recovery_attempts" in run.error["message"]

    async def test_changed_code_fails_the_run_with_non_determinism(
        self, durable_store: StateStore
    ) -> None:
        name = f"drifting-{new_id()}"

        @step(name="a")
        async def step_a() -> int:
            return 1

        @step(name="b")
        async def step_b() -> int:
            return 2

        @workflow(name=name)
        async def original(ctx: WorkflowCtx, token: str) -> int:
            value = await ctx.step(step_a)
            await ctx.wait_for_signal(token)
            return value

        @workflow(name=name)
        async def edited(ctx: WorkflowCtx, token: str) -> int:
            try:
                value = await ctx.step(step_b)
            except NonDeterminismError:
                return -1  # swallowing it must not save the run
            await ctx.wait_for_signal(token)
            return value

        async with engine(durable_store, [original]) as e:
            run_id = (await e.start(original, "drift")).run_id
            assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
        async with engine(durable_store, [edited]) as e:
            await e.signal("drift")
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert run.status == "failed"
        assert run.error is not None
        assert run.error["type"] == "NonDeterminismError"
        assert "seq 0" in run.error["message"]
        assert "'a'" in run.error["message"]
        assert "'b'" in run.error["message"]

    async def test_two_engines_on_one_store_never_run_a_run_twice_at_once(
        self, durable_store: StateStore
    ) -> None:
        inside: set[str] = set()
        overlaps: list[str] = []
        ran: Counter[tuple[str, int]] = Counter()

        @step
        async def guarded(run_key: str, i: int) -> None:
            if run_key in inside:
                overlaps.append(run_key)
            inside.add(run_key)
            ran[(run_key, i)] += 1
            await anyio.lowlevel.checkpoint()
            inside.discard(run_key)

        @workflow(name=f"shared-{new_id()}")
        async def shared(ctx: WorkflowCtx, key: str) -> int:
            for i in range(3):
                await ctx.step(guarded, key, i)
            await ctx.sleep(0.05)
            await ctx.step(guarded, key, 3)
            return 4

        transport = InProcessTransport()
        async with (
            engine(durable_store, [shared], transport=transport) as first,
            engine(durable_store, [shared], transport=transport) as second,
        ):
            keys = [new_id() for _ in range(20)]
            ids = [
                (await (first, second)[i % 2].start(shared, k)).run_id for i, k in enumerate(keys)
            ]
            runs = [await first.wait_for_run(i, timeout=20, until="terminal") for i in ids]
        assert {r.status for r in runs} == {"completed"}
        assert overlaps == []
        assert set(ran.values()) == {1}
        assert len(ran) == 20 * 4
