"""Crash recovery for real: a worker process is killed with SIGKILL mid-run.

A second worker process then finishes the run, and every step whose checkpoint was committed
before the kill has run exactly once (counted in a side-effect table of the test's own). The
rows of transactional steps exist exactly once whatever the instant of the kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import Engine, Run
from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.stores.sqlalchemy.testing import provision

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("crash_worker.py")
DATABASES = ["sqlite", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def worker(url: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A worker process; the caller kills it, or it is terminated on exit."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - the process outlives any single await
        [sys.executable, str(WORKER), url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == b"ready", f"worker did not start: {line!r}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        await anyio.to_thread.run_sync(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    with anyio.move_on_after(timeout):
        while not await check():  # noqa: ASYNC110 - the condition lives in another process
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def database(db: str, tmp_path: Path) -> AsyncIterator[tuple[str, SqlAlchemyStateStore]]:
    async with provision(db, tmp_path) as url:
        store = SqlAlchemyStateStore.from_url(url)
        await store.ensure_schema()
        effects = create_async_engine(url)
        async with effects.begin() as conn:
            await conn.execute(
                text("CREATE TABLE crash_side_effects (run_id VARCHAR(191), step VARCHAR(64))")
            )
        await effects.dispose()
        try:
            yield url, store
        finally:
            await store.aclose()


async def side_effects(url: str, run_id: str) -> Counter[str]:
    effects = create_async_engine(url)
    try:
        async with effects.connect() as conn:
            rows = await conn.execute(
                text("SELECT step FROM crash_side_effects WHERE run_id = :r"), {"r": run_id}
            )
            return Counter(row[0] for row in rows)
    finally:
        await effects.dispose()


async def start(store: SqlAlchemyStateStore, workflow: str, arg: Any = None) -> str:
    from crash_worker import WORKFLOWS

    async with Engine(store, workflows=WORKFLOWS, drive=False, auto_schema=False) as client:
        return (await client.start(workflow, arg)).run_id


async def finish(store: SqlAlchemyStateStore, run_id: str) -> Run:
    from crash_worker import WORKFLOWS

    async with Engine(store, workflows=WORKFLOWS, drive=False, auto_schema=False) as client:
        return await client.wait_for_run(run_id, timeout=60, until="terminal")


@pytest.fixture(autouse=True)
def _worker_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(WORKER.parent))


@pytest.mark.parametrize("db", DATABASES)
async def test_kill9_between_steps_reruns_no_completed_step(db: str, tmp_path: Path) -> None:
    async with database(db, tmp_path) as (url, store):
        run_id = await start(store, "crash-steps", 40)
        async with worker(url) as first:

            async def some_done() -> bool:
                return len(await store.list_checkpoints(run_id)) >= 8

            await wait_for(some_done, "eight checkpoints")
            kill9(first)
        done_at_kill = {cp.seq for cp in await store.list_checkpoints(run_id)}
        assert len(done_at_kill) < 40, "the run finished before the kill"
        async with worker(url):
            run = await finish(store, run_id)
        counts = await side_effects(url, run_id)
    assert (run.status, run.output) == ("completed", sum(range(40)))
    assert all(counts[f"work-{seq}"] == 1 for seq in done_at_kill), counts
    assert all(counts[f"work-{i}"] in (1, 2) for i in range(40)), counts
    assert sum(counts.values()) <= 41


@pytest.mark.parametrize("db", DATABASES)
async def test_kill9_while_sleeping_wakes_on_time_in_a_new_process(db: str, tmp_path: Path) -> None:
    async with database(db, tmp_path) as (url, store):
        run_id = await start(store, "crash-sleep", 2.0)
        async with worker(url) as first:

            async def sleeping() -> bool:
                run = await store.get_run(run_id)
                return run is not None and run.status == "suspended"

            await wait_for(sleeping, "the run to suspend")
            kill9(first)
        async with worker(url):
            run = await finish(store, run_id)
        counts = await side_effects(url, run_id)
    assert (run.status, run.output) == ("completed", 1)
    assert counts == Counter({"work-0": 1, "work-1": 1})


@pytest.mark.parametrize("db", DATABASES)
async def test_kill9_while_a_remote_step_is_pending_redelivers_it(db: str, tmp_path: Path) -> None:
    async with database(db, tmp_path) as (url, store):
        run_id = await start(store, "crash-remote")
        async with worker(url) as first:

            async def dispatched() -> bool:
                return "remote" in await side_effects(url, run_id)

            await wait_for(dispatched, "the remote step to start")
            kill9(first)
        pending = await store.get_checkpoint(run_id, 1)
        assert pending is not None
        assert (pending.kind, pending.status) == ("remote", "pending")
        async with worker(url):
            run = await finish(store, run_id)
        counts = await side_effects(url, run_id)
    assert (run.status, run.output) == ("completed", 11)
    assert counts["work-0"] == 1
    assert counts["work-1"] == 1
    assert counts["remote"] == 2  # killed mid-handler, then delivered again after its timeout


async def open_transaction(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the worker says a transactional step's transaction is open (rows written)."""
    assert proc.stdout is not None
    with anyio.fail_after(30):
        while True:
            line = await anyio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
            assert line, "the worker exited"
            if line.startswith(b"open txn-"):
                return


@pytest.mark.parametrize("db", DATABASES)
async def test_kill9_at_any_instant_leaves_each_transactional_steps_rows_exactly_once(
    db: str, tmp_path: Path
) -> None:
    steps, kills = 80, 10  # half the kills land while a transaction is open, half anywhere
    async with database(db, tmp_path) as (url, store):
        run_id = await start(store, "crash-txn", steps)
        for kill in range(kills):
            async with worker(url) as proc:
                if kill % 2 == 0:
                    await open_transaction(proc)
                else:
                    before = len(await store.list_checkpoints(run_id))

                    async def progressed(before: int = before) -> bool:
                        return len(await store.list_checkpoints(run_id)) >= before + 2

                    await wait_for(progressed, f"two more steps before kill {kill + 1}")
                    # Not a wait for anything: it moves the kill to a random instant of a
                    # step (inside its transaction, at its commit, or between two steps).
                    await anyio.sleep(random.uniform(0, 0.05))
                kill9(proc)
            committed = {
                f"txn-{cp.seq}"
                for cp in await store.list_checkpoints(run_id)
                if cp.status == "completed"
            }
            counts = await side_effects(url, run_id)
            assert len(committed) < steps, f"the run finished before kill {kill + 1}"
            assert counts == Counter(committed), f"after kill {kill + 1}: {counts}"
        async with worker(url):
            run = await finish(store, run_id)
        counts = await side_effects(url, run_id)
    assert (run.status, run.output) == ("completed", sum(range(steps)))
    assert counts == Counter(f"txn-{i}" for i in range(steps))
