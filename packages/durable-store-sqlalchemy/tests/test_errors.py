from __future__ import annotations

import dataclasses
import math
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mssql, sqlite

from durable.core import (
    CheckpointRecord,
    PayloadTooLargeError,
    RunRecord,
    SerializationError,
    StoreError,
    StoreUnavailableError,
)
from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.stores.sqlalchemy._errors import is_retryable, translate
from durable.stores.sqlalchemy._statements import Features

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeDriverError(Exception):
    def __init__(self, code: int | str, message: str = "boom") -> None:
        super().__init__(code, message)
        if isinstance(code, str):
            self.sqlstate = code


def wrapped(
    error_class: type[sa_exc.DBAPIError], code: int | str, message: str = "boom"
) -> sa_exc.DBAPIError:
    return error_class("SELECT 1", {}, FakeDriverError(code, message))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        "mysql+asyncmy://root@127.0.0.1:1/nowhere",
    ],
    ids=["postgres", "mariadb"],
)
async def test_unreachable_server_raises_store_unavailable(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url) as store:
        with pytest.raises(StoreUnavailableError, match=r"get_run\(run 'r1'\)") as caught:
            await store.get_run("r1")
    assert caught.value.__cause__ is not None


async def test_sqlite_file_that_cannot_be_opened_raises_store_unavailable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'state.db'}"
    async with SqlAlchemyStateStore.from_url(url) as store:
        with pytest.raises(StoreUnavailableError):
            await store.ensure_schema()
    # aiosqlite stops the worker thread of a failed connect without waiting for it; let it
    # finish while this test's event loop still runs.
    with anyio.fail_after(5):
        while any("_connection_worker_thread" in t.name for t in threading.enumerate()):  # noqa: ASYNC110 - set by another thread
            await anyio.sleep(0.01)


async def test_non_json_payload_raises_serialization_error(store: SqlAlchemyStateStore) -> None:
    run = RunRecord("r1", "wf", "1", "pending", {"x": math.nan}, created_at=NOW, updated_at=NOW)
    with pytest.raises(SerializationError, match=r"create_run\(run 'r1'\)"):
        await store.create_run(run)
    assert await store.get_run("r1") is None
    cp = CheckpointRecord("r1", 0, "s", "local", "completed", "r1:0", NOW, output=math.inf)
    with pytest.raises(SerializationError, match=r"save_checkpoint\(run 'r1', seq 0\)"):
        await store.save_checkpoint(cp)


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="not 'mssql'"):
        Features.of(mssql.dialect())  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (wrapped(sa_exc.OperationalError, "40P01"), True),  # PostgreSQL deadlock
        (wrapped(sa_exc.OperationalError, "40001"), True),  # serialization failure
        (wrapped(sa_exc.OperationalError, 1213), True),  # InnoDB deadlock
        (wrapped(sa_exc.OperationalError, 1205), True),  # lock wait timeout
        (wrapped(sa_exc.IntegrityError, "23505"), False),
        (wrapped(sa_exc.OperationalError, 2013), False),  # lost connection: outcome unknown
    ],
)
def test_only_work_the_database_undid_is_retried(error: sa_exc.DBAPIError, expected: bool) -> None:
    assert is_retryable(error) is expected


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (wrapped(sa_exc.OperationalError, "08006"), StoreUnavailableError),
        (wrapped(sa_exc.OperationalError, "57P01"), StoreUnavailableError),
        (wrapped(sa_exc.OperationalError, 2006), StoreUnavailableError),
        (wrapped(sa_exc.OperationalError, 1040), StoreUnavailableError),
        (wrapped(sa_exc.OperationalError, 5, "database is locked"), StoreUnavailableError),
        (ConnectionRefusedError(111, "refused"), StoreUnavailableError),
        (wrapped(sa_exc.DataError, "22P05", "unsupported Unicode escape"), SerializationError),
        (wrapped(sa_exc.IntegrityError, "23502"), StoreError),
        (wrapped(sa_exc.OperationalError, 1153), PayloadTooLargeError),
        (wrapped(sa_exc.OperationalError, "54000"), PayloadTooLargeError),
        (wrapped(sa_exc.DataError, 18, "string or blob too big"), PayloadTooLargeError),
    ],
)
def test_driver_errors_become_core_errors(error: BaseException, kind: type[StoreError]) -> None:
    translated = translate(error, "get_run(run 'r1')")
    assert type(translated) is kind
    assert str(translated).startswith("get_run(run 'r1'): ")


