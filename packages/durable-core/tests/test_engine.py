from __future__ import annotations

import gc
import types
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import pytest
from pydantic import BaseModel

from durable.conformance._harness import (
    CrashingStore,
    SimulatedCrash,
    crashing,
    engine,
    wait_until,
)
from durable.core import (
    CheckpointRecord,
    Engine,
    InMemoryStateStore,
    InputValidationError,
    RunNotFound,
    RunRecord,
    StateStore,
    StateStoreAdmin,
    StoreUnavailableError,
    WorkflowCtx,
    WorkflowNotRegistered,
    step,
    workflow,
)
from durable.core._turn import Turn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence

    from typing_extensions import Unpack

    from durable.core import CheckpointStatus, RunPatch, RunStatus

pytestmark = pytest.mark.anyio


def _is_store(store: InMemoryStateStore) -> StateStore:
    return store


def _is_admin(store: InMemoryStateStore) -> StateStoreAdmin:
    return store


class Order(BaseModel):
    id: str
    total: int


@dataclass
class Line:
    sku: str
    qty: int


@step
async def price(line: Line) -> Order:
    return Order(id=line.sku, total=line.qty * 10)


@workflow(name="typed")
async def typed(ctx: WorkflowCtx, order: Order) -> list[Order]:
    first = await ctx.step(price, Line(sku=order.id, qty=1))
    await ctx.sleep(0.01)
    again = await ctx.step(price, Line(sku=order.id, qty=2))
    return [first, again]


async def test_start_validates_input_and_creates_nothing_when_invalid(
    store: InMemoryStateStore,
) -> None:
    async with engine(store, [typed]) as e:
        with pytest.raises(InputValidationError, match="workflow 'typed' input"):
            await e.start("typed", {"id": "x", "total": "lots"})
        assert (await e.list_runs()).runs == []


async def test_unknown_workflow_is_rejected_at_start(store: InMemoryStateStore) -> None:
    async with engine(store, [typed]) as e:
        with pytest.raises(WorkflowNotRegistered, match=r"'nope'.*registered: typed"):
            await e.start("nope", {})
        with pytest.raises(WorkflowNotRegistered, match="version '9'"):
            await e.start("typed", {"id": "a", "total": 1}, version="9")


async def test_start_with_a_run_id_is_idempotent(store: InMemoryStateStore) -> None:
    async with engine(store, [typed], drive=False) as e:
        first = await e.start("typed", Order(id="a", total=1), run_id="r-1")
        second = await e.start("typed", Order(id="b", total=2), run_id="r-1")
        assert (first.created, second.created) == (True, False)
        assert (await e.get_run("r-1")).input == {"id": "a", "total": 1}


async def test_replay_hands_back_models_not_dicts(store: InMemoryStateStore) -> None:
    async with engine(store, [typed]) as e:
        handle = await e.start(typed, Order(id="a", total=1))
        run = await e.wait_for_run(handle.run_id, timeout=5, until="terminal")
    assert run.output == [Order(id="a", total=10), Order(id="a", total=20)]


async def test_unserializable_step_result_fails_the_step_naming_it(
    store: InMemoryStateStore,
) -> None:
    @step(name="make-socket")
    async def make_socket() -> object:
        return anyio.Event()

    @workflow(name="bad-result")
    async def bad(ctx: WorkflowCtx) -> None:
        await ctx.step(make_socket)

    async with engine(store, [bad]) as e:
        run = await e.wait_for_run((await e.start(bad)).run_id, timeout=5, until="terminal")
    assert run.status == "failed"
    assert run.error is not None
    assert "make-socket" in run.error["message"]
    assert "Event" in run.error["message"]


async def test_parallel_steps_take_sequence_numbers_in_call_order(
    store: InMemoryStateStore,
) -> None:
    @step
    async def slow(name: str, delay: float) -> str:
        await anyio.sleep(delay)
        return name

    @workflow(name="fan-out")
    async def fan_out(ctx: WorkflowCtx) -> list[str]:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = await ctx.step(slow, f"s{i}", 0.03 * (4 - i))

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
        return [results[i] for i in range(4)]

    async with engine(store, [fan_out]) as e:
        run_id = (await e.start(fan_out)).run_id
        run = await e.wait_for_run(run_id, timeout=5, until="terminal")
    assert run.output == ["s0", "s1", "s2", "s3"]
    checkpoints = await store.list_checkpoints(run_id)
    assert [(c.seq, c.output) for c in checkpoints] == [(i, f"s{i}") for i in range(4)]


