"""``EngineSuite``: whole workflows run on the store under test.

Replay after a crash at every checkpoint boundary, durable sleep and signals across engine
restarts, signals in every order, remote steps with retries, cancel, version pinning,
non-determinism detection, and two engines sharing one store.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel

from durable.conformance._base import SuiteBase
from durable.conformance._harness import CrashingStore, crashing, engine, wait_until
from durable.core import (
    FatalError,
    NonDeterminismError,
    RemoteStepError,
    SignalPayloadError,
    SignalTimeoutError,
    WorkflowCtx,
    durable_step,
    remote_step,
    step,
    workflow,
)
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from durable.core import StateStore


class Payment(BaseModel):
    """A remote step's input in the suite."""

    order_id: str
    cents: int


class Receipt(BaseModel):
    """A remote step's output in the suite."""

    charge_id: str


class Approval(BaseModel):
    """A typed signal payload in the suite."""

    approved: bool


def _id() -> str:
    return uuid.uuid4().hex


class EngineSuite(SuiteBase):
    """The engine's contract, exercised end to end on the store under test."""

    # -- replay and crashes ---------------------------------------------------------------------

    @pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4])
    async def test_steps_never_rerun_after_a_crash_at_any_checkpoint(
        self, durable_store: StateStore, crash_after: int
    ) -> None:
        ran: Counter[str] = Counter()

        @step
        async def work(name: str) -> str:
            ran[name] += 1
            return name.upper()

        @workflow(name=f"five-steps-{_id()}")
        async def five(ctx: WorkflowCtx, prefix: str) -> list[str]:
            return [await ctx.step(work, f"{prefix}{i}") for i in range(5)]

        dying = CrashingStore(durable_store, crash_after_saves=crash_after)
        async with crashing(engine(dying, [five], lease=0.3)):
            handle = await engine_start(durable_store, five, "s")
            await wait_until(_flag(dying), what="the simulated crash")
        async with engine(durable_store, [five], lease=0.3) as survivor:
            run = await survivor.wait_for_run(handle, timeout=15, until="terminal")
        assert run.status == "completed"
        assert run.output == ["S0", "S1", "S2", "S3", "S4"]
        assert run.recovery_attempts == 0
        assert ran == Counter({f"s{i}": 1 for i in range(5)})

    async def test_run_goes_dead_after_max_recovery_attempts(
        self, durable_store: StateStore
    ) -> None:
        @step
        async def work() -> int:
            return 1

        @workflow(name=f"doomed-{_id()}")
        async def doomed(ctx: WorkflowCtx) -> int:
            return await ctx.step(work) + await ctx.step(work)

        run_id = await engine_start(durable_store, doomed, None)
        for _ in range(2):
            dying = CrashingStore(durable_store, crash_after_saves=0)
            async with crashing(engine(dying, [doomed], lease=0.2, max_recovery_attempts=1)):
                await wait_until(_flag(dying), what="the simulated crash")
        async with engine(durable_store, [doomed], lease=0.2, max_recovery_attempts=1) as e:
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert run.status == "dead"
        assert run.error is not None
        assert "max_recovery_attempts" in run.error["message"]

    # -- sleep and signals ----------------------------------------------------------------------

    async def test_sleep_survives_an_engine_restart(self, durable_store: StateStore) -> None:
        ran: Counter[str] = Counter()

        @step
        async def before() -> str:
            ran["before"] += 1
            return "b"

        @workflow(name=f"napper-{_id()}")
        async def napper(ctx: WorkflowCtx) -> str:
            first = await ctx.step(before)
            await ctx.sleep(0.4)
            return first + "-awake"

        async with engine(durable_store, [napper]) as first_engine:
            run_id = (await first_engine.start(napper)).run_id
            run = await first_engine.wait_for_run(run_id, timeout=10)
            assert run.status == "suspended"
            assert run.wake_at is not None
        async with engine(durable_store, [napper]) as second_engine:
            run = await second_engine.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "b-awake")
        assert ran["before"] == 1

    async def test_signal_sent_while_no_worker_runs_is_delivered_after_restart(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"approver-{_id()}")
        async def approver(ctx: WorkflowCtx, order: str) -> bool:
            approval = await ctx.wait_for_signal(f"approve:{order}", Approval)
            return approval.approved

        order = _id()
        async with engine(durable_store, [approver]) as worker:
            run_id = (await worker.start(approver, order)).run_id
            assert (await worker.wait_for_run(run_id, timeout=10)).status == "suspended"
        async with engine(durable_store, [approver], drive=False) as client:
            await client.signal(f"approve:{order}", Approval(approved=True))
        async with engine(durable_store, [approver]) as worker:
            run = await worker.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", True)

    @pytest.mark.parametrize("when", ["before", "during", "after"])
    async def test_signal_is_delivered_exactly_once_whenever_it_is_sent(
        self, durable_store: StateStore, when: str
    ) -> None:
        @workflow(name=f"twice-{_id()}")
        async def twice(ctx: WorkflowCtx, token: str) -> list[int]:
            return [await ctx.wait_for_signal(token, int), await ctx.wait_for_signal(token, int)]

        runs = 8
        tokens = [f"t:{_id()}" for _ in range(runs)]
        async with engine(durable_store, [twice]) as e:
            if when == "before":
                for token in tokens:
                    await e.signal(token, 1)
                    await e.signal(token, 2)
                ids = [(await e.start(twice, token)).run_id for token in tokens]
            elif when == "during":
                ids = []
                async with anyio.create_task_group() as tg:
                    for token in tokens:
                        ids.append((await e.start(twice, token)).run_id)
                        tg.start_soon(_send_two, e, token)
            else:
                ids = [(await e.start(twice, token)).run_id for token in tokens]
                for run_id in ids:
                    assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
                for token in tokens:
                    await e.signal(token, 1)
                    await e.signal(token, 2)
            finished = [await e.wait_for_run(i, timeout=15, until="terminal") for i in ids]
        assert [(r.status, r.output) for r in finished] == [("completed", [1, 2])] * runs
        for token in tokens:
            assert await durable_store.take_buffered_signal(token) is None

    async def test_signal_whose_sender_died_before_pairing_is_still_delivered(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"stranded-{_id()}")
        async def stranded(ctx: WorkflowCtx, token: str) -> str:
            return str(await ctx.wait_for_signal(token))

        token = f"stranded:{_id()}"
        async with engine(durable_store, [stranded]) as e:
            run_id = (await e.start(stranded, token)).run_id
            assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
            # what a sender killed between its two writes leaves behind: no pairing, no nudge
            await durable_store.buffer_signal(token, "late but delivered", datetime.now(UTC))
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", "late but delivered")

    async def test_signal_timeout_raises_and_a_late_signal_stays_buffered(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"impatient-{_id()}")
        async def impatient(ctx: WorkflowCtx, token: str) -> str:
            try:
                await ctx.wait_for_signal(token, timeout=0.2)
            except SignalTimeoutError as exc:
                return f"timed out on {exc.token}"
            return "signalled"

        token = f"late:{_id()}"
        async with engine(durable_store, [impatient]) as e:
            run_id = (await e.start(impatient, token)).run_id
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
            await e.signal(token, "late")
        assert run.output == f"timed out on {token}"
        assert await durable_store.list_signal_waiters(token) == []
        late = await durable_store.take_buffered_signal(token)
        assert late is not None
        assert late.payload == "late"

    async def test_signal_payload_of_the_wrong_type_raises_a_catchable_error(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"strict-{_id()}")
        async def strict(ctx: WorkflowCtx, token: str) -> str:
            try:
                await ctx.wait_for_signal(token, Approval)
            except SignalPayloadError as exc:
                return f"rejected {exc.token}"
            return "accepted"

        token = f"typed:{_id()}"
        async with engine(durable_store, [strict]) as e:
            run_id = (await e.start(strict, token)).run_id
            await e.signal(token, {"approved": "not a bool at all"})
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", f"rejected {token}")

    # -- remote steps ---------------------------------------------------------------------------

    async def test_remote_step_is_retried_with_the_same_step_id(
        self, durable_store: StateStore
    ) -> None:
        seen: list[tuple[str, int]] = []
        charge = remote_step(
            f"charge-{_id()}", input=Payment, output=Receipt, retries=3, backoff=0.01
        )

        @durable_step(charge)
        async def flaky(payment: Payment) -> Receipt:
            from durable.core import current_step

            info = current_step()
            seen.append((info.step_id, info.attempt))
            if info.attempt < 3:
                raise ConnectionError("card network down")
            return Receipt(charge_id=f"ch-{payment.order_id}")

        @workflow(name=f"payer-{_id()}")
        async def payer(ctx: WorkflowCtx, order: str) -> str:
            receipt = await ctx.remote(charge, Payment(order_id=order, cents=500))
            return receipt.charge_id

        async with engine(durable_store, [payer], steps=[flaky]) as e:
            run_id = (await e.start(payer, "o1")).run_id
            run = await e.wait_for_run(run_id, timeout=15, until="terminal")
        assert (run.status, run.output) == ("completed", "ch-o1")
        assert [attempt for _, attempt in seen] == [1, 2, 3]
        assert len({step_id for step_id, _ in seen}) == 1

    async def test_remote_step_fatal_error_is_not_retried(self, durable_store: StateStore) -> None:
        attempts: list[int] = []
        charge = remote_step(f"fatal-{_id()}", input=Payment, output=Receipt, retries=5)

        @durable_step(charge)
        def declined(payment: Payment) -> Receipt:
            attempts.append(1)
            raise FatalError(f"card declined for {payment.order_id}")

        @workflow(name=f"payer-{_id()}")
        async def payer(ctx: WorkflowCtx, order: str) -> str:
            try:
                await ctx.remote(charge, Payment(order_id=order, cents=1))
            except RemoteStepError as exc:
                return f"{exc.step}: {exc.error_message}"
            return "charged"

        async with engine(durable_store, [payer], steps=[declined]) as e:
            run = await e.wait_for_run((await e.start(payer, "o2")).run_id, 10, until="terminal")
        assert run.output == f"{charge.name}: card declined for o2"
        assert attempts == [1]

    async def test_remote_result_arriving_twice_is_applied_once(
        self, durable_store: StateStore
    ) -> None:
        results = []
        double = remote_step(f"double-{_id()}", input=int, output=int)
        transport = InProcessTransport()

        @durable_step(double)
        async def doubler(n: int) -> int:
            return n * 2

        @workflow(name=f"sum-{_id()}")
        async def summer(ctx: WorkflowCtx) -> int:
            return await ctx.remote(double, 2) + await ctx.remote(double, 5)

        async with engine(durable_store, [summer], steps=[doubler], transport=transport) as e:
            original = e.handle_result

            async def twice(result: Any) -> None:
                results.append(result)
                await original(result)
                await original(result)

            e.handle_result = twice  # type: ignore[method-assign]
            run = await e.wait_for_run((await e.start(summer)).run_id, 10, until="terminal")
        assert (run.status, run.output) == ("completed", 14)
        assert len(results) == 2

    # -- cancel, versions, determinism ----------------------------------------------------------

    async def test_cancel_stops_suspended_pending_and_running_runs(
        self, durable_store: StateStore
    ) -> None:
        release = anyio.Event()
        after: list[str] = []

        @step
        async def blocker() -> None:
            await release.wait()

        @step
        async def later() -> None:
            after.append("ran")

        @workflow(name=f"cancellable-{_id()}")
        async def cancellable(ctx: WorkflowCtx, mode: str) -> None:
            if mode == "block":
                await ctx.step(blocker)
                await ctx.step(later)
            else:
                await ctx.wait_for_signal(f"never:{_id()}")

        async with engine(durable_store, [cancellable], drive=False) as client:
            pending = (await client.start(cancellable, "wait")).run_id
            assert (await client.cancel(pending)).status == "cancelled"
        async with engine(durable_store, [cancellable]) as e:
            suspended = (await e.start(cancellable, "wait")).run_id
            assert (await e.wait_for_run(suspended, timeout=10)).status == "suspended"
            assert (await e.cancel(suspended)).status == "cancelled"
            running = (await e.start(cancellable, "block")).run_id
            await wait_until(_status(e, running, "running"), what="the run to start")
            assert (await e.cancel(running)).status == "cancelled"
            release.set()
            await wait_until(_unlocked(durable_store, running), what="the lease release")
        assert after == []
        assert (await durable_store.get_run(running)).status == "cancelled"  # type: ignore[union-attr]
        assert (await durable_store.get_run(pending)).status == "cancelled"  # type: ignore[union-attr]

    async def test_run_resumes_on_its_version_and_fails_when_it_is_gone(
        self, durable_store: StateStore
    ) -> None:
        name = f"versioned-{_id()}"

        def make(version: str) -> Any:
            @workflow(name=name, version=version)
            async def versioned(ctx: WorkflowCtx, token: str) -> str:
                await ctx.wait_for_signal(token)
                return f"finished on v{version}"

            return versioned

        v1, v2 = make("1"), make("2")
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
            run = await new.wait_for_run(orphan, timeout=10, until="terminal")
        assert run.status == "failed"
        assert run.error is not None
        assert run.error["type"] == "WorkflowNotRegistered"
        assert "version '1'" in run.error["message"]

    async def test_changed_code_fails_the_run_with_non_determinism(
        self, durable_store: StateStore
    ) -> None:
        name = f"drifting-{_id()}"

        @step(name="a")
        async def step_a() -> int:
            return 1

        @step(name="b")
        async def step_b() -> int:
            return 2

        @workflow(name=name)
        async def original(ctx: WorkflowCtx, token: str) -> int:
            value = await ctx.step(step_a)
            await ctx.wait_for_signal(token)
            return value

        @workflow(name=name)
        async def edited(ctx: WorkflowCtx, token: str) -> int:
            try:
                value = await ctx.step(step_b)
            except NonDeterminismError:
                return -1  # swallowing it must not save the run
            await ctx.wait_for_signal(token)
            return value

        async with engine(durable_store, [original]) as e:
            run_id = (await e.start(original, "drift")).run_id
            assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
        async with engine(durable_store, [edited]) as e:
            await e.signal("drift")
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert run.status == "failed"
        assert run.error is not None
        assert run.error["type"] == "NonDeterminismError"
        assert "seq 0" in run.error["message"]
        assert "'a'" in run.error["message"]
        assert "'b'" in run.error["message"]

    # -- many workers ---------------------------------------------------------------------------

    async def test_two_engines_on_one_store_never_run_a_run_twice_at_once(
        self, durable_store: StateStore
    ) -> None:
        inside: set[str] = set()
        overlaps: list[str] = []
        ran: Counter[tuple[str, int]] = Counter()

        @step
        async def guarded(run_key: str, i: int) -> None:
            if run_key in inside:
                overlaps.append(run_key)
            inside.add(run_key)
            ran[(run_key, i)] += 1
            await anyio.lowlevel.checkpoint()
            inside.discard(run_key)

        @workflow(name=f"shared-{_id()}")
        async def shared(ctx: WorkflowCtx, key: str) -> int:
            for i in range(3):
                await ctx.step(guarded, key, i)
            await ctx.sleep(0.05)
            await ctx.step(guarded, key, 3)
            return 4

        transport = InProcessTransport()
        async with (
            engine(durable_store, [shared], transport=transport) as first,
            engine(durable_store, [shared], transport=transport) as second,
        ):
            keys = [_id() for _ in range(20)]
            ids = [
                (await (first, second)[i % 2].start(shared, k)).run_id for i, k in enumerate(keys)
            ]
            runs = [await first.wait_for_run(i, timeout=20, until="terminal") for i in ids]
        assert {r.status for r in runs} == {"completed"}
        assert overlaps == []
        assert set(ran.values()) == {1}
        assert len(ran) == 20 * 4


async def engine_start(store: StateStore, wf: Any, arg: object) -> str:
    """Start a run with a client-only engine (nothing executes it yet)."""
    async with engine(store, [wf], drive=False) as client:
        return (await client.start(wf, arg)).run_id


async def _send_two(e: Any, token: str) -> None:
    await e.signal(token, 1)
    await e.signal(token, 2)


def _flag(store: CrashingStore) -> Any:
    async def dead() -> bool:
        return store.dead

    return dead


def _status(e: Any, run_id: str, status: str) -> Any:
    async def check() -> bool:
        return bool((await e.get_run(run_id)).status == status)

    return check


def _unlocked(store: StateStore, run_id: str) -> Any:
    async def check() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.locked_by is None

    return check
