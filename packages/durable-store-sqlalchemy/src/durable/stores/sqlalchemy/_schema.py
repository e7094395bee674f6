"""Creating the durable tables: from the store, from your code, or from an Alembic migration."""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from durable.stores.sqlalchemy._tables import TABLES

if TYPE_CHECKING:
    from collections.abc import Coroutine

_PG_LOCK_KEY = 0x64757261626C65  # "durable": serialises concurrent schema setup
_MYSQL_LOCK = "durable_schema"


def create_durable_tables(connection: Connection) -> None:
    """Create the missing durable tables and indexes on ``connection`` (sync).

    Idempotent: a table or index that exists is left as it is (never altered, never dropped),
    and nothing outside the five ``durable_*`` tables is touched. Concurrent callers are
    serialised by an advisory lock on PostgreSQL and MySQL/MariaDB; SQLite runs DDL one writer
    at a time anyway.

    Args:
        connection: A sync connection (inside ``AsyncConnection.run_sync``, or Alembic's
            ``op.get_bind()``). Committing is the caller's business.
    """
    dialect = connection.dialect
    if dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SELECT GET_LOCK(:name, 60)"), {"name": _MYSQL_LOCK})
    try:
        _create_missing(connection)
    finally:
        if dialect.name in ("mysql", "mariadb"):
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})


def _create_missing(connection: Connection) -> None:
    dialect = connection.dialect
    # MySQL proper has no CREATE INDEX IF NOT EXISTS (MariaDB has); the lock covers it there.
    index_if_not_exists = dialect.name != "mysql" or bool(getattr(dialect, "is_mariadb", False))
    inspector = inspect(connection)
    existing = set(inspector.get_table_names())
    for table in TABLES:
        if table.name not in existing:
            connection.execute(CreateTable(table, if_not_exists=True))
            missing = list(table.indexes)
        else:
            present = {index["name"] for index in inspector.get_indexes(table.name)}
            missing = [index for index in table.indexes if index.name not in present]
        for index in sorted(missing, key=lambda index: str(index.name)):
            connection.execute(CreateIndex(index, if_not_exists=index_if_not_exists))


@overload
def ensure_schema(bind: Connection | Engine) -> None: ...
@overload
def ensure_schema(bind: AsyncConnection | AsyncEngine) -> Coroutine[object, object, None]: ...
def ensure_schema(
    bind: Connection | Engine | AsyncConnection | AsyncEngine,
) -> Coroutine[object, object, None] | None:
    """Create the durable tables and indexes that are missing; touch nothing else.

    Idempotent. Sync binds run at once; async binds return a coroutine to await::

        ensure_schema(op.get_bind())          # in an Alembic migration's upgrade()
        await ensure_schema(async_engine)     # in your own startup code

    Args:
        bind: A sync ``Connection`` (its transaction is the caller's) or ``Engine``
            (committed here), or an ``AsyncConnection`` (its transaction is the caller's) or
            ``AsyncEngine`` (committed here).

    Returns:
        None for a sync bind; for an async bind, a coroutine that does the work.
    """
    if isinstance(bind, AsyncEngine | AsyncConnection):
        return _ensure_async(bind)
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            create_durable_tables(connection)
        return None
    create_durable_tables(bind)
    return None


async def _ensure_async(bind: AsyncEngine | AsyncConnection) -> None:
    if isinstance(bind, AsyncConnection):
        await bind.run_sync(create_durable_tables)
        return
    async with bind.begin() as connection:
        await connection.run_sync(create_durable_tables)
