from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from durable.conformance._machine_table import (
    OPERATIONS,
    Operation,
    disagreements,
    filter_disagreements,
)

if TYPE_CHECKING:
    from durable.stores.sqlalchemy import SqlAlchemyStateStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_the_statements_give_the_tables_outcome(
    store: SqlAlchemyStateStore, operation: Operation
) -> None:
    found = await disagreements(store, operation)
    assert not found, "\n".join(found)


async def test_the_claim_statement_applies_the_filters(store: SqlAlchemyStateStore) -> None:
    found = await filter_disagreements(store)
    assert not found, "\n".join(found)
