from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from durable.stores.sqlalchemy import ensure_schema, metadata
from durable.stores.sqlalchemy._tables import TABLES

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import Dialect

pytestmark = pytest.mark.anyio

CONTRACT = {
    "durable_workflow_runs": [
        "id",
        "workflow",
        "workflow_version",
        "status",
        "input",
        "output",
        "error",
        "wake_at",
        "locked_by",
        "locked_until",
        "recovery_attempts",
        "wake_requested",
        "tags",
        "attributes",
        "namespace",
        "created_at",
        "updated_at",
    ],
    "durable_step_checkpoints": [
        "run_id",
        "seq",
        "name",
        "kind",
        "step_id",
        "status",
        "input",
        "output",
        "error",
        "attempts",
        "wake_at",
        "started_at",
        "finished_at",
    ],
    "durable_run_attributes": ["run_id", "key", "str_value", "num_value"],
    "durable_signal_waiters": ["token", "run_id", "seq"],
    "durable_buffered_signals": ["id", "token", "payload", "created_at"],
}
KEYS = {
    "durable_workflow_runs": ["id"],
    "durable_step_checkpoints": ["run_id", "seq"],
    "durable_run_attributes": ["run_id", "key"],
    "durable_signal_waiters": ["token"],
    "durable_buffered_signals": ["id"],
}
INDEXES = {
    ("durable_workflow_runs", ("namespace", "status", "created_at")),
    ("durable_workflow_runs", ("namespace", "status", "wake_at")),
    ("durable_workflow_runs", ("workflow", "status")),
    ("durable_run_attributes", ("key", "str_value")),
    ("durable_run_attributes", ("key", "num_value")),
    ("durable_signal_waiters", ("run_id",)),
    ("durable_buffered_signals", ("token", "id")),
}
PAYLOAD_COLUMNS = {
    "durable_workflow_runs": ["input", "output", "error", "attributes"],
    "durable_step_checkpoints": ["input", "output", "error"],
    "durable_buffered_signals": ["payload"],
}
JSON_COLUMNS = {
    **PAYLOAD_COLUMNS,
    "durable_workflow_runs": [*PAYLOAD_COLUMNS["durable_workflow_runs"], "tags"],
}
TIME_COLUMNS = {
    "durable_workflow_runs": ["wake_at", "locked_until", "created_at", "updated_at"],
    "durable_step_checkpoints": ["wake_at", "started_at", "finished_at"],
    "durable_buffered_signals": ["created_at"],
}


def ddl(dialect: Dialect) -> dict[str, str]:
    return {table.name: str(CreateTable(table).compile(dialect=dialect)) for table in TABLES}


def column_line(create: str, column: str) -> str:
    for line in create.splitlines():
        words = line.strip().split()
        if words and words[0].strip('`"') == column:
            return line.strip().rstrip(",")
    raise AssertionError(f"no column {column} in {create}")


def test_tables_and_columns_have_the_contract_names() -> None:
    assert {t.name: [c.name for c in t.columns] for t in metadata.sorted_tables} == CONTRACT
    assert {t.name: [c.name for c in t.primary_key] for t in TABLES} == KEYS
    assert {
        (t.name, tuple(c.name for c in i.columns)) for t in TABLES for i in t.indexes
    } == INDEXES


def test_postgres_ddl_uses_timestamptz_json_payloads_jsonb_tags_and_c_collated_keys() -> None:
    tables = ddl(postgresql.dialect())  # type: ignore[no-untyped-call]
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            assert "TIMESTAMP WITH TIME ZONE" in column_line(tables[table], column)
    for table, columns in PAYLOAD_COLUMNS.items():
        for column in columns:
            assert column_line(tables[table], column).split()[1] == "JSON"
    assert column_line(tables["durable_workflow_runs"], "tags").split()[1] == "JSONB"
    assert (
        column_line(tables["durable_workflow_runs"], "id") == 'id VARCHAR(191) COLLATE "C" NOT NULL'
    )
    assert column_line(tables["durable_signal_waiters"], "token").startswith(
        'token VARCHAR(191) COLLATE "C"'
    )
    assert "BIGSERIAL" in column_line(tables["durable_buffered_signals"], "id")
    assert "DOUBLE PRECISION" in column_line(tables["durable_run_attributes"], "num_value")