async def test_now_uuid_and_random_are_recorded_once(store: InMemoryStateStore) -> None:
    @workflow(name="entropy")
    async def entropy(ctx: WorkflowCtx, token: str) -> list[str]:
        values = [await ctx.now(), await ctx.uuid4(), await ctx.random()]
        await ctx.wait_for_signal(token)
        again = [await ctx.now(), await ctx.uuid4(), await ctx.random()]
        return [str(v) for v in values + again] + [str(type(v).__name__) for v in values]

    async with engine(store, [entropy]) as e:
        run_id = (await e.start(entropy, "go")).run_id
        await e.wait_for_run(run_id, timeout=5)
        recorded = [cp.output for cp in await store.list_checkpoints(run_id)]
        await e.signal("go")
        run = await e.wait_for_run(run_id, timeout=5, until="terminal")
    assert isinstance(run.output, list)
    assert run.output[-3:] == [datetime.__name__, UUID.__name__, float.__name__]
    assert isinstance(recorded[0], str)
    assert datetime.fromisoformat(run.output[0]) == datetime.fromisoformat(recorded[0])
    assert run.output[1] == recorded[1]
    assert float(run.output[2]) == recorded[2]
    assert run.output[1] != run.output[4]


async def test_suspended_runs_hold_no_memory(store: InMemoryStateStore) -> None:
    @workflow(name="parked")
    async def parked(ctx: WorkflowCtx, token: str) -> None:
        await ctx.wait_for_signal(token)

    async with engine(store, [parked]) as e:
        ids = [(await e.start(parked, f"p{i}")).run_id for i in range(200)]
        for run_id in ids:
            assert (await e.wait_for_run(run_id, timeout=5)).status == "suspended"
        gc.collect()
        assert not any(isinstance(o, Turn) for o in gc.get_objects())
        assert e._cfg.active == set()


async def test_get_run_of_unknown_id_raises(store: InMemoryStateStore) -> None:
    async with Engine(store) as e:
        with pytest.raises(RunNotFound):
            await e.get_run("missing")


async def test_list_runs_filters_and_pages(store: InMemoryStateStore) -> None:
    async with engine(store, [typed], drive=False) as e:
        for i in range(5):
            await e.start(typed, Order(id=str(i), total=i), tags=["even"] if i % 2 == 0 else [])
        page = await e.list_runs(tags=["even"], limit=2)
        rest = await e.list_runs(tags=["even"], limit=2, cursor=page.next_cursor)
    assert len(page.runs) == 2
    assert len(rest.runs) == 1
    assert rest.next_cursor is None
    inputs = [r.input for r in page.runs + rest.runs]
    assert {i["id"] for i in inputs if isinstance(i, dict)} == {"0", "2", "4"}


async def test_graceful_shutdown_requeues_a_run_at_its_next_boundary(
    store: InMemoryStateStore,
) -> None:
    gate = anyio.Event()

    @step
    async def wait_gate() -> None:
        await gate.wait()

    @step
    async def after() -> int:
        return 1

    @workflow(name="draining")
    async def draining(ctx: WorkflowCtx) -> int:
        await ctx.step(wait_gate)
        return await ctx.step(after)

    e = engine(store, [draining])
    async with e:
        run_id = (await e.start(draining)).run_id
        await wait_until(_is_running(store, run_id), what="the run to start")
        e._draining = True
        gate.set()
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.status, run.locked_by) == ("pending", None)
    assert [cp.name for cp in await store.list_checkpoints(run_id)] == [wait_gate.name]


