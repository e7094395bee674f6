"""The Alembic migration from docs/stores/sqlalchemy.md, run for real."""

from __future__ import annotations

import re
from pathlib import Path

import anyio.to_thread
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.stores.sqlalchemy import SqlAlchemyStateStore, metadata

pytestmark = pytest.mark.anyio

CONTRACT = set(metadata.tables)

DOC = Path(__file__).resolve().parents[3] / "docs" / "stores" / "sqlalchemy.md"

# Alembic's async template (`alembic init -t async`), reduced to what a migration run needs.
ENV_PY = """
import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()


asyncio.run(main())
"""


def documented_migration() -> str:
    blocks: list[str] = re.findall(
        r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL
    )
    (migration,) = [block for block in blocks if "def upgrade()" in block]
    return migration


def alembic_config(url: str, directory: Path) -> Config:
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(ENV_PY, encoding="utf-8")
    (directory / "versions" / "0001_durable.py").write_text(documented_migration(), "utf-8")
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def test_documented_migration_creates_the_tables_and_downgrade_drops_only_them(
    url: str, tmp_path: Path
) -> None:
    config = alembic_config(url, tmp_path / "migrations")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE app_orders (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO app_orders VALUES (7)"))

        await anyio.to_thread.run_sync(command.upgrade, config, "head")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert tables == {"alembic_version", "app_orders", *CONTRACT}
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert [tuple(row) for row in version] == [("0001_durable",)]
        async with SqlAlchemyStateStore(engine) as store:  # usable without ensure_schema
            assert await store.get_run("nothing-yet") is None
            assert await store.list_signal_waiters() == []

        await anyio.to_thread.run_sync(command.downgrade, config, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            rows = (await conn.execute(text("SELECT id FROM app_orders"))).all()
        assert tables == {"alembic_version", "app_orders"}
        assert [tuple(row) for row in rows] == [(7,)]
    finally:
        await engine.dispose()
