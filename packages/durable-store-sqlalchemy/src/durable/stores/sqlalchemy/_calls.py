"""The store's calls: one autocommit connection per call, a transaction when asked, retries.

``StoreCalls._run`` is what every protocol method goes through: on SQLite it takes the
in-process writer lock; it redoes a call the database undid (deadlock, serialization failure),
translates any other driver failure into a core error, and decides from how the call failed
whether its connection may serve again (``_failure``). Fixed statements run on the driver
connection directly where ``_direct`` can, unless the engine is observed (SQL logging, cursor
listeners).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
from sqlalchemy import exc as sa_exc

from durable.core import DurableError
from durable.stores.sqlalchemy._connections import (
    KeptConnections,
    close_connection,
    end_transaction,
)
from durable.stores.sqlalchemy._direct import Executor, ViaSqlAlchemy, executor_for
from durable.stores.sqlalchemy._errors import is_oversized, is_retryable, translate
from durable.stores.sqlalchemy._statements import Features, Statements

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.sql import Executable

    from durable.stores.sqlalchemy._convert import AnyRow

_T = TypeVar("_T")


_ATTEMPTS = 10
"""Tries of a call that met a deadlock or serialization failure (the database undid it)."""
_SQLITE_READY = "durable_sqlite_pragmas"
_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
)
_BEGIN = {"postgresql": "BEGIN", "mysql": "START TRANSACTION", "sqlite": "BEGIN IMMEDIATE"}
_VIA_SQLALCHEMY = ViaSqlAlchemy()


@dataclass(frozen=True, slots=True)
class Database:
    """What the store knows once connected: the dialect's statements and how to run them."""

    q: Statements
    x: Executor
    max_packet: int | None
    """MySQL/MariaDB's ``max_allowed_packet`` in bytes: the largest statement it accepts."""


