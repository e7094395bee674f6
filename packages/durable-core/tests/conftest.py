from __future__ import annotations

import pytest

from durable.core import InMemoryStateStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()