@pytest.mark.parametrize(
    ("mariadb", "collation"), [(True, "utf8mb4_nopad_bin"), (False, "utf8mb4_bin")]
)
def test_mysql_ddl_uses_datetime6_longtext_and_binary_keys(mariadb: bool, collation: str) -> None:
    dialect = mysql.dialect()
    dialect.is_mariadb = mariadb
    tables = ddl(dialect)
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            assert column_line(tables[table], column).split()[1] == "DATETIME(6)"
    for table, columns in JSON_COLUMNS.items():
        for column in columns:
            assert column_line(tables[table], column).split()[1] == "LONGTEXT"
    assert column_line(tables["durable_workflow_runs"], "id") == (
        f"id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
    )
    assert "BIGINT NOT NULL AUTO_INCREMENT" in column_line(tables["durable_buffered_signals"], "id")
    assert all("ENGINE=InnoDB CHARSET=utf8mb4" in create for create in tables.values())
    index = next(i for i in TABLES[2].indexes if i.name == "durable_run_attributes_key_str_idx")
    assert "str_value(191)" in str(CreateIndex(index).compile(dialect=dialect))


def test_sqlite_ddl_uses_fixed_width_text_times_and_autoincrement_ids() -> None:
    tables = ddl(sqlite.dialect())
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            assert column_line(tables[table], column).split()[1] == "VARCHAR(26)"
    for table, columns in JSON_COLUMNS.items():
        for column in columns:
            assert column_line(tables[table], column).split()[1] == "TEXT"
    assert "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in tables["durable_buffered_signals"]


async def test_created_columns_have_the_native_types(url: str, db: str) -> None:
    engine = create_async_engine(url)
    try:
        await ensure_schema(engine)
        async with engine.connect() as conn:
            found = await conn.run_sync(
                lambda sync: {
                    column["name"]: column["type"]
                    for column in inspect(sync).get_columns("durable_workflow_runs")
                }
            )
    finally:
        await engine.dispose()
    created, payload = found["created_at"], found["input"]
    if db == "postgres":
        assert isinstance(created, postgresql.TIMESTAMP)
        assert created.timezone
        assert type(payload) is postgresql.JSON  # keeps the text as written; JSONB would not
        assert type(found["tags"]) is postgresql.JSONB
    elif db == "mariadb":
        assert isinstance(created, mysql.DATETIME)
        assert created.fsp == 6
        assert isinstance(payload, mysql.LONGTEXT)
    else:
        assert str(payload) == "TEXT"
    assert getattr(found["id"], "length", None) == 191


def _autogenerate_diff(connection: Connection, target: list[MetaData]) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, target))  # type: ignore[arg-type]


async def test_metadata_merged_into_an_app_metadata_is_seen_by_autogenerate(url: str) -> None:
    app = MetaData()
    Table("app_orders", app, Column("id", Integer, primary_key=True), Column("note", String(50)))
    merged = MetaData()
    for table in [*app.sorted_tables, *metadata.sorted_tables]:
        table.to_metadata(merged)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            missing = await conn.run_sync(_autogenerate_diff, [merged])
            created = {
                op[1].name for op in missing if isinstance(op, tuple) and op[0] == "add_table"
            }
            assert created == {"app_orders", *CONTRACT}
            await conn.run_sync(app.create_all)
            await ensure_schema(conn)
            assert await conn.run_sync(_autogenerate_diff, [app, metadata]) == []
            assert await conn.run_sync(_autogenerate_diff, [merged]) == []
    finally:
        await engine.dispose()
