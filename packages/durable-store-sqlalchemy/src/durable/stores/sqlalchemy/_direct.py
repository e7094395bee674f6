"""Run the store's fixed statements on the driver's own connection, below SQLAlchemy's executor.

SQLAlchemy still does the SQL: each statement is compiled once per dialect by SQLAlchemy (text,
positional parameter order, bind casts), and values go in and come out through the bind and
result processors of the statement's SQLAlchemy types, exactly as ``AsyncConnection.execute``
would apply them. What is skipped is the per-call machinery around the driver call: the hop
into a greenlet, the execution context and the result object, which cost 100 to 220 µs per
statement on this project's benchmark machine, more than an SQLite commit.

Direct execution exists for asyncpg, psycopg 3 and aiosqlite. The MySQL drivers (asyncmy,
aiomysql) run the same statements through SQLAlchemy (:class:`ViaSqlAlchemy`), as every driver
does while the engine echoes SQL or has cursor listeners; the conformance suite runs both
kinds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, cast

from sqlalchemy import exc as sa_exc

from durable.stores.sqlalchemy._errors import lost_connection_state

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection
    from sqlalchemy.sql import ClauseElement, Executable
    from sqlalchemy.sql.compiler import SQLCompiler

_DRIVER_KEY = "durable_driver_connection"
_R = TypeVar("_R")

Args: TypeAlias = "list[Any] | dict[str, Any]"
"""A statement's arguments: positional, or by name for drivers with named placeholders."""


