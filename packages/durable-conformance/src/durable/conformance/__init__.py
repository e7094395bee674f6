"""durable-conformance: the suites every durable store and transport must pass.

Subclass a suite, override its ``durable_store`` fixture (``durable_transport`` for
``TransportSuite``) and run pytest; see ``docs/conformance.md``. ``StateStoreAdminSuite`` is
optional: it tests the ``StateStoreAdmin`` operations, for a store that offers them.
"""

import pytest

# Failing suite asserts should explain themselves; pytest rewrites asserts only in test
# modules and in modules registered before they are imported.
pytest.register_assert_rewrite(
    "durable.conformance._base",
    "durable.conformance._wire",
    "durable.conformance.engine",
    "durable.conformance.engine.bad_input",
    "durable.conformance.engine.faults",
    "durable.conformance.engine.observing",
    "durable.conformance.engine.records",
    "durable.conformance.engine.remote",
    "durable.conformance.engine.replay",
    "durable.conformance.engine.retries_timeouts",
    "durable.conformance.engine.shutdown_cancel",
    "durable.conformance.engine.sleep_signals",
    "durable.conformance.engine.values",
    "durable.conformance.engine.versions_namespaces",
    "durable.conformance.state_store",
    "durable.conformance.state_store._helpers",
    "durable.conformance.state_store.admin",
    "durable.conformance.state_store.checkpoints",
    "durable.conformance.state_store.dispatch",
    "durable.conformance.state_store.leases",
    "durable.conformance.state_store.listing",
    "durable.conformance.state_store.payloads",
    "durable.conformance.state_store.runs",
    "durable.conformance.state_store.schema",
    "durable.conformance.state_store.signals",
    "durable.conformance.transport",
)

from durable.conformance._options import SuiteOptions, needs  # noqa: E402
from durable.conformance.engine import EngineSuite  # noqa: E402
from durable.conformance.state_store import StateStoreAdminSuite, StateStoreSuite  # noqa: E402
from durable.conformance.transport import TransportSuite  # noqa: E402

__all__ = [
    "EngineSuite",
    "StateStoreAdminSuite",
    "StateStoreSuite",
    "SuiteOptions",
    "TransportSuite",
    "needs",
]
