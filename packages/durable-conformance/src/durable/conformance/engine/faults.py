"""Store faults: a transient error never fails a run, reaches workflow code or stops the engine.

For each primitive (a local step, a sleep, a signal wait, a remote step) a clean run is first
counted through a :class:`FaultyStore`; then the run is repeated once for every k in 1..N with
the k-th call failing. Only the worker's store is faulty; the client that starts, signals and
watches the run uses the store under test directly. The workflow wraps every ``ctx`` call in
``try``/``except Exception`` and records what it caught: nothing may be caught. Each step reads
its own checkpoint before doing its work: a step whose checkpoint was saved never runs again.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._harness import (
    POLLER_CALLS,
    RUN_CALLS,
    FaultyStore,
    engine,
    new_id,
    wait_until,
)
from durable.core import (
    TERMINAL_STATUSES,
    WorkflowCtx,
    current_step,
    durable_step,
    remote_step,
    step,
    workflow,
)
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterator

    from durable.core import Engine, StateStore, StepHandler, WorkflowDef

LEASE = 0.3
"""Short, since a fault in a lease release is recovered when the lease lapses."""

QUIET_POLL = 1.0
"""A worker's poll interval when nudges and wake timers, not the poller, should claim runs."""

RUN_TIMEOUT = 8
"""How long one run under a fault may take: recovery needs a lease or a remote deadline."""


@dataclass
class _Watch:
    """What the workflow and its steps saw, across every attempt of one run."""

    store: StateStore
    caught: list[str] = field(default_factory=list)
    reruns: list[str] = field(default_factory=list)

    @contextmanager
    def guarded(self, call: str) -> Iterator[None]:
        """Record any exception a ``ctx`` call lets through to workflow code (then re-raise)."""
        try:
            yield
        except Exception as exc:
            self.caught.append(f"{call} raised {exc!r} into the workflow")
            raise

    async def first_time(self, run_id: str, seq: int, what: str) -> None:
        """Record a step about to run although its checkpoint is already saved."""
        checkpoint = await self.store.get_checkpoint(run_id, seq)
        if checkpoint is not None and checkpoint.status == "completed":
            self.reruns.append(f"{what} (seq {seq}) ran again after its checkpoint was saved")


@dataclass(frozen=True)
class _Scenario:
    """One workflow to run under faults, and what it must end with."""

    workflow: WorkflowDef[Any, Any]
    output: object
    input: object = None
    handlers: list[StepHandler[Any, Any]] = field(default_factory=list)
    after_start: Callable[[Engine, str], Awaitable[None]] | None = None


def _shout(watch: _Watch) -> Any:
    @step
    async def shout(run_id: str, seq: int, word: str) -> str:
        await watch.first_time(run_id, seq, "step shout")
        return word.upper()

    return shout


def _local_steps(watch: _Watch) -> _Scenario:
    shout = _shout(watch)

    @workflow(name=f"faulty-steps-{new_id()}")
    async def steps(ctx: WorkflowCtx) -> str:
        words = []
        for seq, word in enumerate(("a", "b")):
            with watch.guarded(f"ctx.step at seq {seq}"):
                words.append(await ctx.step(shout, ctx.run_id, seq, word))
        return "".join(words)

    return _Scenario(steps, output="AB")


def _sleep(watch: _Watch) -> _Scenario:
    shout = _shout(watch)

    @workflow(name=f"faulty-sleep-{new_id()}")
    async def napper(ctx: WorkflowCtx) -> str:
        with watch.guarded("ctx.sleep"):
            await ctx.sleep(0.05)
        with watch.guarded("ctx.step after the sleep"):
            return await ctx.step(shout, ctx.run_id, 1, "awake")

    return _Scenario(napper, output="AWAKE")


def _signal(watch: _Watch) -> _Scenario:
    shout = _shout(watch)
    token = f"faulty:{new_id()}"

    @workflow(name=f"faulty-signal-{new_id()}")
    async def waiter(ctx: WorkflowCtx) -> str:
        with watch.guarded("ctx.wait_for_signal"):
            payload = await ctx.wait_for_signal(token, str)
        with watch.guarded("ctx.step after the signal"):
            return await ctx.step(shout, ctx.run_id, 1, payload)

    async def send(client: Engine, run_id: str) -> None:
        if await _waits(client, run_id):
            await client.signal(token, "hello")

    return _Scenario(waiter, output="HELLO", after_start=send)


def _remote(watch: _Watch) -> _Scenario:
    shout = _shout(watch)
    # A short deadline: a dispatch whose task never left is dispatched again at its deadline.
    double = remote_step(f"faulty-double-{new_id()}", input=int, output=int, timeout=2)

    @durable_step(double)
    async def doubler(n: int) -> int:
        info = current_step()
        await watch.first_time(info.run_id, info.seq, "remote step handler")
        return n * 2

    @workflow(name=f"faulty-remote-{new_id()}")
    async def remote(ctx: WorkflowCtx) -> str:
        with watch.guarded("ctx.remote"):
            doubled = await ctx.remote(double, 21)
        with watch.guarded("ctx.step after the remote step"):
            return await ctx.step(shout, ctx.run_id, 1, f"r{doubled}")

    return _Scenario(remote, output="R42", handlers=[doubler])


