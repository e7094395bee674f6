"""The conformance suites against ``SqlAlchemyStateStore`` on the ``--durable-db`` database.

Wired exactly as a third party wires its own store. One database is provisioned per session
(PostgreSQL/MariaDB: ``durable_test_<random>``, dropped at the end; SQLite: a file); every test
gets a new store on it with the durable tables emptied first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.from_thread
import pytest
from sqlalchemy import delete, make_url

from durable.conformance import EngineSuite, StateStoreAdminSuite, StateStoreSuite, SuiteOptions
from durable.stores.sqlalchemy import SqlAlchemyStateStore, metadata
from durable.stores.sqlalchemy.testing import Database, provision

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

SQL_DATABASES: dict[str, Database] = {
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgres-psycopg": "postgres",
    "mariadb": "mariadb",
}
DRIVERS = {"postgres-psycopg": "postgresql+psycopg"}


@pytest.fixture(scope="session")
def sqlalchemy_url(durable_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if durable_db not in SQL_DATABASES:
        pytest.skip(f"--durable-db={durable_db}: the SQLAlchemy store runs on {SQL_DATABASES}")
    database = SQL_DATABASES[durable_db]
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            provision(database, tmp_path_factory.mktemp(database))
        ) as url,
    ):
        if durable_db in DRIVERS:
            url = make_url(url).set(drivername=DRIVERS[durable_db]).render_as_string(False)
        portal.call(_create_schema, url)
        yield url


async def _create_schema(url: str) -> None:
    async with SqlAlchemyStateStore.from_url(url) as store:
        await store.ensure_schema()


class TestSqlAlchemyStateStore(StateStoreSuite, StateStoreAdminSuite, EngineSuite):
    options = SuiteOptions()

    @pytest.fixture
    async def durable_store(self, sqlalchemy_url: str) -> AsyncIterator[SqlAlchemyStateStore]:
        store = SqlAlchemyStateStore.from_url(sqlalchemy_url)
        async with store.engine.begin() as conn:  # the schema was made once per session
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
        yield store
        await store.aclose()
