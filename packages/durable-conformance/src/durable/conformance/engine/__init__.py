"""``EngineSuite``: whole workflows run on the store under test.

One mixin per area, each in its own module; ``EngineSuite`` combines them. A third party
subclasses ``EngineSuite`` (usually together with ``StateStoreSuite``) and overrides the
``durable_store`` fixture; see ``docs/conformance.md``.
"""

from __future__ import annotations

from durable.conformance.engine.bad_input import BadInputTests
from durable.conformance.engine.faults import FaultTests
from durable.conformance.engine.observing import ObservingTests
from durable.conformance.engine.records import RecordTests
from durable.conformance.engine.remote import RemoteTests
from durable.conformance.engine.replay import ReplayTests
from durable.conformance.engine.retries_timeouts import RetryTimeoutTests
from durable.conformance.engine.shutdown_cancel import ShutdownCancelTests
from durable.conformance.engine.sleep_signals import SleepSignalTests
from durable.conformance.engine.values import ValueTests
from durable.conformance.engine.versions_namespaces import VersionNamespaceTests


class EngineSuite(
    ReplayTests,
    RetryTimeoutTests,
    ValueTests,
    SleepSignalTests,
    RemoteTests,
    VersionNamespaceTests,
    ShutdownCancelTests,
    FaultTests,
    RecordTests,
    BadInputTests,
    ObservingTests,
):
    """The engine's contract, exercised end to end on the store under test."""


__all__ = ["EngineSuite"]