PROTOCOL_ERROR = Exception("Packet sequence number wrong - got 2 expected 3")
OVER = ("x" * 2**20, "yz")  # over a max_allowed_packet of 1 MB


@pytest.mark.parametrize(
    ("orig", "values", "kind"),
    [
        (PROTOCOL_ERROR, OVER, PayloadTooLargeError),
        (
            FakeDriverError(2013, "Lost connection to MySQL server during query"),
            OVER,
            PayloadTooLargeError,
        ),
        (PROTOCOL_ERROR, ("x" * 1000,), StoreError),
        (FakeDriverError(1366, "Incorrect string value"), OVER, StoreError),  # the server read it
    ],
)
def test_a_statement_over_max_packet_cut_off_mid_send_is_a_payload_too_large_error(
    orig: Exception, values: tuple[str, ...], kind: type[StoreError]
) -> None:
    error = sa_exc.OperationalError("INSERT INTO t VALUES (%s, %s)", values, orig)
    translated = translate(error, "create_run(run 'big')", max_packet=2**20)
    assert type(translated) is kind
    if kind is PayloadTooLargeError:
        assert str(translated) == (
            "create_run(run 'big'): 1,048,578 bytes of values (the largest 1,048,576) exceed "
            "the server's max_allowed_packet of 1,048,576 bytes (1 MB); nothing was written"
        )


@pytest.mark.parametrize("db", ["postgres"])
async def test_nul_character_in_a_tag_raises_serialization_error(
    store: SqlAlchemyStateStore,
) -> None:
    run = RunRecord("r1", "wf", "1", "pending", None, NOW, NOW, tags=["nul \x00 here"])
    with pytest.raises(SerializationError, match=r"create_run\(run 'r1'\)"):
        await store.create_run(run)
    assert await store.get_run("r1") is None


async def max_allowed_packet(store: SqlAlchemyStateStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT @@max_allowed_packet")).scalar_one())


@pytest.mark.parametrize("db", ["mariadb"])
@pytest.mark.parametrize("megabytes", [17, 40])
async def test_a_write_over_max_allowed_packet_is_refused_and_the_next_call_works(
    store: SqlAlchemyStateStore, megabytes: int
) -> None:
    limit = await max_allowed_packet(store)
    assert limit < 17 * 2**20, f"needs max_allowed_packet under 17 MB; the server has {limit:,}"
    named = rf"max_allowed_packet of {limit:,} bytes \({limit / 2**20:g} MB\); nothing was written"
    big = "x" * (megabytes * 2**20)
    await store.create_run(RunRecord("r1", "wf", "1", "running", None, NOW, NOW))
    cp = CheckpointRecord("r1", 1, "s", "local", "completed", "r1:1", NOW)

    with pytest.raises(PayloadTooLargeError, match=rf"create_run\(run 'big'\): .*{named}"):
        await store.create_run(RunRecord("big", "wf", "1", "pending", big, NOW, NOW))
    assert await store.create_run(RunRecord("r2", "wf", "1", "pending", {"n": 2}, NOW, NOW))
    assert await store.get_run("big") is None

    with pytest.raises(
        PayloadTooLargeError, match=rf"save_checkpoint\(run 'r1', seq 1\): .*{named}"
    ):
        await store.save_checkpoint(dataclasses.replace(cp, output=big))
    assert await store.get_checkpoint("r1", 1) is None
    assert await store.save_checkpoint(dataclasses.replace(cp, output="small"))

    # With a run patch: one transaction on MySQL/MariaDB, whose ROLLBACK meets a closed connection.
    with pytest.raises(
        PayloadTooLargeError, match=rf"save_checkpoint\(run 'r1', seq 2\): .*{named}"
    ):
        await store.save_checkpoint(
            dataclasses.replace(cp, seq=2, step_id="r1:2", output=big), run_patch={"output": big}
        )
    assert await store.get_checkpoint("r1", 2) is None
    got = await store.get_run("r1")
    assert got is not None
    assert got.output is None
    assert await store.update_run("r1", output="small")


def test_sqlite_without_returning_is_refused() -> None:
    dialect = sqlite.dialect()
    dialect.update_returning = False  # what SQLite before 3.35 reports
    with pytest.raises(ValueError, match=r"SQLite 3\.35"):
        Features.of(dialect)
