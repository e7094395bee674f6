"""Versions and namespaces: a worker executes only the runs it can, and leaves the rest waiting.

A run resumes on the version it started on. A worker that lacks a run's workflow version (a
rolling deploy: an old worker meets a run a new API process started) or serves another
namespace never claims, runs or fails it: the run stays pending for a worker that can, and the
worker logs a warning once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from durable.conformance._base import SuiteBase
from durable.conformance._harness import engine, new_id
from durable.core import WorkflowCtx, workflow
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    import pytest

    from durable.core import StateStore, WorkflowDef


def _versioned(name: str, version: str, label: str = "") -> WorkflowDef[str | None, str]:
    """A workflow that waits for the signal named by its input (if any), then says who ran it."""

    @workflow(name=name, version=version)
    async def versioned(ctx: WorkflowCtx, token: str | None) -> str:
        if token is not None:
            await ctx.wait_for_signal(token)
        return f"finished on v{version}{label}"

    return versioned


async def _worker_has_polled(
    store: StateStore, probe: WorkflowDef[str | None, str], namespace: str = "default"
) -> None:
    """Return once the driving engine of ``namespace`` has polled since this call began.

    A client with a transport of its own starts a run of ``probe`` (registered on that engine):
    no nudge reaches the engine, so only its poller finds the run, after every run created
    before it.
    """
    async with engine(store, [probe], drive=False, namespace=namespace) as quiet:
        run_id = (await quiet.start(probe, None)).run_id
        run = await quiet.wait_for_run(run_id, timeout=10, until="terminal")
    assert run.status == "completed", f"the probe run ended {run.status}: {run.error}"


class VersionNamespaceTests(SuiteBase):
    """Workflow versions and engine namespaces."""

    async def test_run_resumes_on_its_version_and_waits_when_it_is_gone(
        self, durable_store: StateStore
    ) -> None:
        name = f"versioned-{new_id()}"
        v1, v2 = _versioned(name, "1"), _versioned(name, "2")
        async with engine(durable_store, [v1]) as old:
            pinned = (await old.start(name, "tok-a")).run_id
            orphan = (await old.start(name, "tok-b")).run_id
            for run_id in (pinned, orphan):
                assert (await old.wait_for_run(run_id, timeout=10)).status == "suspended"
        async with engine(durable_store, [v1, v2]) as both:
            fresh = await both.start(name, "tok-c")
            await both.signal("tok-a")
            run = await both.wait_for_run(pinned, timeout=10, until="terminal")
            assert (run.status, run.output) == ("completed", "finished on v1")
            assert (await both.get_run(fresh.run_id)).version == "2"
        async with engine(durable_store, [v2]) as new:
            await new.signal("tok-b")
            await _worker_has_polled(durable_store, v2)
            orphaned = await new.get_run(orphan)
            assert orphaned.status == "pending", (
                f"a run of a version no worker has must wait, not end {orphaned.status}:"
                f" {orphaned.error}"
            )
        async with engine(durable_store, [v1]) as back:
            run = await back.wait_for_run(orphan, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "finished on v1")

    async def test_a_run_of_a_version_no_worker_has_waits_for_one(
        self, durable_store: StateStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="durable")
        name = f"deployed-{new_id()}"
        v1, v2 = _versioned(name, "1"), _versioned(name, "2")
        transport = InProcessTransport()
        async with engine(durable_store, [v1], transport=transport) as old:
            async with engine(durable_store, [v1, v2], drive=False, transport=transport) as api:
                newer = (await api.start(v2, None)).run_id  # nudges the old worker
            await _worker_has_polled(durable_store, v1)
            run = await old.get_run(newer)
            assert run.status == "pending", (
                f"a v2 run met by a v1-only worker must wait, not end {run.status}: {run.error}"
            )
            await _worker_has_polled(durable_store, v1)
        warnings = [
            record.getMessage()
            for record in caplog.records
            if record.name == "durable.engine"
            and record.levelno >= logging.WARNING
            and name in record.getMessage()
        ]
        assert len(warnings) == 1, f"expected one warning naming {name!r}, got {warnings}"
        assert "2" in warnings[0].replace(name, ""), f"the version is not named: {warnings[0]}"
        async with engine(durable_store, [v2]) as new:
            run = await new.wait_for_run(newer, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "finished on v2")

    async def test_a_signal_from_another_namespace_leaves_the_run_to_its_own(
        self, durable_store: StateStore
    ) -> None:
        name, token = f"spaced-{new_id()}", f"spaced:{new_id()}"
        in_a, in_b = _versioned(name, "1", " in a"), _versioned(name, "1", " in b")
        probe = _versioned(f"probe-{new_id()}", "1")
        async with engine(durable_store, [in_b], namespace="b") as b:
            run_id = (await b.start(in_b, token)).run_id
            assert (await b.wait_for_run(run_id, timeout=10)).status == "suspended"
        async with engine(durable_store, [in_a, probe], namespace="a") as a:
            await a.signal(token, "go")
            await _worker_has_polled(durable_store, probe, namespace="a")
            run = await a.get_run(run_id)
            assert run.status == "pending", (
                f"namespace a's engine touched a run of namespace b: it is {run.status}"
                f" ({run.output or run.error})"
            )
        async with engine(durable_store, [in_b], namespace="b") as b:
            run = await b.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "finished on v1 in b")
