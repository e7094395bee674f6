"""The schema: ``ensure_schema`` is idempotent and keeps existing data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable.conformance._base import SuiteBase
from durable.conformance.state_store._helpers import _assert_same_run, _create, _run

if TYPE_CHECKING:
    from durable.core import StateStore


class SchemaSuite(SuiteBase):
    """``ensure_schema``: running it again keeps what is stored."""

    async def test_ensure_schema_twice_keeps_existing_data(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run(payload={"kept": True}))
        await durable_store.ensure_schema()
        await durable_store.ensure_schema()
        _assert_same_run(await durable_store.get_run(run.id), run)
        await _create(durable_store, _run())
