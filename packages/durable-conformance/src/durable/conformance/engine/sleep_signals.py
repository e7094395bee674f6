"""Durable sleep and signals: across engine restarts, in every order, buffered, timed out.

A run is suspended only when every task of its workflow waits on a durable call (or on its
own child tasks): a branch still doing other work keeps the turn going. A waiter written late
by a worker that lost its lease never takes a signal meant for the current wait.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import pytest
from pydantic import BaseModel

from durable.conformance._base import SuiteBase
from durable.conformance._harness import PausingStore, engine, new_id, wait_until
from durable.conformance.state_store._helpers import _buffered
from durable.core import (
    SignalPayloadError,
    SignalTimeoutError,
    WorkflowCtx,
    step,
    workflow,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable.core import Engine, StateStore


class Approval(BaseModel):
    """A typed signal payload in the suite."""

    approved: bool


class SleepSignalTests(SuiteBase):
    """Durable sleep and signal delivery."""

    async def test_sleep_survives_an_engine_restart(self, durable_store: StateStore) -> None:
        ran: Counter[str] = Counter()

        @step
        async def before() -> str:
            ran["before"] += 1
            return "b"

        @workflow(name=f"napper-{new_id()}")
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
        @workflow(name=f"approver-{new_id()}")
        async def approver(ctx: WorkflowCtx, order: str) -> bool:
            approval = await ctx.wait_for_signal(f"approve:{order}", Approval)
            return approval.approved

        order = new_id()
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
        @workflow(name=f"twice-{new_id()}")
        async def twice(ctx: WorkflowCtx, token: str) -> list[int]:
            return [await ctx.wait_for_signal(token, int), await ctx.wait_for_signal(token, int)]

        runs = 8
        tokens = [f"t:{new_id()}" for _ in range(runs)]
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
            assert await _buffered(durable_store, token) == []

    async def test_signal_whose_sender_died_before_pairing_is_still_delivered(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"stranded-{new_id()}")
        async def stranded(ctx: WorkflowCtx, token: str) -> str:
            return str(await ctx.wait_for_signal(token))

        token = f"stranded:{new_id()}"
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
        @workflow(name=f"impatient-{new_id()}")
        async def impatient(ctx: WorkflowCtx, token: str) -> str:
            try:
                await ctx.wait_for_signal(token, timeout=0.2)
            except SignalTimeoutError as exc:
                return f"timed out on {exc.token}"
            return "signalled"

        token = f"late:{new_id()}"
        async with engine(durable_store, [impatient]) as e:
            run_id = (await e.start(impatient, token)).run_id
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
            await e.signal(token, "late")
        assert run.output == f"timed out on {token}"
        assert await durable_store.list_pairable_tokens(10) == [], "a waiter outlived its wait"
        assert await _buffered(durable_store, token) == ["late"]

    async def test_signal_payload_of_the_wrong_type_raises_a_catchable_error(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"strict-{new_id()}")
        async def strict(ctx: WorkflowCtx, token: str) -> str:
            try:
                await ctx.wait_for_signal(token, Approval)
            except SignalPayloadError as exc:
                return f"rejected {exc.token}"
            return "accepted"

        token = f"typed:{new_id()}"
        async with engine(durable_store, [strict]) as e:
            run_id = (await e.start(strict, token)).run_id
            await e.signal(token, {"approved": "not a bool at all"})
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", f"rejected {token}")

    async def test_a_run_is_suspended_only_when_every_branch_waits(
        self, durable_store: StateStore
    ) -> None:
        token = f"branch:{new_id()}"

        @step(name="first")
        async def first() -> str:
            return "first"

        @step(name="second")
        async def second() -> str:
            return "second"

        @workflow(name=f"branching-{new_id()}")
        async def branching(ctx: WorkflowCtx) -> list[str]:
            results: dict[str, str] = {}

            async def waiting() -> None:
                results["signal"] = await ctx.wait_for_signal(token, str)

            async def working() -> None:
                results["first"] = await ctx.step(first)
                await anyio.sleep(0.05)  # not a ctx call: this branch is still working
                results["second"] = await ctx.step(second)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting)
                tg.start_soon(working)
            return [results["signal"], results["first"], results["second"]]

        async with engine(durable_store, [branching]) as e:
            run_id = (await e.start(branching)).run_id
            assert (await e.wait_for_run(run_id, timeout=10)).status == "suspended"
            statuses = {cp.name: cp.status for cp in await durable_store.list_checkpoints(run_id)}
            assert (statuses.get("first"), statuses.get("second")) == ("completed", "completed"), (
                f"the run was suspended while a branch still worked: checkpoints {statuses}"
            )
            await e.signal(token, "go")
            run = await e.wait_for_run(run_id, timeout=10, until="terminal")
        assert (run.status, run.output) == ("completed", ["go", "first", "second"])

    async def test_a_late_waiter_of_a_worker_that_lost_its_lease_never_takes_a_signal(
        self, durable_store: StateStore
    ) -> None:
        token = f"contested:{new_id()}"

        @workflow(name=f"two-signals-{new_id()}")
        async def two_signals(ctx: WorkflowCtx) -> list[str]:
            return [await ctx.wait_for_signal(token, str), await ctx.wait_for_signal(token, str)]

        # The first worker stops as it registers its waiter for seq 0, and its lease lapses.
        frozen = PausingStore(
            durable_store, lambda name, args: name == "put_signal_waiter", freeze=True
        )
        async with engine(frozen, [two_signals], lease=0.3) as stale:
            run_id = (await stale.start(two_signals)).run_id
            with anyio.fail_after(10):
                await frozen.held.wait()
            async with engine(durable_store, [two_signals], lease=0.3) as survivor:
                assert (await survivor.wait_for_run(run_id, timeout=10)).status == "suspended"
                await survivor.signal(token, "one")
                await wait_until(_waiting_at(durable_store, token, run_id, 1), what="seq 1 waiting")
            frozen.release.set()  # the first worker wakes up and finishes its stale turn
        async with engine(durable_store, [two_signals], lease=0.3) as e:
            await e.signal(token, "two")
            run = await e.wait_for_run(run_id, timeout=10)
        first = await durable_store.get_checkpoint(run_id, 0)
        assert first is not None
        assert (first.status, first.output) == ("completed", "one"), (
            f"the signal for seq 1 landed on seq 0: {first.output!r}"
        )
        assert (run.status, run.output) == ("completed", ["one", "two"])


def _waiting_at(
    store: StateStore, token: str, run_id: str, seq: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:  # a wait writes its pending checkpoint with its waiter
        cp = await store.get_checkpoint(run_id, seq)
        return cp is not None and (cp.kind, cp.status, cp.name) == ("signal", "pending", token)

    return check


async def _send_two(e: Engine, token: str) -> None:
    await e.signal(token, 1)
    await e.signal(token, 2)
