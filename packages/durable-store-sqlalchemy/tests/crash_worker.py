"""A worker process for the kill -9 tests: ``python crash_worker.py <database url>``.

It drives four workflows whose steps count their executions in ``crash_side_effects``, a
table of the test's own, so the test can tell how often each step really ran. The steps of
``crash-txn`` write that row in their transaction (``ctx.transaction``), so a row there
means the step's checkpoint committed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import (
    Engine,
    WorkflowCtx,
    WorkflowDef,
    durable_step,
    remote_step,
    step,
    workflow,
)
from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

URL = sys.argv[1] if len(sys.argv) > 1 else ""
_effects: AsyncEngine | None = None
_INSERT = text("INSERT INTO crash_side_effects (run_id, step) VALUES (:run_id, :step)")


async def record(run_id: str, name: str) -> None:
    """Count one execution of a step, committed before the step returns."""
    assert _effects is not None
    async with _effects.begin() as conn:
        await conn.execute(_INSERT, {"run_id": run_id, "step": name})


@step
async def work(run_id: str, i: int) -> int:
    await record(run_id, f"work-{i}")
    await anyio.sleep(0.05)
    return i


@workflow(name="crash-steps")
async def crash_steps(ctx: WorkflowCtx, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step(work, ctx.run_id, i)
    return total


@workflow(name="crash-sleep")
async def crash_sleep(ctx: WorkflowCtx, seconds: float) -> int:
    first = await ctx.step(work, ctx.run_id, 0)
    await ctx.sleep(seconds)
    return first + await ctx.step(work, ctx.run_id, 1)


slow_remote = remote_step("crash.slow", input=str, output=int, retries=2, backoff=0.1, timeout=2)


@durable_step(slow_remote)
async def slow(run_id: str) -> int:
    await record(run_id, "remote")
    await anyio.sleep(0.5)
    return 10


@workflow(name="crash-remote")
async def crash_remote(ctx: WorkflowCtx) -> int:
    first = await ctx.step(work, ctx.run_id, 0)
    remote = await ctx.remote(slow_remote, ctx.run_id)
    return first + remote + await ctx.step(work, ctx.run_id, 1)


async def insert_in(conn: AsyncConnection, run_id: str, i: int) -> int:
    """Write the step's row in its transaction, say so, and hold the transaction open a moment.

    The test reads the ``open`` line to kill the process while the transaction is open.
    """
    await conn.execute(_INSERT, {"run_id": run_id, "step": f"txn-{i}"})
    print(f"open txn-{i}", flush=True)  # noqa: T201 - the test kills the worker on this line
    await anyio.sleep(0.02)
    return i


@workflow(name="crash-txn")
async def crash_txn(ctx: WorkflowCtx, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.transaction("insert", insert_in, ctx.run_id, i)
    return total


WORKFLOWS: list[WorkflowDef[Any, Any]] = [crash_steps, crash_sleep, crash_remote, crash_txn]
STEPS = [slow]


async def main() -> None:
    global _effects
    connect_args = {"timeout": 30} if URL.startswith("sqlite") else {}
    _effects = create_async_engine(URL, connect_args=connect_args)
    store = SqlAlchemyStateStore.from_url(URL)
    engine = Engine(
        store,
        InProcessTransport(),
        workflows=WORKFLOWS,
        steps=STEPS,
        lease=1.5,
        poll_interval=0.1,
    )
    async with engine:
        print("ready", flush=True)  # noqa: T201 - the test waits for this line
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main)
