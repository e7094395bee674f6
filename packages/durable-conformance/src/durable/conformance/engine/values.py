"""Step and workflow values: what the first execution sees is what replay sees.

An unannotated step's awkward value (int keys, a datetime, a tuple, a set, a Decimal) reaches
the workflow the same, type and value, on the first execution and on replay after a crash. A
declared return type is enforced when the value is produced, not days later on replay. A
one-shot iterator is refused, and key order survives the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from durable.conformance._base import SuiteBase
from durable.conformance._harness import (
    CrashingStore,
    crashed,
    crashing,
    engine,
    engine_start,
    new_id,
    wait_until,
)
from durable.core import StepFailedError, WorkflowCtx, step, workflow

if TYPE_CHECKING:
    from collections.abc import Callable

    from durable.core import Run, StateStore, WorkflowDef

AWKWARD: dict[str, Callable[[], object]] = {
    "int-keys": lambda: {7: "x"},
    "datetime": lambda: datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "tuple": lambda: (1, "two", 3.5),
    "set": lambda: {"solo"},
    "decimal": lambda: Decimal("1.10"),
    "nested-int-keys": lambda: {"outer": {1: [(2, 3)], 2: {"deep": {3: "x"}}}},
}
"""Values a JSON store cannot keep as they are; the lambdas are unannotated steps."""

ONE_SHOT: dict[str, Callable[[], object]] = {
    "generator": lambda: (n for n in (1, 2, 3)),
    "iterator": lambda: iter([1, 2, 3]),
}


class Verdict(BaseModel):
    """A workflow output model in the suite."""

    approved: bool


async def _none_for_str() -> str:
    return None  # type: ignore[return-value]


async def _text_for_int() -> int:
    return "str"  # type: ignore[return-value]


async def _mark() -> None:
    return None


async def _echo(key: str) -> str:
    return key


def _same(first: object, again: object) -> bool:
    """Equal in value and in type, all the way down (``1.5 == Decimal("1.5")`` is not enough)."""
    if type(first) is not type(again):
        return False
    if isinstance(first, dict) and isinstance(again, dict):
        return first.keys() == again.keys() and all(_same(first[k], again[k]) for k in first)
    if isinstance(first, list | tuple) and isinstance(again, list | tuple):
        return len(first) == len(again) and all(map(_same, first, again))
    return first == again


async def _first_and_replay(store: StateStore, wf: WorkflowDef[Any, Any]) -> Run:
    """Run ``wf`` on a worker that dies after its second checkpoint write, then on a survivor."""
    dying = CrashingStore(store, crash_after_saves=1)
    async with crashing(engine(dying, [wf], lease=0.3)):
        run_id = await engine_start(store, wf, None)
        await wait_until(crashed(dying), what="the simulated crash")
    async with engine(store, [wf], lease=0.3) as survivor:
        return await survivor.wait_for_run(run_id, timeout=15, until="terminal")


class ValueTests(SuiteBase):
    """Values crossing the store: replay equality, declared types, one-shot iterators."""

    @pytest.mark.parametrize("kind", list(AWKWARD))
    async def test_replay_returns_what_the_first_execution_returned(
        self, durable_store: StateStore, kind: str
    ) -> None:
        seen: list[object] = []

        @workflow(name=f"awkward-{new_id()}")
        async def awkward(ctx: WorkflowCtx) -> str:
            seen.append(await ctx.step("awkward", AWKWARD[kind]))
            await ctx.step("mark", _mark)  # the worker dies right after this checkpoint
            return "done"

        run = await _first_and_replay(durable_store, awkward)
        assert (run.status, run.output) == ("completed", "done"), run.error and run.error["message"]
        assert len(seen) == 2, f"expected one first execution and one replay, got {seen!r}"
        first, again = seen
        assert _same(first, again), (
            f"{kind}: the first execution saw {first!r} ({type(first).__name__}),"
            f" replay saw {again!r} ({type(again).__name__})"
        )

    @pytest.mark.parametrize(
        ("produce", "words"),
        [(_none_for_str, ["str", "NoneType"]), (_text_for_int, ["int", "str"])],
        ids=["None-for-str", "str-for-int"],
    )
    async def test_a_step_result_of_the_wrong_type_fails_the_step_at_once(
        self, durable_store: StateStore, produce: Callable[[], Any], words: list[str]
    ) -> None:
        name = f"typed-{new_id()}"
        typed = step(name=name, retries=3, backoff=0.01)(produce)

        @workflow(name=f"typed-{new_id()}")
        async def wf(ctx: WorkflowCtx) -> object:
            return await ctx.step(typed)

        async with engine(durable_store, [wf]) as e:
            run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
        checkpoint = await durable_store.get_checkpoint(run.id, 0)
        assert checkpoint is not None
        assert (checkpoint.status, checkpoint.attempts) == ("failed", 1), (
            f"the step was recorded {checkpoint.status} after {checkpoint.attempts} attempt(s)"
        )
        assert checkpoint.error is not None
        message = checkpoint.error["message"]
        assert checkpoint.error["type"] == "ResultTypeError", checkpoint.error
        assert name in message
        for word in words:
            assert word in message, f"{word!r} is not named in {message!r}"
        assert "cannot be stored as JSON" not in message
        assert run.status == "failed"

        from durable.core import DurableError, ResultTypeError

        assert issubclass(ResultTypeError, DurableError)

    async def test_a_workflow_output_of_the_wrong_type_fails_the_run(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"verdict-{new_id()}")
        async def wf(ctx: WorkflowCtx) -> Verdict:
            return None  # type: ignore[return-value]

        async with engine(durable_store, [wf]) as e:
            run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
        assert run.status == "failed", f"the run ended {run.status} with output {run.output!r}"
        assert run.error is not None
        assert run.error["type"] == "ResultTypeError", run.error and run.error["message"]
        assert "Verdict" in run.error["message"]

    @pytest.mark.parametrize("kind", list(ONE_SHOT))
    async def test_a_step_returning_a_one_shot_iterator_fails_the_same_on_replay(
        self, durable_store: StateStore, kind: str
    ) -> None:
        seen: list[tuple[object, ...]] = []
        name = f"one-shot-{new_id()}"

        @workflow(name=f"one-shot-{new_id()}")
        async def wf(ctx: WorkflowCtx) -> str:
            try:
                value = await ctx.step(name, ONE_SHOT[kind], retries=2, backoff=0.01)
            except StepFailedError as exc:
                seen.append((exc.error_type, exc.error_message, exc.attempts))
            else:
                seen.append(("returned", type(value).__name__))
            await ctx.step("mark", _mark)  # the worker dies right after this checkpoint
            return "done"

        run = await _first_and_replay(durable_store, wf)
        assert (run.status, run.output) == ("completed", "done"), run.error and run.error["message"]
        assert len(seen) == 2, f"expected one first execution and one replay, got {seen!r}"
        assert seen[0] == seen[1], f"first execution {seen[0]!r}, replay {seen[1]!r}"
        error_type, message, attempts = seen[0]
        assert (error_type, attempts) == ("SerializationError", 1), seen[0]
        assert isinstance(message, str)
        assert name in message

    async def test_key_order_of_a_step_result_survives_replay(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"ordered-{new_id()}")
        async def ordered(ctx: WorkflowCtx) -> list[str]:
            config = await ctx.step("config", lambda: {"zeta": 1, "beta": 2})
            # one step per key, in the result's order; the worker dies after the first
            return [await ctx.step(f"apply-{key}", _echo, key) for key in config]

        run = await _first_and_replay(durable_store, ordered)
        assert run.status == "completed", run.error and run.error["message"]
        assert run.output == ["zeta", "beta"]
