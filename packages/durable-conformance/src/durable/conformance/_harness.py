"""Helpers the engine suite uses: fast engines, crash injection, waiting on conditions."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from durable.core import Engine
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from durable.core import (
        CheckpointRecord,
        CheckpointStatus,
        RunPatch,
        StateStore,
        StepHandler,
        WorkflowDef,
    )

FAST = {"poll_interval": 0.02, "lease": 1.0, "shutdown_grace": 2}


class SimulatedCrash(BaseException):
    """Raised where a worker process would have died; nothing it does afterwards counts."""


class CrashingStore:
    """Wraps a store; after ``crash_after_saves`` successful checkpoint writes it "dies".

    From then on every call raises :class:`SimulatedCrash`, so the dying worker can neither
    release its lease nor write anything else, exactly like a process killed with SIGKILL.
    """

    def __init__(self, inner: StateStore, crash_after_saves: int) -> None:
        self._inner = inner
        self._left = crash_after_saves
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise SimulatedCrash(name)
            return await attr(*args, **kwargs)

        return call

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        if self.dead:
            raise SimulatedCrash("save_checkpoint")
        written = await self._inner.save_checkpoint(
            checkpoint, run_patch, owner=owner, expect=expect
        )
        if written and owner is not None:
            self._left -= 1
            if self._left < 0:
                self.dead = True
                raise SimulatedCrash("after save_checkpoint")
        return written


def engine(
    store: StateStore | CrashingStore,
    workflows: Iterable[WorkflowDef[Any, Any]],
    *,
    transport: InProcessTransport | None = None,
    steps: Iterable[StepHandler[Any, Any]] = (),
    **options: Any,
) -> Engine:
    """An engine tuned for tests: fast polling and short leases."""
    return Engine(
        store,
        transport if transport is not None else InProcessTransport(),
        workflows=workflows,
        steps=steps,
        **{**FAST, **options},
    )


@asynccontextmanager
async def crashing(engine: Engine) -> AsyncIterator[Engine]:
    """Run ``engine`` and swallow the :class:`SimulatedCrash` that kills it."""
    try:
        async with engine:
            yield engine
    except BaseException as exc:
        if not _only_crashes(exc):
            raise


def _only_crashes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_crashes(e) for e in exc.exceptions)
    return isinstance(exc, SimulatedCrash | anyio.get_cancelled_exc_class())


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not await condition():  # noqa: ASYNC110 - the condition lives in the store
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
