"""Observing runs: waiting on many runs costs the store almost nothing, and failures are logged.

A ``wait_for_run`` caller costs nothing while its run does not change: the driving engine wakes
the waiters of a run from its own transitions. A failed run is logged at ``WARNING`` or above
on a ``durable.*`` logger, with the run's id, workflow, version and worker as structured
fields (``extra``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from durable.conformance._base import SuiteBase
from durable.conformance._harness import FaultyStore, engine, new_id
from durable.core import WorkflowCtx, workflow

if TYPE_CHECKING:
    import pytest

    from durable.core import StateStore

WAITED_RUNS = 300
GET_RUN_BUDGET = 4
"""``get_run`` calls per run, in total: the engine's own turns read each run twice here."""


class ObservingTests(SuiteBase):
    """Waiting for runs and the logs of a worker."""

    async def test_many_waiters_cost_the_store_almost_nothing(
        self, durable_store: StateStore
    ) -> None:
        reads = FaultyStore(durable_store, methods={"get_run"})  # counts, fails nothing

        @workflow(name=f"napper-{new_id()}")
        async def napper(ctx: WorkflowCtx) -> str:
            await ctx.sleep(0.2)
            return "rested"

        statuses: dict[str, str] = {}
        async with engine(reads, [napper]) as e:
            ids = [(await e.start(napper)).run_id for _ in range(WAITED_RUNS)]

            async def wait(run_id: str) -> None:
                statuses[run_id] = (await e.wait_for_run(run_id, 60, until="terminal")).status

            async with anyio.create_task_group() as tg:
                for run_id in ids:
                    tg.start_soon(wait, run_id)
        assert sorted(statuses) == sorted(ids)
        assert set(statuses.values()) == {"completed"}
        gets = len(reads.calls)
        assert gets < GET_RUN_BUDGET * WAITED_RUNS, (
            f"{WAITED_RUNS} waited runs cost {gets} get_run calls"
            f" ({gets / WAITED_RUNS:.1f} a run; the budget is {GET_RUN_BUDGET})"
        )

    async def test_a_failed_run_is_logged_with_its_context(
        self, durable_store: StateStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="durable")
        name = f"broken-{new_id()}"

        @workflow(name=name, version="7")
        async def broken(ctx: WorkflowCtx) -> str:
            raise ValueError("broken on purpose")

        async with engine(durable_store, [broken]) as e:
            run = await e.wait_for_run((await e.start(broken)).run_id, 10, until="terminal")
            worker = e.worker_id
        assert run.status == "failed"
        logged = [
            record
            for record in caplog.records
            if record.name.partition(".")[0] == "durable"
            and record.levelno >= logging.WARNING
            and getattr(record, "run_id", None) == run.id
        ]
        assert len(logged) == 1, (
            f"expected one warning carrying run_id={run.id!r} (extra), got"
            f" {[r.getMessage() for r in logged]}"
        )
        fields = {key: getattr(logged[0], key, None) for key in ("workflow", "version", "worker")}
        assert fields == {"workflow": name, "version": "7", "worker": worker}