@dataclass(frozen=True, slots=True)
class Session:
    """One call's connection, with the statements and the executor to run them."""

    conn: AsyncConnection
    q: Statements
    x: Executor

    async def count(self, stmt: Executable, params: dict[str, Any]) -> int:
        """Run a fixed statement; its row count."""
        return await self.x.count(self.conn, stmt, params)

    async def rows(self, stmt: Executable, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """Run a fixed statement; its rows."""
        return await self.x.rows(self.conn, stmt, params)

    async def first(self, stmt: Executable, params: dict[str, Any]) -> Sequence[Any] | None:
        """Run a fixed statement; its first row, or None."""
        rows = await self.x.rows(self.conn, stmt, params)
        return rows[0] if rows else None


class Rollback(Exception):  # control flow inside the store; never escapes it
    """Raised inside a transaction to roll it back and return ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def _is_autocommit(engine: AsyncEngine) -> bool:
    # create_async_engine(isolation_level=...) is applied per new connection; only the
    # dialect remembers it.
    level = getattr(engine.sync_engine.dialect, "_on_connect_isolation_level", None)
    return level == "AUTOCOMMIT"


class StoreCalls(KeptConnections):
    """How a store call runs: its connection, its transaction, its retries (base of the store).

    Attributes:
        engine: The engine the store runs on.
    """

    def __init__(self, engine: AsyncEngine, keep_connections: int) -> None:
        super().__init__(keep_connections)
        self.engine = engine
        self._auto = (
            engine
            if _is_autocommit(engine)
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        family = Features.of(engine.sync_engine.dialect).family
        self._mysql = family == "mysql"
        self._sqlite = family == "sqlite"
        self._postgres = family == "postgresql"
        self._begin = _BEGIN[family]
        self._db = None
        self._sqlite_writer: anyio.Lock | None = None

    async def _run(
        self,
        what: str,
        op: Callable[[Session], Awaitable[_T]],
        *,
        tx: bool | Callable[[Features], bool] = False,
        write: bool = True,
    ) -> _T:
        """Run ``op`` on an autocommit connection, inside one transaction when ``tx`` says so.

        On SQLite, writers of this process take turns on an in-process lock: SQLite admits one
        writer at a time anyway, and waiting here is cheaper than its busy-timeout back-off
        (which still covers writers in other processes). The lock holder writes on one
        connection kept open between calls.
        """
        if write and self._sqlite:
            if self._sqlite_writer is None:
                self._sqlite_writer = anyio.Lock()
            async with self._sqlite_writer:
                return await self._attempt(what, op, tx, writer=True)
        return await self._attempt(what, op, tx)

    async def _attempt(
        self,
        what: str,
        op: Callable[[Session], Awaitable[_T]],
        tx: bool | Callable[[Features], bool],
        *,
        writer: bool = False,
    ) -> _T:
        """Run ``op``; redo it after a deadlock, translate any other failure.

        A deadlock or serialization failure is retried from scratch (the database undid the
        work); any other failure becomes a core error chained to the driver's.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(op, tx, writer)
            except DurableError:
                raise
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                if attempt < _ATTEMPTS and is_retryable(exc):
                    await anyio.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))
                    continue
                raise translate(exc, what, max_packet=self._max_packet()) from exc

    async def _once(
        self,
        op: Callable[[Session], Awaitable[_T]],
        tx: bool | Callable[[Features], bool],
        writer: bool,
    ) -> _T:
        """One try of ``op`` on a kept connection, or a new one from the pool.

        The connection is kept for the next call when the call succeeded or failed cleanly
        (the database refused a statement; nothing is left open). After a cancellation, a
        lost connection or any other failure it is invalidated: whatever it was doing
        mid-call, nobody reuses it. A lost connection also drops the other kept ones, which
        are likely gone too.
        """
        conn = await self._take(writer) or await self._auto.connect().start()
        try:
            result = await self._execute(conn, op, tx)
        except BaseException as exc:
            failure = _failure(exc, self._max_packet())
            if failure == "clean" and not conn.invalidated:
                await self._put(conn, writer)
            else:
                await close_connection(conn, invalidate=True)
                if failure == "lost":
                    await self._drop_idle()
            raise
        await self._put(conn, writer)
        return result

    async def _execute(
        self,
        conn: AsyncConnection,
        op: Callable[[Session], Awaitable[_T]],
        tx: bool | Callable[[Features], bool],
    ) -> _T:
        db = self._db or await self._database(conn)
        if self._sqlite and not conn.info.get(_SQLITE_READY):
            for pragma in _SQLITE_PRAGMAS:
                await conn.exec_driver_sql(pragma)
            conn.info[_SQLITE_READY] = True
        session = Session(conn, db.q, _VIA_SQLALCHEMY if self._observed() else db.x)
        if tx is True or (tx is not False and tx(db.q.features)):
            return await self._transaction(session, op)
        try:
            return await op(session)
        except Rollback as outcome:  # nothing to undo: one autocommit statement
            return cast("_T", outcome.value)

    def _observed(self) -> bool:
        """The engine logs SQL or has cursor-execute listeners (OpenTelemetry, SQL counters).

        Then every statement goes through SQLAlchemy, so they see each one; statements run
        directly on the driver would pass them by.
        """
        sync = self.engine.sync_engine
        events = sync.dispatch
        return bool(sync.echo or events.before_cursor_execute or events.after_cursor_execute)

    async def _database(self, conn: AsyncConnection) -> Database:
        # Built after the first connect: only then does the dialect know MariaDB from MySQL.
        max_packet = None
        if self._mysql:
            found = await conn.exec_driver_sql("SELECT @@max_allowed_packet")
            max_packet = int(found.scalar_one())
        dialect = conn.dialect
        self._db = Database(Statements(Features.of(dialect)), executor_for(dialect), max_packet)
        return self._db

    def _max_packet(self) -> int | None:
        return None if self._db is None else self._db.max_packet

    async def _transaction(self, session: Session, op: Callable[[Session], Awaitable[_T]]) -> _T:
        conn = session.conn
        await conn.exec_driver_sql(self._begin)
        try:
            result = await op(session)
        except Rollback as rollback:
            await end_transaction(conn, "ROLLBACK")
            return cast("_T", rollback.value)
        except BaseException:
            # The failure is what the caller hears about: a ROLLBACK that fails as well (the
            # server closed the connection) has already invalidated it.
            with contextlib.suppress(Exception):
                await end_transaction(conn, "ROLLBACK")
            raise
        await end_transaction(conn, "COMMIT")
        return result

    async def _count(
        self, what: str, stmt: Callable[[Statements], Executable], params: dict[str, Any]
    ) -> int:
        async def op(s: Session) -> int:
            return await s.count(stmt(s.q), params)

        return await self._run(what, op)

    async def _rows(
        self, what: str, stmt: Callable[[Statements], Executable], params: dict[str, Any]
    ) -> Sequence[Sequence[Any]]:
        async def op(s: Session) -> Sequence[Sequence[Any]]:
            return await s.rows(stmt(s.q), params)

        return await self._run(what, op, write=False)

    async def _adhoc_rows(
        self, what: str, build: Callable[[Statements], Executable]
    ) -> Sequence[AnyRow]:
        """Rows of a statement built for this call only (through SQLAlchemy, never cached)."""

        async def op(s: Session) -> Sequence[AnyRow]:
            return (await s.conn.execute(build(s.q))).all()

        return await self._run(what, op, write=False)


def _failure(exc: BaseException, max_packet: int | None) -> Literal["clean", "broken", "lost"]:
    """What a failed call left of its connection.

    ``clean``: as good as before, nothing left open (the database refused a statement, or
    the value never reached it). ``lost``: the connection to the server is gone. ``broken``:
    anything else (cancelled mid-call, an unexpected error, a statement refused for its size,
    after which MySQL/MariaDB close the connection); nobody should reuse it.
    """
    if isinstance(exc, OSError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return "lost"
    if is_oversized(exc, max_packet):
        return "broken"
    if isinstance(exc, DurableError):
        return "clean"
    if isinstance(exc, sa_exc.InterfaceError) or not isinstance(exc, sa_exc.StatementError):
        return "broken"
    return "clean"  # DBAPIError (a refused statement) or StatementError (a refused value)
