"""The one place driver and SQLAlchemy errors become :mod:`durable.core.errors` types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from durable.core import (
    SchemaMissingError,
    SerializationError,
    StoreError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from durable.core import DurableError

SCHEMA_HINT = (
    "create them with `await store.ensure_schema()`, start the Engine with auto_schema=True, "
    "or apply the Alembic migration from docs/stores/sqlalchemy.md "
    "(durable.stores.sqlalchemy.ensure_schema(op.get_bind()))"
)

# PostgreSQL SQLSTATEs
_PG_UNDEFINED_TABLE = "42P01"
_PG_RETRY = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")  # connection, resources, operator intervention
_PG_LOST = ("08", "57P")  # connection exception; the server shut the session down
_PG_BAD_JSON = frozenset({"22P02", "22P05", "22030", "22032"})
# MySQL/MariaDB error numbers
_MY_NO_TABLE = 1146
_MY_DUPLICATE_KEY = 1062
_MY_RETRY = frozenset({1213, 1205})  # deadlock, lock wait timeout (the whole call is redone)
_MY_UNAVAILABLE = frozenset({1040, 1043, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})


def _sqlstate(orig: BaseException | None) -> str | None:
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _mysql_errno(orig: BaseException | None) -> int | None:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def lost_connection_state(orig: BaseException) -> bool | None:
    """Whether a PostgreSQL driver error's SQLSTATE says the session is gone; None: no state."""
    state = _sqlstate(orig)
    return None if state is None else state.startswith(_PG_LOST)


def is_duplicate_key(error: sa_exc.DBAPIError) -> bool:
    """A MySQL/MariaDB duplicate primary key (``INSERT`` of an existing run id)."""
    return (
        isinstance(error, sa_exc.IntegrityError) and _mysql_errno(error.orig) == _MY_DUPLICATE_KEY
    )


def is_retryable(error: BaseException) -> bool:
    """A deadlock or serialization failure: the database rolled the work back; redo it."""
    if not isinstance(error, sa_exc.DBAPIError) or error.connection_invalidated:
        return False
    if _sqlstate(error.orig) in _PG_RETRY:
        return True
    return _mysql_errno(error.orig) in _MY_RETRY


def translate(error: BaseException, what: str) -> DurableError:
    """The core error for a failure while doing ``what`` (the caller chains ``error``)."""
    if isinstance(error, OSError):  # refused, unreachable, DNS, connect timeout
        return StoreUnavailableError(f"{what}: database unreachable: {error}")
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError):
        if isinstance(error.orig, ValueError | TypeError):
            return SerializationError(f"{what}: value is not storable as JSON: {error.orig}")
        return StoreError(f"{what}: {error}")
    if not isinstance(error, sa_exc.DBAPIError):
        return StoreError(f"{what}: {error}")
    orig = error.orig
    message = str(orig) if orig is not None else str(error)
    state = _sqlstate(orig)
    errno = _mysql_errno(orig)
    if (
        state == _PG_UNDEFINED_TABLE
        or errno == _MY_NO_TABLE
        or (isinstance(error, sa_exc.OperationalError) and "no such table" in message)
    ):
        return SchemaMissingError(
            f"{what}: the durable tables do not exist ({message}); " + SCHEMA_HINT
        )
    if state in _PG_BAD_JSON:
        return SerializationError(f"{what}: value is not storable as JSON: {message}")
    if (
        error.connection_invalidated
        or (state is not None and state.startswith(_PG_UNAVAILABLE_CLASSES))
        or errno in _MY_UNAVAILABLE
        or isinstance(error, sa_exc.InterfaceError)
        or "database is locked" in message
        or "unable to open database" in message
    ):
        return StoreUnavailableError(f"{what}: database unavailable: {message}")
    return StoreError(f"{what}: {message}")