def _is_running(store: InMemoryStateStore, run_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.status == "running"

    return check


class _FlakyStore(InMemoryStateStore):
    """Fails the first few pending-run scans, like a database that restarts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("database restarting")
        return await super().list_pending_runs(limit, namespace, workflows=workflows)


async def test_worker_survives_a_database_outage() -> None:
    store = _FlakyStore(failures=3)

    @workflow(name="patient")
    async def patient(ctx: WorkflowCtx) -> str:
        return "done"

    async with engine(store, [patient], drive=False) as client:
        run_id = (await client.start(patient)).run_id
    async with engine(store, [patient]) as worker:
        run = await worker.wait_for_run(run_id, timeout=5, until="terminal")
    assert (run.status, run.output, store.failures) == ("completed", "done", 0)


async def test_parallel_branches_of_a_cancelled_run_stop_without_crashing_the_worker(
    store: InMemoryStateStore,
) -> None:
    gate = anyio.Event()

    @step
    async def held(i: int) -> int:
        await gate.wait()
        return i

    @workflow(name="wide")
    async def wide(ctx: WorkflowCtx) -> int:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(ctx.step, held, i)
        return 3

    @workflow(name="after")
    async def after(ctx: WorkflowCtx) -> str:
        return "still working"

    async with engine(store, [wide, after]) as e:
        run_id = (await e.start(wide)).run_id
        await wait_until(_is_running(store, run_id), what="the run to start")
        await e.cancel(run_id)
        gate.set()
        await wait_until(_unlocked(store, run_id), what="the lease release")
        later = await e.wait_for_run((await e.start(after)).run_id, timeout=5, until="terminal")
    assert (await e.get_run(run_id)).status == "cancelled"
    assert later.output == "still working"
    assert await store.list_checkpoints(run_id) == []


def _unlocked(store: InMemoryStateStore, run_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.locked_by is None

    return check


async def test_closures_given_to_ctx_step_are_not_kept_alive(store: InMemoryStateStore) -> None:
    @workflow(name="closures")
    async def closures(ctx: WorkflowCtx, n: int) -> int:
        def make() -> Callable[[], Awaitable[int]]:
            async def read() -> int:  # async: a worker thread may keep its last job alive
                return n

            return read

        return int(await ctx.step("read", make()))

    async with engine(store, [closures]) as e:
        for n in range(3):
            run = await e.wait_for_run((await e.start(closures, n)).run_id, 5, until="terminal")
            assert run.output == n
    gc.collect()
    leaked = [
        o
        for o in gc.get_objects()
        if isinstance(o, types.FunctionType) and o.__qualname__.endswith("make.<locals>.read")
    ]
    assert leaked == []


class WriteLog(InMemoryStateStore):
    """Records every write a turn makes: checkpoint saves and lease releases."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        self.writes.append(f"save {checkpoint.kind}")
        return await super().save_checkpoint(checkpoint, run_patch, owner=owner, expect=expect)

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        self.writes.append(" +".join(["release", *(cp.kind for cp in checkpoints)]))
        return await super().release_run_lock(run_id, owner, checkpoints=checkpoints, **patch)


@step
async def work() -> int:
    await anyio.sleep(0.05)  # real work that takes a while: the other branch overlaps it
    return 1


@workflow(name="step_then_nap")
async def step_then_nap(ctx: WorkflowCtx, _: None) -> str:
    await ctx.step(work)
    await ctx.sleep(3600)
    return "awake"


@workflow(name="nap_beside_work")
async def nap_beside_work(ctx: WorkflowCtx, _: None) -> str:
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.step, work)
        tg.start_soon(ctx.sleep, 3600)
    return "awake"


async def test_a_sleep_that_ends_the_turn_is_written_by_the_release_that_suspends_the_run() -> None:
    store = WriteLog()
    async with engine(store, [step_then_nap]) as e:
        handle = await e.start(step_then_nap)
        run = await e.wait_for_run(handle.run_id, timeout=10)
    assert run.status == "suspended"
    assert store.writes == ["save local", "release +sleep"]  # one write to suspend
    [_, nap] = await store.list_checkpoints(handle.run_id)
    assert (nap.kind, nap.status, nap.wake_at) == ("sleep", "pending", run.wake_at)


async def test_a_sleep_beside_work_in_flight_is_written_at_once() -> None:
    store = WriteLog()
    async with engine(store, [nap_beside_work]) as e:
        handle = await e.start(nap_beside_work)
        run = await e.wait_for_run(handle.run_id, timeout=10)
    assert run.status == "suspended"
    # The turn goes on after the sleep call, so its record cannot wait for the release.
    assert store.writes == ["save sleep", "save local", "release"]
    kinds = [cp.kind for cp in await store.list_checkpoints(handle.run_id)]
    assert kinds == ["local", "sleep"]


class DiesAtRelease(CrashingStore):
    """The worker dies as it is about to release its first turn."""

    async def release_run_lock(self, *args: Any, **kwargs: Any) -> RunStatus | None:
        self.dead = True
        raise SimulatedCrash("release_run_lock")


async def test_a_deferred_sleep_lost_with_its_worker_starts_over_on_recovery() -> None:
    inner = InMemoryStateStore()
    dying = DiesAtRelease(inner, crash_after_saves=100)

    async def died() -> bool:
        return dying.dead

    async with crashing(engine(dying, [step_then_nap])) as e:
        handle = await e.start(step_then_nap)
        await wait_until(died, what="the worker to die")
    # Only the step was durable: the sleep's record went down with the worker.
    assert [cp.kind for cp in await inner.list_checkpoints(handle.run_id)] == ["local"]
    async with engine(inner, [step_then_nap]) as e:  # recovers the run once its lease expires
        run = await e.wait_for_run(handle.run_id, timeout=10)
    assert run.status == "suspended"
    [step_cp, nap] = await inner.list_checkpoints(handle.run_id)
    assert (step_cp.kind, step_cp.attempts, nap.kind) == ("local", 1, "sleep")  # no step re-run
    assert run.wake_at == nap.wake_at


def test_an_engine_can_be_entered_again_from_another_event_loop() -> None:
    @workflow(name="twice-entered")
    async def hello(ctx: WorkflowCtx, who: str) -> str:
        return f"hello {who}"

    store = InMemoryStateStore()
    durable = Engine(store, workflows=[hello], poll_interval=0.02)

    async def use(who: str) -> object:
        async with durable:
            handle = await durable.start(hello, who)
            return (await durable.wait_for_run(handle.run_id, 10, until="terminal")).output

    assert anyio.run(use, "a") == "hello a"
    assert anyio.run(use, "b") == "hello b"
