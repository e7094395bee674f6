"""Transactional steps on SQLAlchemy: a step's writes commit with its checkpoint, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from durable.core import (
    CheckpointRecord,
    Engine,
    StepFailedError,
    TransactionalStore,
    WorkflowCtx,
    WorkflowDef,
    step,
    workflow,
)
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from durable.stores.sqlalchemy import SqlAlchemyStateStore

pytestmark = pytest.mark.anyio

rows = Table(
    "txn_rows",
    MetaData(),
    Column("run_id", String(191), nullable=False),
    Column("n", Integer, nullable=False),
)


def _is_transactional(store: SqlAlchemyStateStore) -> TransactionalStore:
    return store


@pytest.fixture
async def tx_store(store: SqlAlchemyStateStore) -> SqlAlchemyStateStore:
    async with store.engine.begin() as conn:
        await conn.run_sync(rows.metadata.create_all)
    return store


async def _written(store: SqlAlchemyStateStore, run_id: str) -> list[int]:
    async with store.engine.connect() as conn:
        found = await conn.execute(select(rows.c.n).where(rows.c.run_id == run_id).order_by("n"))
        return [n for (n,) in found]


async def _add(conn: AsyncConnection, run_id: str, n: int) -> None:
    await conn.execute(insert(rows).values(run_id=run_id, n=n))


async def _run(store: SqlAlchemyStateStore, wf: WorkflowDef[Any, Any], arg: object = None) -> Any:
    async with Engine(
        store, InProcessTransport(), workflows=[wf], poll_interval=0.05, lease=2
    ) as worker:
        run_id = (await worker.start(wf, arg)).run_id
        return await worker.wait_for_run(run_id, timeout=20, until="terminal")


async def test_writes_commit_with_the_checkpoint(tx_store: SqlAlchemyStateStore) -> None:
    async def add(conn: AsyncConnection, run_id: str, n: int) -> int:
        await _add(conn, run_id, n)
        return n

    async def add_with_a_session(conn: AsyncConnection, run_id: str, n: int) -> int:
        async with AsyncSession(bind=conn) as session:
            await session.execute(insert(rows).values(run_id=run_id, n=n))
            await session.flush()
            counted = await session.scalar(
                select(func.count()).select_from(rows).where(rows.c.run_id == run_id)
            )
        return int(counted or 0)

    @workflow(name="txn-commit")
    async def commit(ctx: WorkflowCtx) -> list[int]:
        first = await ctx.transaction("add", add, ctx.run_id, 1)
        second = await ctx.transaction("add", add, ctx.run_id, 2)
        seen = await ctx.transaction("session", add_with_a_session, ctx.run_id, 3)
        return [first, second, seen]

    run = await _run(tx_store, commit)
    assert (run.status, run.output) == ("completed", [1, 2, 3])
    assert await _written(tx_store, run.id) == [1, 2, 3]
    checkpoints = await tx_store.list_checkpoints(run.id)
    assert [(cp.name, cp.status, cp.output) for cp in checkpoints] == [
        ("add", "completed", 1),
        ("add", "completed", 2),
        ("session", "completed", 3),
    ]


async def test_a_raising_step_leaves_no_rows(tx_store: SqlAlchemyStateStore) -> None:
    async def add_then_fail(conn: AsyncConnection, run_id: str) -> int:
        await _add(conn, run_id, 1)
        raise ValueError("refused after writing")

    @workflow(name="txn-raise")
    async def raising(ctx: WorkflowCtx) -> str:
        try:
            await ctx.transaction("fail", add_then_fail, ctx.run_id)
        except StepFailedError as exc:
            return str(exc)
        return "ran"

    run = await _run(tx_store, raising)
    assert run.status == "completed"
    assert "refused after writing" in run.output
    assert await _written(tx_store, run.id) == []
    (cp,) = await tx_store.list_checkpoints(run.id)
    assert (cp.status, cp.attempts) == ("failed", 1)


async def test_each_failed_attempt_rolls_its_writes_back(tx_store: SqlAlchemyStateStore) -> None:
    attempts: list[int] = []

    @step(retries=3, backoff=0.01)
    async def flaky(conn: AsyncConnection, run_id: str) -> int:
        attempts.append(len(attempts) + 1)
        await _add(conn, run_id, attempts[-1])
        if len(attempts) < 3:
            raise ValueError(f"attempt {len(attempts)} fails")
        return attempts[-1]

    @workflow(name="txn-retry")
    async def retried(ctx: WorkflowCtx) -> int:
        return await ctx.transaction(flaky, ctx.run_id)

    run = await _run(tx_store, retried)
    assert (run.status, run.output, attempts) == ("completed", 3, [1, 2, 3])
    assert await _written(tx_store, run.id) == [3]
    (cp,) = await tx_store.list_checkpoints(run.id)
    assert (cp.status, cp.attempts) == ("completed", 3)


async def test_replay_returns_the_result_without_running_the_function(
    tx_store: SqlAlchemyStateStore,
) -> None:
    calls: list[int] = []

    async def add(conn: AsyncConnection, run_id: str) -> int:
        calls.append(1)
        await _add(conn, run_id, 7)
        return 7

    @workflow(name="txn-replay")
    async def replayed(ctx: WorkflowCtx) -> int:
        value = await ctx.transaction("add", add, ctx.run_id)
        await ctx.sleep(0.05)  # the run suspends; the next turn replays the step
        return value + 1

    run = await _run(tx_store, replayed)
    assert (run.status, run.output, len(calls)) == ("completed", 8, 1)
    assert await _written(tx_store, run.id) == [7]


async def test_a_fenced_off_transaction_commits_nothing(tx_store: SqlAlchemyStateStore) -> None:
    @workflow(name="txn-idle")
    async def idle(ctx: WorkflowCtx) -> None:
        return None

    async with Engine(tx_store, workflows=[idle], drive=False) as client:
        run_id = (await client.start(idle)).run_id
    now = datetime.now(UTC)
    record = CheckpointRecord(
        run_id=run_id,
        seq=0,
        name="add",
        kind="local",
        status="completed",
        step_id=f"{run_id}:0",
        started_at=now,
        output=1,
        attempts=1,
        finished_at=now,
    )

    async def add(conn: AsyncConnection) -> int:
        await _add(conn, run_id, 1)
        return 1

    def completed(result: int) -> CheckpointRecord:
        return record

    assert await tx_store.run_in_transaction(run_id, "me", add, completed) == (1, False)
    assert await _written(tx_store, run_id) == []
    assert await tx_store.get_checkpoint(run_id, 0) is None
    assert await tx_store.try_lock_run(run_id, "someone-else", now.replace(year=2100), now)
    assert await tx_store.run_in_transaction(run_id, "me", add, completed) == (1, False)
    assert await _written(tx_store, run_id) == []
    assert await tx_store.get_checkpoint(run_id, 0) is None
    assert await tx_store.run_in_transaction(run_id, "someone-else", add, completed) == (1, True)
    assert await _written(tx_store, run_id) == [1]
    assert await tx_store.get_checkpoint(run_id, 0) == record


# Not SQLite: it admits one writer, so a cancel waits for the open step's transaction to end.
@pytest.mark.parametrize("db", ["postgres", "mariadb"])
async def test_a_run_cancelled_mid_step_commits_none_of_its_writes(
    tx_store: SqlAlchemyStateStore,
) -> None:
    inside = anyio.Event()
    go_on = anyio.Event()

    async def add_and_wait(conn: AsyncConnection, run_id: str) -> int:
        await _add(conn, run_id, 1)
        inside.set()
        await go_on.wait()
        return 1

    @workflow(name="txn-cancel")
    async def cancelled(ctx: WorkflowCtx) -> int:
        return await ctx.transaction("add", add_and_wait, ctx.run_id)

    async with Engine(
        tx_store, InProcessTransport(), workflows=[cancelled], poll_interval=0.05, lease=2
    ) as worker:
        run_id = (await worker.start(cancelled)).run_id
        with anyio.fail_after(10):
            await inside.wait()
        assert (await worker.cancel(run_id)).status == "cancelled"
        go_on.set()
    assert await _written(tx_store, run_id) == []
    assert await tx_store.get_checkpoint(run_id, 0) is None
    run = await tx_store.get_run(run_id)
    assert run is not None
    assert (run.status, run.locked_by) == ("cancelled", None)


async def test_a_timed_out_attempt_rolls_its_writes_back(tx_store: SqlAlchemyStateStore) -> None:
    attempts: list[int] = []

    async def slow_once(conn: AsyncConnection, run_id: str) -> int:
        attempts.append(len(attempts) + 1)
        await _add(conn, run_id, attempts[-1])
        if len(attempts) == 1:
            await anyio.sleep(30)
        return attempts[-1]

    @workflow(name="txn-timeout")
    async def timed(ctx: WorkflowCtx) -> int:
        return await ctx.transaction("slow", slow_once, ctx.run_id, retries=1, timeout=0.2)

    run = await _run(tx_store, timed)
    assert (run.status, run.output, attempts) == ("completed", 2, [1, 2])
    assert await _written(tx_store, run.id) == [2]
