from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import Engine, RunRecord, SchemaMissingError
from durable.stores.sqlalchemy import SqlAlchemyStateStore, ensure_schema, metadata

if TYPE_CHECKING:
    from sqlalchemy import Connection

pytestmark = pytest.mark.anyio

CONTRACT = set(metadata.tables)

APP_DDL = "CREATE TABLE app_orders (id INTEGER PRIMARY KEY, note VARCHAR(50), total INTEGER)"
APP_ROWS = [(1, "first", 100), (2, "second", 250)]


def _snapshot(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)),
            inspector.get_pk_constraint(name)["constrained_columns"],
        )
        for name in sorted(inspector.get_table_names())
    }


def _sync_url(url: str) -> str:
    """The same database through a sync driver (what Alembic's op.get_bind() hands over)."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
    return parsed.set(drivername=driver[parsed.get_backend_name()]).render_as_string(
        hide_password=False
    )


async def test_ensure_schema_twice_changes_nothing_and_leaves_other_tables_alone(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(APP_DDL))
            for row in APP_ROWS:
                await conn.execute(
                    text("INSERT INTO app_orders VALUES (:i, :n, :t)"),
                    dict(zip("int", row, strict=True)),
                )
        async with SqlAlchemyStateStore(engine) as store:
            await store.ensure_schema()
            async with engine.connect() as conn:
                first = await conn.run_sync(_snapshot)
            await store.ensure_schema()
            await ensure_schema(engine)
            async with engine.connect() as conn:
                assert await conn.run_sync(_snapshot) == first
                rows = (
                    await conn.execute(text("SELECT id, note, total FROM app_orders ORDER BY id"))
                ).all()
        assert [tuple(r) for r in rows] == APP_ROWS
        assert set(first) == {"app_orders", *CONTRACT}
        assert [c[0] for c in first["app_orders"][0]] == ["id", "note", "total"]
    finally:
        await engine.dispose()


async def test_ensure_schema_keeps_rows_and_recreates_a_dropped_index(url: str) -> None:
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    run = RunRecord("r1", "wf", "1", "pending", {"kept": True}, created_at=now, updated_at=now)
    try:
        async with SqlAlchemyStateStore(engine) as store:
            await store.ensure_schema()
            assert await store.create_run(run)
            async with engine.begin() as conn:
                drop = "DROP INDEX durable_runs_workflow_status_idx"
                if engine.dialect.name == "mysql":
                    drop += " ON durable_workflow_runs"
                await conn.execute(text(drop))
            await store.ensure_schema()
            assert await store.get_run("r1") == run
            async with engine.connect() as conn:
                names = await conn.run_sync(
                    lambda c: {i["name"] for i in inspect(c).get_indexes("durable_workflow_runs")}
                )
        assert "durable_runs_workflow_status_idx" in names
    finally:
        await engine.dispose()


async def test_ensure_schema_accepts_sync_and_async_connections(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(APP_DDL))
            # Alembic's async env.py hands migrations this sync facade (op.get_bind()).
            await conn.run_sync(ensure_schema)
            first = await conn.run_sync(_snapshot)
            assert set(first) == {"app_orders", *CONTRACT}
            await ensure_schema(conn)
            assert await conn.run_sync(_snapshot) == first
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])  # the sync drivers we install
async def test_ensure_schema_accepts_a_sync_driver_connection(url: str) -> None:
    sync_engine = create_engine(_sync_url(url))
    try:
        with sync_engine.begin() as conn:  # a sync Alembic env.py
            ensure_schema(conn)
            ensure_schema(conn)
            assert set(_snapshot(conn)) == set(CONTRACT)
        ensure_schema(sync_engine)
    finally:
        sync_engine.dispose()


async def test_missing_tables_raise_schema_missing_error_naming_the_fixes(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url) as store:
        with pytest.raises(SchemaMissingError) as caught:
            await store.get_run("r1")
        message = str(caught.value)
        assert "get_run(run 'r1')" in message
        for fix in ("await store.ensure_schema()", "auto_schema=True", "Alembic"):
            assert fix in message
        with pytest.raises(SchemaMissingError):
            await store.try_lock_run("r1", "me", datetime.now(UTC), datetime.now(UTC))


async def test_an_engine_without_auto_schema_fails_to_start_on_missing_tables(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url) as store:
        with pytest.raises(SchemaMissingError, match="auto_schema=True"):
            async with Engine(store, auto_schema=False):
                pytest.fail("the engine started without its tables")
        assert set(await _tables(url)) & CONTRACT == set()


async def _tables(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
