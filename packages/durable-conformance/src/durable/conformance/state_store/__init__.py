"""``StateStoreSuite``: the executable definition of the :class:`~durable.core.StateStore` protocol.

Every test calls the store only through that protocol, what the engine calls; the optional
:class:`~durable.core.StateStoreAdmin` operations have their own suite, ``StateStoreAdminSuite``
(module ``admin``). The suite covers each method's semantics, races between many concurrent
callers (anyio task groups, repeated with fresh rows), payload and datetime round trips, and
schema idempotency. Subclass it and override ``durable_store``::

    class TestAcmeStore(StateStoreSuite):
        @pytest.fixture
        async def durable_store(self, tmp_path):
            store = AcmeStateStore(tmp_path / "state.db")
            await store.ensure_schema()
            yield store
            await store.aclose()

A store that also implements ``StateStoreAdmin`` subclasses ``StateStoreAdminSuite`` too
(``class TestAcmeStore(StateStoreSuite, StateStoreAdminSuite)``).

The tests live in one module per area of the protocol, one suite class each (``runs``,
``listing``, ``checkpoints``, ``dispatch``, ``leases``, ``signals``, ``payloads``, ``schema``);
``StateStoreSuite`` is all of them together, and the conformance claim is made against it.
"""

from durable.conformance.state_store.admin import StateStoreAdminSuite
from durable.conformance.state_store.checkpoints import CheckpointsSuite
from durable.conformance.state_store.dispatch import DispatchSuite
from durable.conformance.state_store.leases import LeasesSuite
from durable.conformance.state_store.listing import ListingSuite
from durable.conformance.state_store.payloads import PayloadsSuite
from durable.conformance.state_store.runs import RunsSuite
from durable.conformance.state_store.schema import SchemaSuite
from durable.conformance.state_store.signals import SignalsSuite

__all__ = [
    "CheckpointsSuite",
    "DispatchSuite",
    "LeasesSuite",
    "ListingSuite",
    "PayloadsSuite",
    "RunsSuite",
    "SchemaSuite",
    "SignalsSuite",
    "StateStoreAdminSuite",
    "StateStoreSuite",
]


class StateStoreSuite(
    SchemaSuite,
    RunsSuite,
    ListingSuite,
    CheckpointsSuite,
    DispatchSuite,
    LeasesSuite,
    SignalsSuite,
    PayloadsSuite,
):
    """Conformance tests for a :class:`~durable.core.StateStore`: every area suite together.

    Subclass it (its name keeps pytest from collecting it on its own), override the
    ``durable_store`` fixture to yield a fresh, empty store whose schema exists, and run pytest.
    See :class:`~durable.conformance.SuiteOptions` and ``expected_failures`` for what a store
    may declare.
    """
