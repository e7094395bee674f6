"""The one place driver and SQLAlchemy errors become :mod:`durable.core.errors` types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from durable.core import (
    PayloadTooLargeError,
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
_PG_TOO_LARGE = "54000"  # program limit exceeded: for our statements, a value too large
# MySQL/MariaDB error numbers
_MY_NO_TABLE = 1146
_MY_DUPLICATE_KEY = 1062
_MY_RETRY = frozenset({1213, 1205})  # deadlock, lock wait timeout (the whole call is redone)
_MY_UNAVAILABLE = frozenset({1040, 1043, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})
_MY_PACKET_TOO_LARGE = 1153  # the server also closes the connection
_MY_CUT_OFF = frozenset({2006, 2013, 2055})  # the client lost the connection mid-statement
# SQLite (SQLITE_TOOBIG)
_SQLITE_TOO_BIG = "string or blob too big"


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


def _value_sizes(error: sa_exc.StatementError) -> list[int]:
    """The sizes in bytes of the text and binary values the failed statement was given."""
    params = error.params
    values = list(params.values()) if isinstance(params, Mapping) else params
    if not isinstance(values, list | tuple):
        return []  # unknown here, or executemany rows (attribute rows: small)
    return [_byte_length(value) for value in values if isinstance(value, str | bytes)]


def _byte_length(value: str | bytes) -> int:
    if isinstance(value, bytes) or value.isascii():  # JSON text we wrote is ASCII: no copy
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


def is_oversized(error: BaseException, max_packet: int | None) -> bool:
    """The database refused a statement for its size (it may have closed the connection too).

    MySQL/MariaDB answer error 1153 to a statement over ``max_allowed_packet`` and close the
    connection; one far over it is cut off mid-send instead, and the driver reports a protocol
    error or a lost connection: such a failure of a statement whose values alone exceed
    ``max_packet`` counts as well (a server error with any other number does not). PostgreSQL
    refuses a value over one of its limits (1 GB a field) with SQLSTATE 54000; SQLite says
    "string or blob too big".
    """
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    orig = error.orig
    errno = _mysql_errno(orig)
    if errno == _MY_PACKET_TOO_LARGE or _sqlstate(orig) == _PG_TOO_LARGE:
        return True
    if _SQLITE_TOO_BIG in str(orig):
        return True
    cut_off = errno is None or errno in _MY_CUT_OFF
    return cut_off and max_packet is not None and sum(_value_sizes(error)) > max_packet


def _too_large(error: sa_exc.DBAPIError, what: str, max_packet: int | None) -> PayloadTooLargeError:
    sizes = _value_sizes(error)
    size = f"{sum(sizes):,} bytes of values (the largest {max(sizes):,})" if sizes else "a value"
    orig = error.orig
    if _sqlstate(orig) == _PG_TOO_LARGE:
        limit = "a PostgreSQL size limit (one field holds at most 1 GB)"
    elif _SQLITE_TOO_BIG in str(orig):
        limit = "SQLite's largest string (SQLITE_MAX_LENGTH, 1,000,000,000 bytes by default)"
    elif max_packet is not None:
        megabytes = max_packet / 2**20
        limit = f"the server's max_allowed_packet of {max_packet:,} bytes ({megabytes:g} MB)"
    else:
        limit = "the server's max_allowed_packet"
    return PayloadTooLargeError(f"{what}: {size} exceed {limit}; nothing was written")


def is_duplicate_key(error: sa_exc.DBAPIError) -> bool:
    """A MySQL/MariaDB duplicate primary key (an ``INSERT`` of a key that exists)."""
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


def translate(error: BaseException, what: str, *, max_packet: int | None = None) -> DurableError:
    """The core error for a failure while doing ``what`` (the caller chains ``error``).

    ``max_packet`` is MySQL/MariaDB's ``max_allowed_packet`` in bytes, when known.
    """
    if isinstance(error, OSError):  # refused, unreachable, DNS, connect timeout
        return StoreUnavailableError(f"{what}: database unreachable: {error}")
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError):
        if isinstance(error.orig, ValueError | TypeError):
            return SerializationError(f"{what}: value is not storable as JSON: {error.orig}")
        return StoreError(f"{what}: {error}")
    if not isinstance(error, sa_exc.DBAPIError):
        return StoreError(f"{what}: {error}")
    if is_oversized(error, max_packet):
        return _too_large(error, what, max_packet)
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
