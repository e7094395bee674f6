"""Values a store refuses (too large, not JSON) fail the step or run for good, never loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from durable.conformance._harness import StoreProxy, engine
from durable.core import (
    InMemoryStateStore,
    PayloadTooLargeError,
    StepFailedError,
    WorkflowCtx,
    durable_step,
    remote_step,
    step,
    workflow,
)

pytestmark = pytest.mark.anyio

LIMIT = 1000


class Limited(StoreProxy):
    """Refuses any checkpoint or run output whose JSON is over ``LIMIT`` bytes, as MariaDB does
    past ``max_allowed_packet``."""

    async def forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "save_checkpoint":
            _check(args[0].output)
        if name == "release_run_lock":
            _check(kwargs.get("output"))
        return await super().forward(name, args, kwargs)


def _check(value: object) -> None:
    size = len(json.dumps(value))
    if size > LIMIT:
        raise PayloadTooLargeError(f"{size} bytes is over the test limit of {LIMIT}")


class Big(BaseModel):
    text: str


async def test_a_step_result_too_large_to_store_fails_the_step_once() -> None:
    calls = 0

    @step(retries=3)
    async def huge() -> str:
        nonlocal calls
        calls += 1
        return "x" * (2 * LIMIT)

    @workflow(name="too-large-step")
    async def wf(ctx: WorkflowCtx) -> str:
        try:
            await ctx.step(huge)
        except StepFailedError as exc:
            return f"{exc.error_type} after {exc.attempts}"
        return "stored"

    store = Limited(InMemoryStateStore())
    async with engine(store, [wf]) as e:
        run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
    assert (run.status, run.output, calls) == ("completed", "PayloadTooLargeError after 1", 1)


async def test_a_workflow_output_too_large_to_store_fails_the_run() -> None:
    @workflow(name="too-large-output")
    async def wf(ctx: WorkflowCtx) -> str:
        return "x" * (2 * LIMIT)

    store = Limited(InMemoryStateStore())
    async with engine(store, [wf]) as e:
        run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "PayloadTooLargeError"


async def test_a_remote_result_too_large_to_store_fails_the_step_for_good() -> None:
    contract = remote_step("too-large-remote", input=str, output=Big, retries=2, timeout=5)
    calls = 0

    @durable_step(contract)
    async def handler(text: str) -> Big:
        nonlocal calls
        calls += 1
        return Big(text=text * (2 * LIMIT))

    @workflow(name="too-large-remote-wf")
    async def wf(ctx: WorkflowCtx) -> str:
        try:
            await ctx.remote(contract, "y")
        except StepFailedError as exc:
            return exc.error_type
        return "stored"

    store = Limited(InMemoryStateStore())
    async with engine(store, [wf], steps=[handler]) as e:
        run = await e.wait_for_run((await e.start(wf)).run_id, 10, until="terminal")
    assert (run.status, run.output, calls) == ("completed", "PayloadTooLargeError", 1)
