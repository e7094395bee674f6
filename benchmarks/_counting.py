"""Counting what a store does: SQL statements (SQLAlchemy events) and store method calls.

A cursor-execute listener makes ``SqlAlchemyStateStore`` run every statement through
SQLAlchemy (so that listeners see them all), which is slower than its direct driver path.
Durable's scenarios therefore count in a pass of their own (``SqlCounter.counting``) and time
in another pass with no listener attached.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


class SqlCounter:
    """Counts statements sent through every SQLAlchemy engine found on an object.

    ``statements`` counts all; ``checkpoint_reads`` counts SELECTs on the checkpoint table.
    """

    def __init__(self) -> None:
        self.statements = 0
        self.checkpoint_reads = 0
        self.attached = False
        self.samples: Counter[str] = Counter()
        self._engines: list[Any] = []

    def reset(self) -> None:
        self.statements = 0
        self.checkpoint_reads = 0
        self.samples.clear()

    def _on_execute(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        self.statements += 1
        head = statement.lstrip()[:6].upper()
        if head == "SELECT" and "durable_step_checkpoints" in statement.split("WHERE")[0]:
            self.checkpoint_reads += 1
        self.samples[" ".join(statement.split())[:90]] += 1

    def attach(self, owner: object) -> bool:
        """Listen on every (async) engine among ``owner``'s attributes; True if one was found."""
        if "sqlalchemy" not in sys.modules:  # the in-memory store: nothing to count
            return False
        from sqlalchemy import event
        from sqlalchemy.engine import Engine as SyncEngine
        from sqlalchemy.ext.asyncio import AsyncEngine

        for value in _attributes(owner):
            engine = value.sync_engine if isinstance(value, AsyncEngine) else value
            if isinstance(engine, SyncEngine) and all(engine is not e for e in self._engines):
                self._engines.append(engine)
                event.listen(engine, "before_cursor_execute", self._on_execute)
        self.attached = bool(self._engines)
        return self.attached

    def detach(self) -> None:
        """Stop listening (``attached`` stays as it was: it says whether counts exist)."""
        from sqlalchemy import event

        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._on_execute)
        self._engines.clear()

    @contextlib.contextmanager
    def counting(self, owner: object) -> Iterator[SqlCounter]:
        """Count from zero while the block runs; listen on ``owner``'s engines only then."""
        self.attach(owner)
        self.reset()
        try:
            yield self
        finally:
            self.detach()


def _attributes(owner: object) -> list[Any]:
    values: list[Any] = []
    for name in dir(owner):
        if name.startswith("__"):
            continue
        try:
            value = inspect.getattr_static(owner, name)
        except AttributeError:
            continue
        if isinstance(value, property | functools.cached_property):
            continue
        values.append(getattr(owner, name, None))
    return values


class CountingStore:
    """Wraps a StateStore and counts calls per method (works for every store)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        calls = self.calls

        @functools.wraps(attr)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await attr(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def checkpoint_reads(self) -> int:
        return self.calls["list_checkpoints"] + self.calls["get_checkpoint"]
