from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import CheckpointRecord, RunRecord, SignalWaiter, StateStore, StateStoreAdmin
from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.stores.sqlalchemy._statements import Statements
from durable.stores.sqlalchemy.testing import provision

if TYPE_CHECKING:
    from pathlib import Path

    from durable.core import RunStatus

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)


def _check(store: SqlAlchemyStateStore) -> StateStore:
    return store


def _check_admin(store: SqlAlchemyStateStore) -> StateStoreAdmin:
    return store


def run(run_id: str, status: RunStatus = "pending", **fields: object) -> RunRecord:
    record = RunRecord(run_id, "wf", "1", status, {"n": 1}, created_at=NOW, updated_at=NOW)
    return dataclasses.replace(record, **fields)  # type: ignore[arg-type]


async def exercise(store: SqlAlchemyStateStore) -> None:
    """One pass over the hot path and the transactional calls."""
    assert await store.create_run(run("r1", attributes={"tier": "gold"}))
    assert not await store.create_run(run("r1"))
    assert await store.try_lock_run("r1", "w1", LEASE, NOW)
    cp = CheckpointRecord("r1", 0, "charge", "local", "completed", "r1:0", NOW, output={"id": 9})
    assert await store.save_checkpoint(cp, owner="w1")
    assert not await store.save_checkpoint(cp, owner="w2")
    await store.put_signal_waiter(SignalWaiter("go:r1", "r1", 1))
    await store.buffer_signal("go:r1", {"ok": True}, NOW)
    assert await store.pair_signal("go:r1", NOW) == SignalWaiter("go:r1", "r1", 1)
    assert await store.release_run_lock("r1", "w1", status="suspended") == "pending"
    assert [c.output for c in await store.list_checkpoints("r1")] == [{"id": 9}, {"ok": True}]
    assert await store.update_run("r1", if_status=["pending"], status="completed", attributes={})
    await store.delete_run("r1")
    assert await store.get_run("r1") is None


def test_store_implements_the_protocol() -> None:
    store = SqlAlchemyStateStore(create_async_engine("sqlite+aiosqlite:///unused.db"))
    assert isinstance(_check(store), StateStore)
    assert isinstance(_check_admin(store), StateStoreAdmin)


