"""Connections the store keeps between calls, and the statements it runs on the driver itself."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import (
    CheckpointRecord,
    RunRecord,
    SchemaMissingError,
    SerializationError,
    StoreUnavailableError,
)
from durable.stores.sqlalchemy import SqlAlchemyStateStore, _connections
from durable.stores.sqlalchemy._direct import _DRIVER_KEY, ViaSqlAlchemy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "wf", "1", "pending", {"n": 1}, NOW, NOW)


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(url, pool_size=8, max_overflow=0)
    yield engine
    await engine.dispose()


def pool_of(engine: AsyncEngine) -> Any:
    return engine.sync_engine.pool


def checkouts(engine: AsyncEngine) -> list[int]:
    seen = [0]

    def count(*_: object) -> None:
        seen[0] += 1

    event.listen(engine.sync_engine, "engine_connect", count)
    return seen


async def test_the_store_keeps_at_most_keep_connections_and_hands_them_back_on_close(
    engine: AsyncEngine, url: str
) -> None:
    writer = 1 if url.startswith("sqlite") else 0  # SQLite's writer connection is kept too
    async with SqlAlchemyStateStore(engine, keep_connections=2) as store:
        await store.ensure_schema()
        await store.create_run(run("r1"))
        async with anyio.create_task_group() as tg:
            for _ in range(6):  # six reads at once need six connections
                tg.start_soon(store.get_run, "r1")
        assert pool_of(engine).checkedout() == 2 + writer
    assert pool_of(engine).checkedout() == 0


@pytest.mark.parametrize(
    ("kept_for", "pool_checkouts"),
    [
        (None, 0),  # reused within the limit: the pool is never asked again
        (0.0, 5),  # older than the limit: back to the pool, and a fresh checkout each time
    ],
)
async def test_a_kept_connection_serves_the_next_call_until_it_is_kept_too_long(
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    kept_for: float | None,
    pool_checkouts: int,
) -> None:
    if kept_for is not None:
        monkeypatch.setattr(_connections, "KEEP_IDLE_SECONDS", kept_for)
    async with SqlAlchemyStateStore(engine) as store:
        await store.ensure_schema()
        await store.create_run(run("r1"))
        await store.get_run("r1")
        seen = checkouts(engine)
        for _ in range(5):
            assert await store.get_run("r1") is not None
        assert seen[0] == pool_checkouts


async def test_keep_connections_zero_returns_every_connection(engine: AsyncEngine) -> None:
    async with SqlAlchemyStateStore(engine, keep_connections=0) as store:
        await store.ensure_schema()
        await store.get_run("r1")
        assert pool_of(engine).checkedout() == (1 if engine.dialect.name == "sqlite" else 0)


async def test_keep_connections_cannot_be_negative(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="keep_connections must be 0 or more"):
        SqlAlchemyStateStore(engine, keep_connections=-1)


async def kept_driver(store: SqlAlchemyStateStore) -> Any:
    """The asyncpg connection under the connection the store's next call takes."""
    return (await store._idle[-1][0].get_raw_connection()).driver_connection


async def terminate(url: str, pid: int, *, after: float = 0.0) -> None:
    """End the server session ``pid`` from another connection."""
    await anyio.sleep(after)
    killer = create_async_engine(url)
    try:
        async with killer.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()


@pytest.mark.parametrize("db", ["postgres"])
async def test_a_kept_connection_the_server_ended_is_replaced_without_an_error(
    store: SqlAlchemyStateStore, url: str
) -> None:
    await store.create_run(run("r1"))
    driver = await kept_driver(store)
    await terminate(url, driver.get_server_pid())
    with anyio.fail_after(10):
        while not driver.is_closed():  # noqa: ASYNC110 - the driver has no event for it
            await anyio.sleep(0.01)
    got = await store.get_run("r1")
    assert got is not None
    assert got.id == "r1"


