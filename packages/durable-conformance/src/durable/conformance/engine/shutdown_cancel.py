"""Cancel and shutdown.

A cancelled run stops at its next checkpoint boundary, before the next step's code runs. An
engine leaves ``async with`` as soon as nothing of its own is running (suspended runs and a
claim it lost cost nothing), and never later than ``shutdown_grace`` after work it cannot
stop, such as a sync remote-step handler blocked in its thread.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from durable.conformance._base import SuiteBase
from durable.conformance._harness import (
    PausingStore,
    engine,
    engine_start,
    has_status,
    new_id,
    unlocked,
    wait_until,
)
from durable.core import WorkflowCtx, durable_step, remote_step, step, workflow

if TYPE_CHECKING:
    from durable.core import StateStore


class _Stopwatch:
    """Times leaving ``async with engine``: make one as the body's last statement."""

    def __init__(self) -> None:
        self._started = anyio.current_time()

    def assert_within(self, seconds: float, when: str) -> None:
        """Fail unless at most ``seconds`` passed since the watch was made."""
        took = anyio.current_time() - self._started
        assert took < seconds, f"{when}, leaving `async with engine` took {took:.1f}s"


class ShutdownCancelTests(SuiteBase):
    """Cancelling runs and shutting engines down."""

    async def test_cancel_stops_suspended_pending_and_running_runs(
        self, durable_store: StateStore
    ) -> None:
        release = anyio.Event()
        after: list[str] = []

        @step
        async def blocker() -> None:
            await release.wait()

        @step
        async def later() -> None:
            after.append("ran")

        @workflow(name=f"cancellable-{new_id()}")
        async def cancellable(ctx: WorkflowCtx, mode: str) -> None:
            if mode == "block":
                await ctx.step(blocker)
                await ctx.step(later)
            else:
                await ctx.wait_for_signal(f"never:{new_id()}")

        async with engine(durable_store, [cancellable], drive=False) as client:
            pending = (await client.start(cancellable, "wait")).run_id
            assert (await client.cancel(pending)).status == "cancelled"
        async with engine(durable_store, [cancellable]) as e:
            suspended = (await e.start(cancellable, "wait")).run_id
            assert (await e.wait_for_run(suspended, timeout=10)).status == "suspended"
            assert (await e.cancel(suspended)).status == "cancelled"
            running = (await e.start(cancellable, "block")).run_id
            await wait_until(has_status(e, running, "running"), what="the run to start")
            assert (await e.cancel(running)).status == "cancelled"
            release.set()
            await wait_until(unlocked(durable_store, running), what="the lease release")
        assert after == []
        assert (await durable_store.get_run(running)).status == "cancelled"  # type: ignore[union-attr]
        assert (await durable_store.get_run(pending)).status == "cancelled"  # type: ignore[union-attr]

    async def test_a_run_cancelled_between_steps_never_starts_the_next(
        self, durable_store: StateStore
    ) -> None:
        waiting, proceed = anyio.Event(), anyio.Event()
        ran: list[str] = []

        @step(name="first")
        async def first() -> None:
            ran.append("first")

        @step(name="second")
        async def second() -> None:
            ran.append("second")

        @workflow(name=f"interrupted-{new_id()}")
        async def interrupted(ctx: WorkflowCtx) -> None:
            await ctx.step(first)
            waiting.set()
            await proceed.wait()  # not a ctx call: the run is cancelled meanwhile
            await ctx.step(second)

        async with engine(durable_store, [interrupted]) as e:
            run_id = (await e.start(interrupted)).run_id
            with anyio.fail_after(10):
                await waiting.wait()
            assert (await e.cancel(run_id)).status == "cancelled"
            proceed.set()
            await wait_until(unlocked(durable_store, run_id), what="the lease release")
        assert ran == ["first"], f"steps run: {ran}"
        assert (await durable_store.get_run(run_id)).status == "cancelled"  # type: ignore[union-attr]

    async def test_an_engine_whose_runs_all_wait_exits_promptly(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"patient-{new_id()}")
        async def patient(ctx: WorkflowCtx, token: str) -> str:
            return str(await ctx.wait_for_signal(token))

        async with engine(durable_store, [patient], shutdown_grace=30) as e:
            ids = [(await e.start(patient, f"never:{new_id()}")).run_id for _ in range(5)]
            for run_id in ids:
                assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
            exiting = _Stopwatch()
        exiting.assert_within(5, "with only waiting runs")

    async def test_an_engine_exits_promptly_after_a_claim_it_lost_while_draining(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"contested-{new_id()}")
        async def contested(ctx: WorkflowCtx) -> str:
            return "done"

        run_id = await engine_start(durable_store, contested, None)
        slow_claim = PausingStore(durable_store, lambda name, args: name == "try_lock_run")
        async with engine(slow_claim, [contested], shutdown_grace=30):
            with anyio.fail_after(10):
                await slow_claim.held.wait()
            now = datetime.now(UTC)
            other = await durable_store.try_lock_run(
                run_id, "another-worker", now + timedelta(seconds=60), now
            )
            assert other, "another worker could not take the run"
            slow_claim.release.set()  # the claim goes on while the engine drains, and loses
            exiting = _Stopwatch()
        exiting.assert_within(5, "after a claim lost while draining")

    async def test_shutdown_grace_bounds_a_blocked_sync_remote_handler(
        self, durable_store: StateStore
    ) -> None:
        entered, unblock = threading.Event(), threading.Event()
        stuck = remote_step(f"stuck-{new_id()}", input=int, output=int)

        @durable_step(stuck)
        def blocking(n: int) -> int:
            entered.set()
            unblock.wait(20)
            return n

        @workflow(name=f"blocked-{new_id()}")
        async def blocked(ctx: WorkflowCtx) -> int:
            return await ctx.remote(stuck, 1)

        async def handler_entered() -> bool:
            return entered.is_set()

        try:
            async with engine(durable_store, [blocked], steps=[blocking], shutdown_grace=0.5) as e:
                await e.start(blocked)
                await wait_until(handler_entered, what="the handler to start")
                exiting = _Stopwatch()
            exiting.assert_within(5, "with shutdown_grace=0.5 and a blocked sync handler")
        finally:
            unblock.set()  # let the thread end, whatever the engine did
