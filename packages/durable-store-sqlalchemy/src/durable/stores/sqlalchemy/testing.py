"""Throwaway test databases for the SQLAlchemy store's tests and the conformance wiring.

:func:`provision` yields the URL of a fresh, empty database and drops it afterwards:

- ``sqlite``: a file in the given directory.
- ``postgres``: ``CREATE DATABASE durable_test_<random>`` on the server of ``DURABLE_PG_URL``
  (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``), dropped ``WITH (FORCE)``.
- ``mariadb``: ``CREATE DATABASE durable_test_<random>`` on the server of
  ``DURABLE_MYSQL_URL`` (default ``mysql+asyncmy://root@127.0.0.1:3306/test``).

A server that cannot be reached skips the test with a one-line reason, or fails it when the
environment has ``CI=true``. This module imports pytest only at that moment.
"""

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, NoReturn

from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from sqlalchemy.engine import URL

Database = Literal["sqlite", "postgres", "mariadb"]
"""The databases :func:`provision` can make."""

DATABASES: tuple[Database, ...] = ("sqlite", "postgres", "mariadb")

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql+asyncmy://root@127.0.0.1:3306/test"


def server_url(db: Database | str) -> URL:
    """The URL of the server (and the database to connect to for admin work) for ``db``."""
    if db == "postgres":
        return make_url(os.environ.get("DURABLE_PG_URL", DEFAULT_PG_URL))
    if db == "mariadb":
        return make_url(os.environ.get("DURABLE_MYSQL_URL", DEFAULT_MYSQL_URL))
    raise ValueError(f"{db!r} has no server")


def unavailable(reason: str) -> NoReturn:
    """Skip the running test with ``reason``, or fail it when ``CI=true``."""
    import pytest  # only tests get here; the store does not depend on pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing database is a failure)", pytrace=False)
    pytest.skip(reason)


@asynccontextmanager
async def provision(db: Database | str, tmp_path: Path) -> AsyncIterator[str]:
    """Make a fresh, empty database, yield its URL, and drop it afterwards.

    Args:
        db: ``"sqlite"``, ``"postgres"`` or ``"mariadb"`` (a plain ``str`` is accepted, as
            pytest parameters and options are strings).
        tmp_path: A directory for the SQLite file (pytest's ``tmp_path``).

    Yields:
        A SQLAlchemy async URL, with its password, for the new database.

    Raises:
        ValueError: ``db`` is not one of :data:`DATABASES`.
    """
    if db == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'durable-{secrets.token_hex(4)}.db'}"
        return
    if db not in ("postgres", "mariadb"):
        raise ValueError(f"unknown database {db!r}; expected one of {DATABASES}")
    server = server_url(db)
    name = f"durable_test_{secrets.token_hex(6)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            async with admin.connect() as conn:
                if db == "postgres":
                    await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                else:
                    await conn.exec_driver_sql(
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
        except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            where = server.render_as_string(hide_password=True)
            unavailable(f"{db} unreachable at {where}: {type(exc).__name__}")
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                if db == "postgres":
                    await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    await conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        await admin.dispose()
