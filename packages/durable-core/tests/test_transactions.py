from __future__ import annotations

from typing import Any

import pytest

from durable.conformance._harness import StoreProxy, engine
from durable.core import (
    InMemoryStateStore,
    Run,
    StepFailedError,
    TransactionalStore,
    WorkflowCtx,
    WorkflowDef,
    step,
    workflow,
)

pytestmark = pytest.mark.anyio


class _PlainStore(StoreProxy):
    """A store that runs no transactional steps."""

    def __getattr__(self, name: str) -> Any:
        if name == "run_in_transaction":
            raise AttributeError(name)
        return super().__getattr__(name)


async def _finish(
    store: InMemoryStateStore | StoreProxy, wf: WorkflowDef[Any, Any], arg: object = None
) -> Run:
    async with engine(store, [wf]) as worker:
        run_id = (await worker.start(wf, arg)).run_id
        return await worker.wait_for_run(run_id, timeout=5, until="terminal")


def test_the_memory_store_runs_transactional_steps(store: InMemoryStateStore) -> None:
    assert isinstance(store, TransactionalStore)
    assert not isinstance(_PlainStore(store), TransactionalStore)


async def test_a_transactional_step_runs_once_and_replays_its_result(
    store: InMemoryStateStore,
) -> None:
    given: list[object] = []

    async def book(transaction: object, seat: int) -> str:
        given.append(transaction)
        return f"seat-{seat}"

    @workflow(name="txn-book")
    async def booking(ctx: WorkflowCtx, seat: int) -> str:
        booked = await ctx.transaction("book", book, seat)
        await ctx.sleep(0.01)  # a new turn replays the step
        return booked

    run = await _finish(store, booking, 7)
    assert (run.status, run.output) == ("completed", "seat-7")
    assert given == [None]
    (cp, _) = await store.list_checkpoints(run.id)
    assert (cp.kind, cp.name, cp.status, cp.attempts) == ("local", "book", "completed", 1)


async def test_a_transactional_step_is_retried_as_a_step_is(store: InMemoryStateStore) -> None:
    calls: list[int] = []

    @step(retries=3, backoff=0.01)
    async def flaky(transaction: object, n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)} fails")
        return n * 2

    @workflow(name="txn-flaky")
    async def flaky_wf(ctx: WorkflowCtx) -> int:
        return await ctx.transaction(flaky, 21)

    run = await _finish(store, flaky_wf)
    assert (run.status, run.output, calls) == ("completed", 42, [21, 21, 21])
    (cp,) = await store.list_checkpoints(run.id)
    assert (cp.status, cp.attempts) == ("completed", 3)


async def test_a_store_without_transactions_fails_the_call_naming_the_store(
    store: InMemoryStateStore,
) -> None:
    async def write(transaction: object) -> int:
        return 1

    @workflow(name="txn-plain")
    async def plain(ctx: WorkflowCtx) -> int:
        return await ctx.transaction("write", write)

    run = await _finish(_PlainStore(store), plain)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "TypeError"
    assert "ctx.transaction('write')" in run.error["message"]
    assert "_PlainStore does not implement TransactionalStore" in run.error["message"]


async def test_a_sync_transactional_step_is_refused(store: InMemoryStateStore) -> None:
    def write(transaction: object) -> int:
        return 1

    untyped: Any = write  # the annotations refuse it; the runtime check is under test

    @workflow(name="txn-sync")
    async def sync_wf(ctx: WorkflowCtx) -> int:
        return await ctx.transaction("write", untyped)

    run = await _finish(store, sync_wf)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "TypeError"
    assert "must be async" in run.error["message"]


async def test_a_transactional_step_that_fails_for_good_raises_step_failed(
    store: InMemoryStateStore,
) -> None:
    async def broken(transaction: object) -> int:
        raise ValueError("no seats left")

    @workflow(name="txn-broken")
    async def broken_wf(ctx: WorkflowCtx) -> str:
        try:
            await ctx.transaction("broken", broken)
        except StepFailedError as exc:
            return str(exc)
        return "ran"

    run = await _finish(store, broken_wf)
    assert run.status == "completed"
    assert "no seats left" in str(run.output)
    (cp,) = await store.list_checkpoints(run.id)
    assert cp.status == "failed"