async def test_from_url_owns_its_engine_and_a_given_engine_stays_open(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url, pool_size=2, keep_connections=0) as owned:
        await owned.ensure_schema()
        await owned.get_run("r1")
        pool = owned.engine.pool
        assert pool.size() == 2  # type: ignore[attr-defined]
        assert pool.checkedin() == 1  # type: ignore[attr-defined]
    assert owned.engine.pool is not pool  # disposed: the old pool and its connections are gone

    engine = create_async_engine(url)
    try:
        async with SqlAlchemyStateStore(engine) as given:
            await given.get_run("r1")
        async with engine.connect() as conn:  # still usable after the store closed
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_an_engine_not_in_autocommit_mode_works_and_is_left_as_it_was(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with SqlAlchemyStateStore(engine) as store:
            await store.ensure_schema()
            await exercise(store)
        async with engine.connect() as conn:
            assert await conn.get_isolation_level() != "AUTOCOMMIT"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db", ["postgres"])
async def test_psycopg_driver_works(url: str) -> None:
    psycopg = make_url(url).set(drivername="postgresql+psycopg")
    async with SqlAlchemyStateStore.from_url(psycopg) as store:
        await store.ensure_schema()
        await exercise(store)


@pytest.mark.parametrize("db", ["mariadb"])
async def test_mysql_path_without_delete_returning_takes_each_row_once(
    store: SqlAlchemyStateStore,
) -> None:
    await store.get_run("warm-up")  # statements are built on the first connection
    assert store._db is not None
    features = dataclasses.replace(store._db.q.features, delete_returning=False)
    q = Statements(features)  # what MySQL 8 (no DELETE ... RETURNING) runs
    store._db = dataclasses.replace(store._db, q=q)
    assert q.take_signal is None

    for i in range(10):
        await store.buffer_signal("fifo", i, NOW)
    await store.put_signal_waiter(SignalWaiter("one", "r1", 0))
    taken: list[object] = []
    waiters: list[SignalWaiter] = []

    async def take() -> None:
        signal = await store.take_buffered_signal("fifo")
        if signal is not None:
            taken.append(signal.payload)
        waiter = await store.take_signal_waiter("one")
        if waiter is not None:
            waiters.append(waiter)

    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(take)
    assert sorted(taken) == list(range(10))  # type: ignore[type-var]
    assert waiters == [SignalWaiter("one", "r1", 0)]


@pytest.mark.parametrize("db", ["sqlite"])
async def test_sqlite_connections_are_durable_wal_with_a_busy_timeout(
    store: SqlAlchemyStateStore,
) -> None:
    async def pragmas(s: Any) -> list[object]:
        return [
            (await s.conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout")
        ]

    for write in (True, False):  # the writer connection, and a reader
        assert await store._run("pragmas", pragmas, write=write) == ["wal", 2, 30000]


@pytest.mark.parametrize("db", ["sqlite"])
async def test_sqlite_times_are_fixed_width_utc_text_that_sorts_like_instants(
    store: SqlAlchemyStateStore,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    instants = {
        "year-1": datetime(1, 1, 1, tzinfo=UTC),
        "year-999": datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "offset": datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=plus_two),  # 12:00:00.000001 UTC
        "naive": datetime(2024, 5, 1, 12, 0),  # noqa: DTZ001 - naive is taken as UTC
        "year-9999": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }
    for name, instant in instants.items():
        await store.create_run(run(name, "suspended", wake_at=instant))
    async with store._auto.connect() as conn:
        result = await conn.exec_driver_sql("SELECT id, wake_at FROM durable_workflow_runs")
        stored = dict(cast("list[tuple[str, str]]", result.all()))
    assert stored["year-1"] == "0001-01-01 00:00:00.000000"
    assert stored["offset"] == "2024-05-01 12:00:00.000001"
    assert stored["naive"] == "2024-05-01 12:00:00.000000"
    assert {len(value) for value in stored.values()} == {26}

    due = await store.list_due_timers(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), None, 10)
    assert [r.id for r in due] == ["year-1", "year-999", "naive"]
    everything = await store.list_due_timers(instants["year-9999"], None, 10)
    assert [r.id for r in everything] == ["year-1", "year-999", "naive", "offset", "year-9999"]
    assert all(r.wake_at is not None and r.wake_at.tzinfo is UTC for r in everything)


async def test_two_stores_on_one_sqlite_file_never_both_win(tmp_path: Path) -> None:
    async with provision("sqlite", tmp_path) as url:
        first = SqlAlchemyStateStore.from_url(url)
        second = SqlAlchemyStateStore.from_url(url)  # like another process: its own pool
        try:
            await first.ensure_schema()
            for i in range(20):
                await first.create_run(run(f"r{i}"))
            wins: list[tuple[str, str]] = []

            async def claim(store: SqlAlchemyStateStore, owner: str, run_id: str) -> None:
                if await store.try_lock_run(run_id, owner, LEASE, NOW):
                    wins.append((run_id, owner))

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    for n in range(3):
                        tg.start_soon(claim, first, f"a{n}", f"r{i}")
                        tg.start_soon(claim, second, f"b{n}", f"r{i}")
            assert sorted(run_id for run_id, _ in wins) == sorted(f"r{i}" for i in range(20))
        finally:
            await first.aclose()
            await second.aclose()


@pytest.mark.parametrize("db", ["sqlite"])
async def test_the_poller_finds_pairable_tokens_without_scanning_every_waiter(
    store: SqlAlchemyStateStore,
) -> None:
    # The poller asks on every tick; a waiter row exists for every parked run.
    await store.get_run("warm-up")
    assert store._db is not None
    sql = str(store._db.q.pairable_tokens.compile(dialect=store.engine.dialect))

    async def plan(s: Any) -> list[str]:
        rows = (await s.conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (10, 0))).all()
        return [row[-1] for row in rows]

    steps = await store._run("plan", plan, write=False)
    assert any("durable_signal_waiters" in step for step in steps)
    assert not any(step.startswith("SCAN durable_signal_waiters") for step in steps), steps
