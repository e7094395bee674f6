"""Databases to benchmark against: a fresh one per measurement, and the store on top of it.

``memory`` is durable's ``InMemoryStateStore`` (no database, so no DBOS column and no raw floor);
``sqlite`` is a new file in a temp directory; ``postgres`` is a new database
``durable_bench_<random>`` on ``$DURABLE_BENCH_PG`` (default ``127.0.0.1:5432``, user
``postgres``), dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from durable.core import StateStore

DATABASES = ("memory", "sqlite", "postgres")
PG_HOST = os.environ.get("DURABLE_BENCH_PG", "127.0.0.1:5432")
PG_USER = os.environ.get("DURABLE_BENCH_PG_USER", "postgres")


@dataclass(frozen=True, slots=True)
class Target:
    """One fresh database, in the forms each contender needs."""

    db: str
    durable_url: str | None = None  # SqlAlchemyStateStore.from_url
    dbos_url: str | None = None  # DBOS system_database_url
    raw_sqlite: str | None = None  # file path for sqlite3 / aiosqlite
    raw_pg: str | None = None  # libpq conninfo for psycopg / asyncpg dsn

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(**data)


def _pg_admin() -> Any:
    import psycopg

    host, _, port = PG_HOST.partition(":")
    return psycopg.connect(
        host=host, port=int(port or 5432), user=PG_USER, dbname="postgres", autocommit=True
    )


def postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        with _pg_admin() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "skip postgres"
        return f"PostgreSQL at {PG_HOST} unreachable: {type(exc).__name__}: {exc}"
    return None


def sa_store_available() -> str | None:
    """None when ``durable.stores.sqlalchemy.SqlAlchemyStateStore`` imports, else why not."""
    try:
        from durable.stores.sqlalchemy import SqlAlchemyStateStore  # noqa: F401
    except ImportError as exc:
        return f"durable.stores.sqlalchemy not usable: {exc}"
    return None


@contextmanager
def fresh_target(db: str, workdir: Path) -> Iterator[Target]:
    """A new, empty database of kind ``db``; removed on exit."""
    if db == "memory":
        yield Target("memory")
    elif db == "sqlite":
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "bench.sqlite"
            yield Target(
                "sqlite",
                durable_url=f"sqlite+aiosqlite:///{path}",
                dbos_url=f"sqlite:///{path}",
                raw_sqlite=str(path),
            )
    elif db == "postgres":
        name = f"durable_bench_{uuid.uuid4().hex[:12]}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        auth = f"{PG_USER}@{PG_HOST}/{name}"
        try:
            yield Target(
                "postgres",
                durable_url=f"postgresql+asyncpg://{auth}",
                dbos_url=f"postgresql://{auth}",
                raw_pg=f"postgresql://{auth}",
            )
        finally:
            with _pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        raise ValueError(f"unknown database {db!r}; choose from {', '.join(DATABASES)}")


def make_store(target: Target) -> StateStore:
    """The durable store for ``target`` (called in the child process)."""
    if target.db == "memory":
        from durable.core import InMemoryStateStore

        return InMemoryStateStore()
    from durable.stores.sqlalchemy import SqlAlchemyStateStore

    assert target.durable_url is not None
    return SqlAlchemyStateStore.from_url(target.durable_url)  # type: ignore[no-any-return,unused-ignore]
