"""Remote steps: retried under one step id, fatal errors, duplicate and late results.

A step's outcome, once the workflow has seen it, never changes: a result arriving after the
step timed out (or racing its timeout) leaves the checkpoint failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel

from durable.conformance._base import SuiteBase
from durable.conformance._harness import PausingStore, engine, new_id
from durable.core import (
    FatalError,
    RemoteStepError,
    WorkflowCtx,
    current_step,
    durable_step,
    remote_step,
    workflow,
)
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from durable.core import Engine, StateStore, StepResult


class Payment(BaseModel):
    """A remote step's input in the suite."""

    order_id: str
    cents: int


class Receipt(BaseModel):
    """A remote step's output in the suite."""

    charge_id: str


def _results_handled(e: Engine) -> anyio.Event:
    """An event set once ``e`` has handled a step result (whether it kept it or not)."""
    handled = anyio.Event()
    original = e.handle_result

    async def observed(result: StepResult) -> None:
        try:
            await original(result)
        finally:
            handled.set()

    e.handle_result = observed  # type: ignore[method-assign]
    return handled


async def _step_and_run_agree(store: StateStore, run_id: str) -> None:
    """The remote step's checkpoint says what the workflow saw: both failed or both completed."""
    run = await store.get_run(run_id)
    checkpoint = await store.get_checkpoint(run_id, 0)
    assert run is not None
    assert checkpoint is not None
    assert run.status in ("failed", "completed"), f"the run is {run.status}"
    expected = "failed" if run.status == "failed" else "completed"
    assert checkpoint.status == expected, (
        f"the run {run.status} on its remote step's outcome, then a late result rewrote the"
        f" step's checkpoint to {checkpoint.status} (output {checkpoint.output!r})"
    )


class RemoteTests(SuiteBase):
    """Remote steps through the in-process transport."""

    async def test_remote_step_is_retried_with_the_same_step_id(
        self, durable_store: StateStore
    ) -> None:
        seen: list[tuple[str, int]] = []
        charge = remote_step(
            f"charge-{new_id()}", input=Payment, output=Receipt, retries=3, backoff=0.01
        )

        @durable_step(charge)
        async def flaky(payment: Payment) -> Receipt:
            info = current_step()
            seen.append((info.step_id, info.attempt))
            if info.attempt < 3:
                raise ConnectionError("card network down")
            return Receipt(charge_id=f"ch-{payment.order_id}")

        @workflow(name=f"payer-{new_id()}")
        async def payer(ctx: WorkflowCtx, order: str) -> str:
            receipt = await ctx.remote(charge, Payment(order_id=order, cents=500))
            return receipt.charge_id

        async with engine(durable_store, [payer], steps=[flaky]) as e:
            run_id = (await e.start(payer, "o1")).run_id
            run = await e.wait_for_run(run_id, timeout=15, until="terminal")
        assert (run.status, run.output) == ("completed", "ch-o1")
        assert [attempt for _, attempt in seen] == [1, 2, 3]
        assert len({step_id for step_id, _ in seen}) == 1

    async def test_remote_step_fatal_error_is_not_retried(self, durable_store: StateStore) -> None:
        attempts: list[int] = []
        charge = remote_step(f"fatal-{new_id()}", input=Payment, output=Receipt, retries=5)

        @durable_step(charge)
        def declined(payment: Payment) -> Receipt:
            attempts.append(1)
            raise FatalError(f"card declined for {payment.order_id}")

        @workflow(name=f"payer-{new_id()}")
        async def payer(ctx: WorkflowCtx, order: str) -> str:
            try:
                await ctx.remote(charge, Payment(order_id=order, cents=1))
            except RemoteStepError as exc:
                return f"{exc.step}: {exc.error_message}"
            return "charged"

        async with engine(durable_store, [payer], steps=[declined]) as e:
            run = await e.wait_for_run((await e.start(payer, "o2")).run_id, 10, until="terminal")
        assert run.output == f"{charge.name}: card declined for o2"
        assert attempts == [1]

    async def test_remote_result_arriving_twice_is_applied_once(
        self, durable_store: StateStore
    ) -> None:
        results = []
        double = remote_step(f"double-{new_id()}", input=int, output=int)
        transport = InProcessTransport()

        @durable_step(double)
        async def doubler(n: int) -> int:
            return n * 2

        @workflow(name=f"sum-{new_id()}")
        async def summer(ctx: WorkflowCtx) -> int:
            return await ctx.remote(double, 2) + await ctx.remote(double, 5)

        async with engine(durable_store, [summer], steps=[doubler], transport=transport) as e:
            original = e.handle_result

            async def twice(result: Any) -> None:
                results.append(result)
                await original(result)
                await original(result)

            e.handle_result = twice  # type: ignore[method-assign]
            run = await e.wait_for_run((await e.start(summer)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", 14)
        assert len(results) == 2

    async def test_a_late_remote_result_never_revives_a_timed_out_step(
        self, durable_store: StateStore
    ) -> None:
        release = anyio.Event()
        slow = remote_step(f"slow-{new_id()}", input=int, output=int, timeout=0.3)

        @durable_step(slow)
        async def held(n: int) -> int:
            await release.wait()
            return n

        @workflow(name=f"hurried-{new_id()}")
        async def hurried(ctx: WorkflowCtx) -> int:
            return await ctx.remote(slow, 1)

        async with engine(durable_store, [hurried], steps=[held]) as e:
            handled = _results_handled(e)
            run = await e.wait_for_run((await e.start(hurried)).run_id, 10, until="terminal")
            assert run.status == "failed"
            assert run.error is not None
            assert run.error["type"] == "RemoteStepError"
            assert "TimeoutError" in run.error["message"]
            release.set()
            with anyio.fail_after(10):
                await handled.wait()
        await _step_and_run_agree(durable_store, run.id)

    async def test_a_remote_result_racing_the_timeout_never_overwrites_it(
        self, durable_store: StateStore
    ) -> None:
        quick = remote_step(f"quick-{new_id()}", input=int, output=int, timeout=0.3)

        @durable_step(quick)
        async def answer(n: int) -> int:
            return n

        @workflow(name=f"racing-{new_id()}")
        async def racing(ctx: WorkflowCtx) -> int:
            return await ctx.remote(quick, 1)

        # The result's write is held until the run has ended: it read the pending checkpoint
        # before the deadline and writes after the workflow saw the step time out.
        slow_write = PausingStore(
            durable_store,
            lambda name, args: (
                name == "save_checkpoint"
                and args[0].kind == "remote"
                and args[0].status == "completed"
            ),
        )
        async with engine(slow_write, [racing], steps=[answer]) as e:
            handled = _results_handled(e)
            run = await e.wait_for_run((await e.start(racing)).run_id, 10, until="terminal")
            slow_write.release.set()
            with anyio.fail_after(10):
                await handled.wait()
        await _step_and_run_agree(durable_store, run.id)