class Executor(Protocol):
    """Runs one statement on a checked-out connection."""

    async def count(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> int:
        """The statement's row count."""
        ...

    async def rows(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """The statement's result rows, each indexable by column position."""
        ...

    def usable(self, conn: AsyncConnection) -> bool:
        """False when the kept ``conn`` is known to be closed (the server ended it)."""
        ...


class ViaSqlAlchemy:
    """Every statement through ``AsyncConnection.execute`` (any driver)."""

    async def count(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> int:
        """The row count SQLAlchemy reports."""
        return (await conn.execute(stmt, dict(params))).rowcount

    async def rows(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """All rows, as SQLAlchemy ``Row`` objects."""
        return (await conn.execute(stmt, dict(params))).all()

    def usable(self, conn: AsyncConnection) -> bool:
        """Not invalidated (SQLAlchemy finds a dropped connection only by using it)."""
        return not conn.invalidated


@dataclass(frozen=True, slots=True)
class _Plan:
    """One statement compiled for one dialect, with its value processing."""

    sql: str
    slots: tuple[tuple[str, str | None, Any, Callable[[Any], Any] | None], ...]
    """Per parameter, in placeholder order: (placeholder name, parameter name, None,
    processor) for a value the caller passes, or (placeholder name, None, processed constant,
    None) for a literal that SQLAlchemy bound itself."""
    results: tuple[Callable[[Any], Any] | None, ...] | None
    """Per result column, its processor; None when no column needs one."""
    named: bool
    """Placeholders are named (``%(name)s``): arguments go as a dict, not a list."""

    def bind(self, params: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        """The driver's arguments for ``params``."""
        values: list[Any] = []
        for _, name, constant, process in self.slots:
            if name is None:
                values.append(constant)
            elif process is None:
                values.append(params[name])
            else:
                values.append(process(params[name]))
        if self.named:
            return {slot[0]: value for slot, value in zip(self.slots, values, strict=True)}
        return values

    def load(self, rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        """Rows with each column's result processor applied."""
        results = self.results
        if results is None:
            return rows
        return [
            tuple(value if p is None else p(value) for p, value in zip(results, row, strict=True))
            for row in rows
        ]


def _compile(stmt: Executable, dialect: Dialect) -> _Plan:
    compiled = cast("SQLCompiler", cast("ClauseElement", stmt).compile(dialect=dialect))
    sql = str(compiled)
    if "__[POSTCOMPILE" in sql:
        raise ValueError(f"statement cannot run directly on the driver: {sql}")
    named = not compiled.positional
    names = list(compiled.binds) if named else list(compiled.positiontup or ())
    slots: list[tuple[str, str | None, Any, Callable[[Any], Any] | None]] = []
    for name in names:
        param = compiled.binds[name]
        process = param.type.dialect_impl(dialect).bind_processor(dialect)
        if param.required:
            slots.append((name, param.key, None, process))
        else:
            value = param.effective_value
            slots.append((name, None, value if process is None else process(value), None))
    columns = getattr(stmt, "exported_columns", ())
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    return _Plan(sql, tuple(slots), results if any(results) else None, named)


class _Direct(ABC):
    """Statements compiled once, run on the driver connection under the ``AsyncConnection``."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        # id(stmt) -> (stmt, plan); holding stmt keeps its id from being reused.
        self._plans: dict[int, tuple[Executable, _Plan]] = {}

    def _plan(self, stmt: Executable) -> _Plan:
        entry = self._plans.get(id(stmt))
        if entry is None:
            entry = (stmt, _compile(stmt, self._dialect))
            self._plans[id(stmt)] = entry
        return entry[1]

    async def count(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> int:
        """Run the statement; its row count."""
        return await self._call(conn, self._plan(stmt), params, self._execute)

    async def rows(
        self, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """Run the statement; its rows, processed by the result columns' types."""
        plan = self._plan(stmt)
        return plan.load(await self._call(conn, plan, params, self._fetch))

    async def _call(
        self,
        conn: AsyncConnection,
        plan: _Plan,
        params: Mapping[str, Any],
        run: Callable[[Any, str, Args], Awaitable[_R]],
    ) -> _R:
        args = _bind(plan, params)
        driver = await _driver(conn)
        try:
            return await run(driver, plan.sql, args)
        except Exception as exc:
            # The same exception types SQLAlchemy raises (matched by the driver error's class
            # name), so the store's retry and translation rules see one kind of error.
            wrapped = sa_exc.DBAPIError.instance(
                plan.sql, None, exc, Exception, connection_invalidated=self._disconnected(exc)
            )
            raise cast("sa_exc.DBAPIError", wrapped) from exc

    def usable(self, conn: AsyncConnection) -> bool:
        """Not invalidated, and the driver has not seen its connection close."""
        if conn.invalidated:
            return False
        driver = conn.info.get(_DRIVER_KEY)
        return driver is None or not self._closed(driver)

    async def _execute(self, driver: Any, sql: str, args: Args) -> int:
        """Run ``sql``; its row count (drivers whose ``execute`` returns a cursor)."""
        cursor = await driver.execute(sql, args)
        rowcount: int = cursor.rowcount
        return rowcount

    @abstractmethod
    async def _fetch(self, driver: Any, sql: str, args: Args) -> Sequence[Sequence[Any]]:
        """Run ``sql``; all its rows."""

    @abstractmethod
    def _disconnected(self, exc: Exception) -> bool:
        """Whether ``exc`` leaves the connection unusable."""

    @abstractmethod
    def _closed(self, driver: Any) -> bool:
        """Whether the driver connection is closed."""


class _Asyncpg(_Direct):
    async def _execute(self, driver: Any, sql: str, args: Args) -> int:
        status: str = await driver.execute(sql, *args)  # "INSERT 0 1", "UPDATE 1", ...
        return int(status.rpartition(" ")[2])

    async def _fetch(self, driver: Any, sql: str, args: Args) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *args)
        return rows

    def _disconnected(self, exc: Exception) -> bool:
        # InternalClientError: the protocol is stuck mid-operation ("another operation is in
        # progress"), which a session ended under a running statement can leave behind.
        return _postgres_lost(exc, client_errors={"InterfaceError", "InternalClientError"})

    def _closed(self, driver: Any) -> bool:
        closed: bool = driver.is_closed()  # the server ended it (restart, idle timeout)
        return closed


class _Psycopg(_Direct):
    async def _fetch(self, driver: Any, sql: str, args: Args) -> Sequence[Sequence[Any]]:
        cursor = await driver.execute(sql, args)
        rows: Sequence[Sequence[Any]] = await cursor.fetchall()
        return rows

    def _disconnected(self, exc: Exception) -> bool:
        # Without an SQLSTATE these are psycopg's own "server closed the connection".
        return _postgres_lost(exc, client_errors={"OperationalError", "InterfaceError"})

    def _closed(self, driver: Any) -> bool:
        return bool(driver.closed or driver.broken)


class _Aiosqlite(_Direct):
    async def _fetch(self, driver: Any, sql: str, args: Args) -> Sequence[Sequence[Any]]:
        # One thread hop, and every row stepped: an UPDATE ... RETURNING commits only then.
        rows: Sequence[Sequence[Any]] = await driver.execute_fetchall(sql, args)
        return rows

    def _disconnected(self, exc: Exception) -> bool:
        # aiosqlite raises ValueError("no active connection") once its thread has stopped.
        return isinstance(exc, ValueError) or type(exc).__name__ == "ProgrammingError"

    def _closed(self, driver: Any) -> bool:
        return False  # a file: nothing ends the connection from the other side


def _postgres_lost(exc: Exception, *, client_errors: set[str]) -> bool:
    """A PostgreSQL driver error that leaves its connection unusable.

    The SQLSTATE decides when there is one (``_errors``); without one, the driver's own
    client-side errors (closed connection, another operation in progress) do.
    """
    if isinstance(exc, OSError | TimeoutError):
        return True
    lost = lost_connection_state(exc)
    if lost is not None:
        return lost
    return any(cls.__name__ in client_errors for cls in type(exc).__mro__)


def _bind(plan: _Plan, params: Mapping[str, Any]) -> Args:
    try:
        return plan.bind(params)
    except (TypeError, ValueError) as exc:  # a value the column type cannot store
        raise sa_exc.StatementError(str(exc), plan.sql, None, exc) from exc


async def _driver(conn: AsyncConnection) -> Any:
    info = conn.info
    driver = info.get(_DRIVER_KEY)
    if driver is None:  # once per DBAPI connection (info is cleared when it is replaced)
        driver = (await conn.get_raw_connection()).driver_connection
        info[_DRIVER_KEY] = driver
    return driver


def executor_for(dialect: Dialect) -> Executor:
    """Direct execution for asyncpg, psycopg and aiosqlite; SQLAlchemy's for other drivers."""
    if dialect.driver == "asyncpg":
        return _Asyncpg(dialect)
    if dialect.driver == "psycopg":
        return _Psycopg(dialect)
    if dialect.driver == "aiosqlite":
        return _Aiosqlite(dialect)
    return ViaSqlAlchemy()