@pytest.mark.parametrize("db", ["postgres"])
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_a_connection_lost_mid_call_is_an_error_and_the_next_call_works(
    url: str, driver: str
) -> None:
    async with SqlAlchemyStateStore.from_url(
        make_url(url).set(drivername=f"postgresql+{driver}")
    ) as store:
        await store.ensure_schema()
        await store.create_run(run("r1"))
        async with anyio.create_task_group() as tg:  # two reads at once: two kept connections
            tg.start_soon(store.get_run, "r1")
            tg.start_soon(store.get_run, "r1")
        assert len(store._idle) == 2
        # The next call takes the most recently kept connection.
        raw = (await store._idle[-1][0].get_raw_connection()).driver_connection
        assert raw is not None
        pid = raw.get_server_pid() if driver == "asyncpg" else raw.info.backend_pid

        blocker = create_async_engine(url)
        try:
            async with blocker.connect() as other, other.begin():
                # Hold the run row, so the claim's UPDATE waits on it until its session ends.
                await other.execute(
                    text("SELECT id FROM durable_workflow_runs WHERE id = 'r1' FOR UPDATE")
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(partial(terminate, url, pid, after=0.3))
                    with pytest.raises(StoreUnavailableError, match="try_lock_run"):
                        await store.try_lock_run("r1", "w1", NOW + timedelta(seconds=30), NOW)
        finally:
            await blocker.dispose()
        assert store._idle == []  # the other kept connection went too: likely gone as well
        assert await store.try_lock_run("r1", "w1", NOW + timedelta(seconds=30), NOW)


async def test_fixed_statements_run_on_the_driver_except_on_mysql(
    store: SqlAlchemyStateStore,
) -> None:
    await store.get_run("r1")
    assert store._db is not None
    direct = store.engine.dialect.driver in ("asyncpg", "psycopg", "aiosqlite")
    assert isinstance(store._db.x, ViaSqlAlchemy) is not direct
    [(kept, _)] = store._idle
    assert (_DRIVER_KEY in kept.info) is direct  # only direct execution looks the driver up


async def test_cursor_listeners_see_every_statement(store: SqlAlchemyStateStore) -> None:
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        seen.append(args[2])

    event.listen(store.engine.sync_engine, "before_cursor_execute", on_execute)
    await store.create_run(run("r1"))
    assert await store.get_run("r1") is not None
    assert [sql.split()[0] for sql in seen if "durable_workflow_runs" in sql] == [
        "INSERT",
        "SELECT",
    ]


async def test_an_echoing_engine_logs_every_statement(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
        async with SqlAlchemyStateStore.from_url(url, echo=True) as store:
            await store.ensure_schema()
            await store.get_run("r1")
    assert any("FROM durable_workflow_runs" in record.getMessage() for record in caplog.records)


async def test_direct_statements_report_errors_as_the_core_types(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url) as store:
        with pytest.raises(SchemaMissingError, match="ensure_schema"):
            await store.get_run("r1")
        await store.ensure_schema()
        await store.create_run(run("r1"))
        assert await store.try_lock_run("r1", "w1", NOW + timedelta(seconds=30), NOW)
        bad = CheckpointRecord(
            "r1", 0, "s", "local", "completed", "r1:0", NOW, output={"x": float("nan")}
        )
        with pytest.raises(SerializationError):
            await store.save_checkpoint(bad, owner="w1")
        good = CheckpointRecord("r1", 0, "s", "local", "completed", "r1:0", NOW, output=[1])
        assert await store.save_checkpoint(good, owner="w1")  # the connection is still fine


async def test_a_call_running_while_the_store_closes_returns_its_connection(
    engine: AsyncEngine,
) -> None:
    store = SqlAlchemyStateStore(engine)
    await store.ensure_schema()
    await store.create_run(run("r1"))
    started = anyio.Event()
    finish = anyio.Event()

    async def held(s: Any) -> None:
        await s.rows(s.q.get_run, {"rid": "r1"})
        started.set()
        await finish.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(store._run, "held", held, write=False))
        await started.wait()
        await store.aclose()
        finish.set()
    assert pool_of(engine).checkedout() == 0
