"""Column types that give the durable tables one meaning on PostgreSQL, MySQL/MariaDB and SQLite.

- :class:`Key`: ``varchar(191)`` compared byte for byte (``COLLATE "C"`` on PostgreSQL, a binary
  no-pad collation on MySQL/MariaDB, SQLite's default ``BINARY``), so tokens and ids are
  case-sensitive, trailing spaces count, and ``ORDER BY`` follows code points everywhere.
- :class:`UTCDateTime`: ``timestamptz`` on PostgreSQL, ``DATETIME(6)`` (UTC) on MySQL/MariaDB,
  fixed-width UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``) on SQLite, which sorts and compares as
  text exactly as the instants do, from year 1 to 9999. Always read back as aware UTC.
- :class:`JSONText`: payloads, kept exactly as written (key order, ``\u0000``): ``json`` on
  PostgreSQL (which stores the input text), ``LONGTEXT`` on MySQL/MariaDB, ``TEXT`` on SQLite.
- :class:`QueryableJSON`: JSON the store filters on (run tags): ``jsonb`` on PostgreSQL, for its
  ``@>`` operator; as :class:`JSONText` elsewhere.

Python ``None`` is SQL ``NULL`` in both JSON types.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import DateTime, String, Text
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator, UserDefinedType

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.types import TypeEngine

    from durable.core import JSONValue

KEY_LENGTH = 191
"""Length of every keyed string column: utf8mb4 keys fit MySQL's index limits."""

_MYSQL = frozenset({"mysql", "mariadb"})


def mysql_collation(dialect: Dialect) -> str:
    """The binary, no-pad utf8mb4 collation the connected MySQL flavour offers."""
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    version = dialect.server_version_info
    if version is not None and version >= (8, 0):
        return "utf8mb4_0900_bin"
    return "utf8mb4_bin"  # offline DDL, or MySQL 5.7: binary, but trailing spaces pad


class Key(TypeDecorator[str]):
    """A short string compared byte for byte: ids, tokens, names, statuses."""

    impl = String
    cache_ok = True

    def __init__(self, length: int = KEY_LENGTH) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(String(self.length, collation="C"))
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(
                mysql.VARCHAR(self.length, charset="utf8mb4", collation=mysql_collation(dialect))
            )
        return dialect.type_descriptor(String(self.length))


class BinaryText(TypeDecorator[str]):
    """Unbounded text compared byte for byte (attribute string values)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(
                mysql.TEXT(charset="utf8mb4", collation=mysql_collation(dialect))
            )
        return dialect.type_descriptor(Text())


def format_sqlite_datetime(value: datetime) -> str:
    """The fixed-width UTC text a datetime is stored as on SQLite."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant with microseconds (naive input is taken as UTC)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))  # microseconds
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | str | None:
        if value is None:
            return None
        name = dialect.name
        if name == "sqlite":
            return format_sqlite_datetime(value)
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if name in _MYSQL:
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime column value, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if value.tzinfo is UTC else value.astimezone(UTC)


def dumps(value: JSONValue) -> str:
    """Compact JSON text; NaN and infinities are refused as they are not JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# A JSON string (skipped) or a number in exponent notation (rewritten).
_EXPONENT_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE][+-]?\d+')
_MAY_HAVE_EXPONENT = re.compile(r"\d[eE][+-]?\d")


def _positional(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    text = format(Decimal(token), "f")
    return text if "." in text else text + ".0"


def dumps_positional(value: JSONValue) -> str:
    """Compact JSON text with every float written without an exponent.

    ``jsonb`` keeps numbers as ``numeric`` and prints them without an exponent, so ``1e+16``
    would come back as the integer ``10000000000000000``. Written positionally with a decimal
    point (``10000000000000000.0``), it comes back as the same float. Payload columns are
    ``json``, which keeps any text; they are written this way too, so a payload column still of
    type ``jsonb`` (tables made by an earlier build of this store) returns floats as floats
    until it is migrated.
    """
    text = dumps(value)
    if _MAY_HAVE_EXPONENT.search(text) is None:
        return text
    return _EXPONENT_NUMBER.sub(_positional, text)


class _JSONB(UserDefinedType["JSONValue"]):
    """PostgreSQL ``jsonb`` bound from JSON text we serialise (``$1::JSONB``)."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSONB"


class _JSON(UserDefinedType["JSONValue"]):
    """PostgreSQL ``json`` bound from JSON text we serialise.

    The parameter carries no cast: the server gives it the type of the column it is written
    to, so a statement also writes a payload column still of type ``jsonb`` (a ``CASE`` that
    mixed ``json`` and ``jsonb`` would be refused).
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSON"


class _JSONColumn(TypeDecorator["JSONValue"]):
    """A JSON document serialised by us; ``None`` is stored as SQL ``NULL``."""

    impl = Text
    cache_ok = True
    _postgres: ClassVar[type[UserDefinedType[JSONValue]]]
    """The PostgreSQL column type."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return self._postgres()
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.LONGTEXT(charset="utf8mb4"))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: JSONValue, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return dumps_positional(value)
        return dumps(value)

    def process_result_value(self, value: object, dialect: Dialect) -> JSONValue:
        if isinstance(value, str | bytes) and dialect.name != "postgresql":
            loaded: JSONValue = json.loads(value)
            return loaded
        return value  # type: ignore[return-value]  # None, or json the driver decoded


class JSONText(_JSONColumn):
    """A payload: JSON text stored as written, so it reads back with its keys in order."""

    cache_ok = True
    _postgres = _JSON


class QueryableJSON(_JSONColumn):
    """JSON the store's queries look into (``@>`` on PostgreSQL ``jsonb``)."""

    cache_ok = True
    _postgres = _JSONB
