from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.stores.sqlalchemy.testing import DATABASES, provision

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from durable.stores.sqlalchemy.testing import Database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # SQLAlchemy's asyncio extension runs on asyncio only


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest) -> Database:
    database: Database = request.param
    return database


@pytest.fixture
async def url(db: Database, tmp_path: Path) -> AsyncIterator[str]:
    async with provision(db, tmp_path) as database_url:
        yield database_url


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlAlchemyStateStore]:
    async with SqlAlchemyStateStore.from_url(url) as durable_store:
        await durable_store.ensure_schema()
        yield durable_store
