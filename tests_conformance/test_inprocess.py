"""The transport suite against ``InProcessTransport``, wired as a third party wires theirs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from durable.conformance import SuiteOptions, TransportSuite
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class TestInProcessTransport(TransportSuite):
    options = SuiteOptions()

    @pytest.fixture
    async def durable_transport(self) -> AsyncIterator[Callable[[], InProcessTransport]]:
        transport = InProcessTransport()  # one process, one medium: every caller shares it
        yield lambda: transport
        await transport.aclose()
