"""The conformance suites against ``InMemoryStateStore``, wired as a third party wires its store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from durable.conformance import EngineSuite, StateStoreAdminSuite, StateStoreSuite, SuiteOptions
from durable.core import InMemoryStateStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class TestInMemoryStateStore(StateStoreSuite, StateStoreAdminSuite, EngineSuite):
    options = SuiteOptions()

    @pytest.fixture
    async def durable_store(self) -> AsyncIterator[InMemoryStateStore]:
        store = InMemoryStateStore()
        await store.ensure_schema()
        yield store
        await store.aclose()
