"""The five durable tables, as SQLAlchemy Core ``Table`` objects in one ``MetaData``.

Names and columns are the contract shared by every adapter: every durable store writes
and reads these exact tables, so a database written by one adapter is readable by another.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    false,
    text,
)

from durable.stores.sqlalchemy._coltypes import (
    BinaryText,
    JSONText,
    Key,
    QueryableJSON,
    UTCDateTime,
)

metadata = MetaData()
"""The durable tables. Merge it into your own for Alembic autogenerate (see the docs)."""

_MYSQL_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}

runs = Table(
    "durable_workflow_runs",
    metadata,
    Column("id", Key(), primary_key=True),
    Column("workflow", Key(), nullable=False),
    Column("workflow_version", Key(), nullable=False),
    Column("status", Key(), nullable=False),
    Column("input", JSONText()),
    Column("output", JSONText()),
    Column("error", JSONText()),
    Column("wake_at", UTCDateTime()),
    Column("locked_by", Key()),
    Column("locked_until", UTCDateTime()),
    Column("recovery_attempts", Integer(), nullable=False, server_default=text("0")),
    Column("wake_requested", Boolean(), nullable=False, server_default=false()),
    Column("tags", QueryableJSON()),
    Column("attributes", JSONText()),
    Column("namespace", Key(), nullable=False, server_default="default"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("durable_runs_ns_status_created_idx", "namespace", "status", "created_at"),
    Index("durable_runs_ns_status_wake_idx", "namespace", "status", "wake_at"),
    Index("durable_runs_workflow_status_idx", "workflow", "status"),
    **_MYSQL_OPTIONS,
)

checkpoints = Table(
    "durable_step_checkpoints",
    metadata,
    Column("run_id", Key(), primary_key=True),
    Column("seq", Integer(), primary_key=True, autoincrement=False),
    Column("name", Key(), nullable=False),
    Column("kind", Key(), nullable=False),
    Column("step_id", String(255), nullable=False),
    Column("status", Key(), nullable=False),
    Column("input", JSONText()),
    Column("output", JSONText()),
    Column("error", JSONText()),
    Column("attempts", Integer(), nullable=False, server_default=text("0")),
    Column("wake_at", UTCDateTime()),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    **_MYSQL_OPTIONS,
)

attributes = Table(
    "durable_run_attributes",
    metadata,
    Column("run_id", Key(), primary_key=True),
    Column("key", Key(), primary_key=True),
    Column("str_value", BinaryText()),
    Column("num_value", Double()),
    Index(
        "durable_run_attributes_key_str_idx",
        "key",
        "str_value",
        mysql_length={"str_value": 191},
        mariadb_length={"str_value": 191},
    ),
    Index("durable_run_attributes_key_num_idx", "key", "num_value"),
    **_MYSQL_OPTIONS,
)

signal_waiters = Table(
    "durable_signal_waiters",
    metadata,
    Column("token", Key(), primary_key=True),
    Column("run_id", Key(), nullable=False),
    Column("seq", Integer(), nullable=False),
    Index("durable_signal_waiters_run_idx", "run_id"),
    **_MYSQL_OPTIONS,
)

buffered_signals = Table(
    "durable_buffered_signals",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("token", Key(), nullable=False),
    Column("payload", JSONText()),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("durable_buffered_signals_token_idx", "token", "id"),
    sqlite_autoincrement=True,
    **_MYSQL_OPTIONS,
)

TABLES = (runs, checkpoints, attributes, signal_waiters, buffered_signals)
"""Every durable table, in creation order."""
