"""SQLAlchemy 2 (async) state store for durable: PostgreSQL, MySQL/MariaDB and SQLite.

``SqlAlchemyStateStore`` implements :class:`durable.core.StateStore`; ``metadata`` holds the
five durable tables for Alembic autogenerate; ``ensure_schema`` creates them from your code or
from a migration.
"""

from durable.stores.sqlalchemy._schema import ensure_schema
from durable.stores.sqlalchemy._tables import metadata
from durable.stores.sqlalchemy.store import SqlAlchemyStateStore

__all__ = ["SqlAlchemyStateStore", "ensure_schema", "metadata"]