def _stranded_signal(watch: _Watch) -> _Scenario:
    """A signal whose sender died before pairing it: the worker's poller delivers it."""
    token = f"stranded:{new_id()}"

    @workflow(name=f"faulty-stranded-{new_id()}")
    async def waiter(ctx: WorkflowCtx) -> str:
        with watch.guarded("ctx.wait_for_signal"):
            return str(await ctx.wait_for_signal(token))

    async def strand(client: Engine, run_id: str) -> None:
        if await _waits(client, run_id):
            await watch.store.buffer_signal(token, "stranded", datetime.now(UTC))

    return _Scenario(waiter, output="stranded", after_start=strand)


async def _waits(client: Engine, run_id: str) -> bool:
    """Whether the run settles waiting; a run that ended instead gets no signal to pair later."""
    return (await client.wait_for_run(run_id, timeout=RUN_TIMEOUT)).status == "suspended"


SCENARIOS: dict[str, Callable[[_Watch], _Scenario]] = {
    "step": _local_steps,
    "sleep": _sleep,
    "signal": _signal,
    "remote": _remote,
    "stranded-signal": _stranded_signal,
}


@dataclass
class _Outcome:
    """How one run under a fault ended."""

    store: FaultyStore
    problems: list[str]

    def report(self) -> str:
        injected = ", ".join(self.store.faults) or "no call was failed"
        return f"fault at {injected}: " + "; ".join(self.problems)


async def _run_under_fault(
    store: StateStore,
    scenario: str,
    fail_at: int | Collection[int],
    *,
    methods: Collection[str] | None = RUN_CALLS,
    lose_reply: bool = False,
    **worker: Any,
) -> _Outcome:
    watch = _Watch(store)
    plan = SCENARIOS[scenario](watch)
    faulty = FaultyStore(store, fail_at, methods=methods, lose_reply=lose_reply)
    transport = InProcessTransport()
    problems: list[str] = []
    run_id: str | None = None
    async with engine(store, [plan.workflow], drive=False, transport=transport) as client:
        try:
            async with engine(
                faulty,
                [plan.workflow],
                steps=plan.handlers,
                transport=transport,
                **{"lease": LEASE, **worker},
            ):
                await wait_until(_polled(faulty), what="the worker's first poll")
                run_id = (await client.start(plan.workflow, plan.input)).run_id
                try:
                    if plan.after_start is not None:
                        await plan.after_start(client, run_id)
                    await client.wait_for_run(run_id, timeout=RUN_TIMEOUT, until="terminal")
                except TimeoutError:
                    pass  # reported below from the run's status
        except Exception as exc:  # noqa: BLE001 - the engine must not raise; record what it did
            problems.append(f"`async with engine` raised {exc!r}")
        if run_id is not None:
            run = await client.get_run(run_id)
            if (run.status, run.output) != ("completed", plan.output):
                error = run.error and f"{run.error['type']}: {run.error['message']}"
                problems.append(
                    f"run ended {run.status} with output {run.output!r} and error {error!r}"
                    f" (expected completed with {plan.output!r})"
                )
            if run.status not in TERMINAL_STATUSES:
                await client.cancel(run_id)  # so no later engine in this test picks it up
    return _Outcome(faulty, problems + watch.caught + watch.reruns)


def _polled(store: FaultyStore) -> Callable[[], Awaitable[bool]]:
    """Whether the worker has polled, so a run started now is claimed on its nudge."""

    async def check() -> bool:
        return any(store.received[name] for name in POLLER_CALLS)

    return check


async def _fail_every_call(
    store: StateStore,
    scenario: str,
    *,
    methods: Collection[str] = RUN_CALLS,
    lose_reply: bool = False,
    **worker: Any,
) -> None:
    """Count a clean run's calls, then fail each k-th in turn; assert every run still ended well."""
    clean = await _run_under_fault(store, scenario, (), methods=methods, **worker)
    assert not clean.problems, f"the clean {scenario} run went wrong: {clean.report()}"
    assert clean.store.calls, f"a clean {scenario} run made no call to {sorted(methods)}"
    failures = []
    for k in range(1, len(clean.store.calls) + 1):
        outcome = await _run_under_fault(store, scenario, k, methods=methods, lose_reply=lose_reply)
        if outcome.problems:
            failures.append(outcome.report())
    calls = ", ".join(f"{k}:{name}" for k, name in enumerate(clean.store.calls, 1))
    assert not failures, (
        f"{len(failures)} of {len(clean.store.calls)} faults in a {scenario} run went wrong"
        f" (clean run: {calls}):\n" + "\n".join(failures)
    )


class FaultTests(SuiteBase):
    """Transient store faults, injected at every store call of a run."""

    @pytest.mark.parametrize("fault", ["refused", "reply-lost"])
    @pytest.mark.parametrize("primitive", ["step", "sleep", "signal", "remote"])
    async def test_a_store_fault_at_any_call_of_a_run_never_fails_it(
        self, durable_store: StateStore, primitive: str, fault: str
    ) -> None:
        await _fail_every_call(durable_store, primitive, lose_reply=fault == "reply-lost")

    @pytest.mark.parametrize(
        ("scenario", "method"),
        [
            ("step", "try_lock_run"),
            ("sleep", "try_lock_run"),
            ("remote", "get_checkpoint"),
            ("remote", "save_checkpoint"),
            ("remote", "wake_run"),
            ("stranded-signal", "pair_signal"),
        ],
    )
    async def test_a_store_fault_in_background_work_never_crashes_the_engine(
        self, durable_store: StateStore, scenario: str, method: str
    ) -> None:
        await _fail_every_call(durable_store, scenario, methods={method}, poll_interval=QUIET_POLL)
