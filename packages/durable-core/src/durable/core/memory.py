"""``InMemoryStateStore``: the StateStore and StateStoreAdmin protocols in process memory.

For tests and local development: nothing survives the process. Payloads go through a JSON
round trip on every write, as they do in a database, so code that works here does not break on
a real store because of a tuple or a non-string key.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, cast

import anyio.lowlevel

from durable.core import _machine as machine
from durable.core.errors import RunNotFound, SerializationError
from durable.core.records import (
    BufferedSignal,
    CheckpointRecord,
    RunPage,
    RunPatch,
    RunQuery,
    RunRecord,
    SignalWaiter,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence

    from typing_extensions import Unpack

    from durable.core._types import CheckpointStatus, JSONValue, RunStatus

T = TypeVar("T")


def _json_copy(value: JSONValue) -> JSONValue:
    try:
        loaded: JSONValue = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"value is not storable as JSON: {exc}") from exc
    return loaded


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InMemoryStateStore:
    """A StateStore held in dictionaries; every method is atomic (no await inside).

    It is a :class:`~durable.core.store.TransactionalStore` too, with no database to hold a
    transaction: a transactional step's function receives None, and its checkpoint is
    written fenced as any other.
    """

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._checkpoints: dict[str, dict[int, CheckpointRecord]] = {}
        self._waiters: dict[str, SignalWaiter] = {}
        self._buffered: dict[str, deque[BufferedSignal]] = {}
        self._signal_ids = itertools.count(1)

    async def ensure_schema(self) -> None:
        """Nothing to create: the tables are dictionaries."""
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> bool:
        """Insert the run unless its id exists."""
        await anyio.lowlevel.checkpoint()
        if run.id in self._runs:
            return False
        stored = replace(
            run,
            created_at=_utc(run.created_at),
            updated_at=_utc(run.updated_at),
            wake_at=_utc_or_none(run.wake_at),
            locked_until=_utc_or_none(run.locked_until),
            input=_json_copy(run.input),
            output=_json_copy(run.output),
            tags=list(run.tags),
            attributes=dict(run.attributes),
            error=copy.deepcopy(run.error),
        )
        self._runs[run.id] = stored
        return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """A copy of the run, or None."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        return None if run is None else _copy_run(run)

    async def update_run(
        self,
        run_id: str,
        *,
        if_status: Collection[RunStatus] | None = None,
        **patch: Unpack[RunPatch],
    ) -> bool:
        """Patch the run, optionally only from some statuses."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        if if_status is not None and run.status not in if_status:
            return False
        self._runs[run_id] = machine.patched(run, _stored_patch(patch), updated_at=_utcnow())
        return True

    async def delete_run(self, run_id: str) -> None:
        """Drop the run and everything keyed by it."""
        await anyio.lowlevel.checkpoint()
        self._runs.pop(run_id, None)
        self._checkpoints.pop(run_id, None)
        for token in [t for t, w in self._waiters.items() if w.run_id == run_id]:
            del self._waiters[token]

    async def list_runs(self, query: RunQuery) -> RunPage:
        """Filter, order newest first, and page."""
        await anyio.lowlevel.checkpoint()
        after = decode_cursor(query.cursor) if query.cursor else None
        candidates = (
            self._runs.values()
            if query.run_ids is None
            else [self._runs[i] for i in query.run_ids if i in self._runs]
        )
        matches = [
            run
            for run in candidates
            if _matches(run, query) and (after is None or (run.created_at, run.id) < after)
        ]
        matches.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        page = matches[: query.limit]
        more = len(matches) > query.limit
        return RunPage(
            runs=[_copy_run(r) for r in page],
            next_cursor=encode_cursor(page[-1]) if more and page else None,
        )

    # -- checkpoints ----------------------------------------------------------------------------

    async def get_checkpoint(self, run_id: str, seq: int) -> CheckpointRecord | None:
        """A copy of the checkpoint, or None."""
        await anyio.lowlevel.checkpoint()
        found = self._checkpoints.get(run_id, {}).get(seq)
        return None if found is None else _copy_checkpoint(found)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """Copies of the run's checkpoints by seq."""
        await anyio.lowlevel.checkpoint()
        rows = self._checkpoints.get(run_id, {})
        return [_copy_checkpoint(rows[seq]) for seq in sorted(rows)]

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        """Upsert, fenced by ``owner`` and compared with ``expect`` when given, with the patch."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(checkpoint.run_id)
        if owner is not None and (run is None or not machine.held(run, owner)):
            return False
        if expect is not None:
            current = self._checkpoints.get(checkpoint.run_id, {}).get(checkpoint.seq)
            if current is None or (current.status, current.attempts) != expect:
                return False
        stored = _stored_checkpoint(checkpoint)  # may refuse the payload: before any change
        if run_patch:
            if run is None:
                raise RunNotFound(f"no run {checkpoint.run_id!r}")
            patch = _stored_patch(run_patch)
            self._runs[run.id] = machine.patched(run, patch, updated_at=_utcnow())
        self._checkpoints.setdefault(checkpoint.run_id, {})[checkpoint.seq] = stored
        return True

    async def run_in_transaction(
        self,
        run_id: str,
        owner: str,
        fn: Callable[[object], Awaitable[T]],
        checkpoint: Callable[[T], CheckpointRecord | None],
    ) -> tuple[T, bool]:
        """Call ``fn(None)``, then write ``checkpoint(result)`` fenced by ``owner``.

        There is nothing to commit or roll back: the function's own effects are its own.

        Raises:
            ValueError: The checkpoint is not of run ``run_id``.
        """
        result = await fn(None)
        record = checkpoint(result)
        if record is None:
            return result, False
        if record.run_id != run_id:
            raise ValueError(f"checkpoint of run {record.run_id!r} is not of run {run_id!r}")
        return result, await self.save_checkpoint(record, owner=owner)

    # -- dispatch -------------------------------------------------------------------------------

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Oldest pending runs first, filtered before the limit."""
        await anyio.lowlevel.checkpoint()
        pending = [
            r
            for r in self._runs.values()
            if r.status == "pending" and machine.passes_filters(r, namespace, workflows)
        ]
        pending.sort(key=lambda r: (r.created_at, r.id))
        return [_copy_run(r) for r in pending[:limit]]

    async def list_incomplete_runs(
        self,
        now: datetime,
        namespace: str | None,
        limit: int = 100,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Running runs whose lease expired, oldest lease first, filtered before the limit."""
        await anyio.lowlevel.checkpoint()
        expired = [
            r
            for r in self._runs.values()
            if machine.recoverable(r, now) and machine.passes_filters(r, namespace, workflows)
        ]
        expired.sort(key=lambda r: (r.locked_until is not None, r.locked_until or now, r.id))
        return [_copy_run(r) for r in expired[:limit]]

    async def list_due_timers(
        self,
        now: datetime,
        namespace: str | None,
        limit: int,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Suspended runs whose wake time has come, earliest first, filtered before the limit."""
        await anyio.lowlevel.checkpoint()
        due = [
            r
            for r in self._runs.values()
            if machine.timer_due(r, now) and machine.passes_filters(r, namespace, workflows)
        ]
        due.sort(key=lambda r: (r.wake_at or now, r.id))
        return [_copy_run(r) for r in due[:limit]]

    # -- leases ---------------------------------------------------------------------------------

    async def try_lock_run(
        self,
        run_id: str,
        owner: str,
        lease_until: datetime,
        now: datetime,
        *,
        namespace: str | None = None,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> bool:
        """Claim the run if it is claimable and passes the filters (see the protocol)."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None or not machine.claimable(run, now, namespace=namespace, workflows=workflows):
            return False
        self._runs[run_id] = machine.claimed(run, owner, _utc(lease_until), updated_at=_utcnow())
        return True

    async def renew_run_lock(self, run_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend the holder's lease while the run is running."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None or not machine.held(run, owner):
            return False
        self._runs[run_id] = machine.renewed(run, _utc(lease_until))
        return True

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        """Clear the holder's lease, write its checkpoints and apply its patch."""
        await anyio.lowlevel.checkpoint()
        for cp in checkpoints:
            if cp.run_id != run_id:
                raise ValueError(
                    f"release_run_lock(run {run_id!r}): checkpoint {cp.seq} belongs to run "
                    f"{cp.run_id!r}"
                )
        run = self._runs.get(run_id)
        if run is None or run.locked_by != owner:
            return None
        stored = [_stored_checkpoint(cp) for cp in checkpoints]  # before any change
        after = machine.released(run, owner, _stored_patch(patch), updated_at=_utcnow())
        if after is None:
            return None
        if machine.held(run, owner):  # the checkpoints are written under the patch's condition
            for checkpoint in stored:
                self._checkpoints.setdefault(checkpoint.run_id, {})[checkpoint.seq] = checkpoint
        self._runs[run_id] = after
        return after.status

    async def wake_run(self, run_id: str) -> bool:
        """Make a suspended run pending, or flag a running one."""
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None:
            return False
        self._runs[run_id], pending = machine.woken(run, updated_at=_utcnow())
        return pending

    # -- signals --------------------------------------------------------------------------------

    async def put_signal_waiter(
        self,
        waiter: SignalWaiter,
        *,
        owner: str | None = None,
        checkpoint: CheckpointRecord | None = None,
    ) -> bool:
        """Register (or replace) the token's waiter, with its checkpoint, fenced by ``owner``."""
        await anyio.lowlevel.checkpoint()
        if checkpoint is not None:
            _check_waiter_checkpoint(waiter, checkpoint)
        run = self._runs.get(waiter.run_id)
        if owner is not None and (run is None or not machine.held(run, owner)):
            return False
        if checkpoint is not None:
            stored = _stored_checkpoint(checkpoint)
            self._checkpoints.setdefault(waiter.run_id, {})[waiter.seq] = stored
        self._waiters[waiter.token] = waiter
        return True

    async def take_signal_waiter(self, token: str) -> SignalWaiter | None:
        """Remove and return the token's waiter."""
        await anyio.lowlevel.checkpoint()
        return self._waiters.pop(token, None)

    async def remove_signal_waiter(self, waiter: SignalWaiter) -> bool:
        """Remove exactly this waiter."""
        await anyio.lowlevel.checkpoint()
        if self._waiters.get(waiter.token) != waiter:
            return False
        del self._waiters[waiter.token]
        return True

    async def list_signal_waiters(self, prefix: str = "") -> list[SignalWaiter]:
        """Waiters by token prefix."""
        await anyio.lowlevel.checkpoint()
        return [w for t, w in sorted(self._waiters.items()) if t.startswith(prefix)]

    async def buffer_signal(self, token: str, payload: JSONValue, now: datetime) -> int:
        """Append to the token's FIFO."""
        await anyio.lowlevel.checkpoint()
        signal = BufferedSignal(next(self._signal_ids), token, _json_copy(payload), _utc(now))
        self._buffered.setdefault(token, deque()).append(signal)
        return signal.id

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        """Pop the token's oldest buffered signal."""
        await anyio.lowlevel.checkpoint()
        queue = self._buffered.get(token)
        if not queue:
            return None
        signal = queue.popleft()
        if not queue:
            del self._buffered[token]
        return signal

    async def list_pairable_tokens(self, limit: int) -> list[str]:
        """Tokens with both a waiter and a buffered signal."""
        await anyio.lowlevel.checkpoint()
        return sorted(t for t, queue in self._buffered.items() if queue and t in self._waiters)[
            :limit
        ]

    async def pair_signal(
        self, token: str, now: datetime, *, holder: str | None = None
    ) -> SignalWaiter | None:
        """Deliver the oldest buffered signal to the waiter (see the protocol)."""
        await anyio.lowlevel.checkpoint()
        waiter = self._waiters.get(token)
        queue = self._buffered.get(token)
        if waiter is None or not queue:
            return None
        del self._waiters[token]
        run = self._runs.get(waiter.run_id)
        if run is None or not machine.accepts_signal(run):
            return None
        waiting = self._checkpoints.get(waiter.run_id, {}).get(waiter.seq)
        if waiting is not None and (waiting.status, waiting.kind) != ("pending", "signal"):
            return None  # a stale waiter: its seq already finished
        signal = queue.popleft()
        if not queue:
            del self._buffered[token]
        if waiting is None:
            waiting = CheckpointRecord(
                run_id=waiter.run_id,
                seq=waiter.seq,
                name=token,
                kind="signal",
                status="pending",
                step_id=f"{waiter.run_id}:{waiter.seq}",
                started_at=_utc(now),
                attempts=1,
            )
        self._checkpoints.setdefault(waiter.run_id, {})[waiter.seq] = replace(
            waiting,
            status="completed",
            output=signal.payload,
            finished_at=_utc(now),
            wake_at=None,
        )
        self._runs[run.id], _ = machine.woken(run, holder=holder, updated_at=_utcnow())
        return waiter


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _check_waiter_checkpoint(waiter: SignalWaiter, checkpoint: CheckpointRecord) -> None:
    if (checkpoint.run_id, checkpoint.seq) != (waiter.run_id, waiter.seq):
        raise ValueError(
            f"put_signal_waiter(token {waiter.token!r}): the checkpoint is at run "
            f"{checkpoint.run_id!r} seq {checkpoint.seq}, not at the waiter's run "
            f"{waiter.run_id!r} seq {waiter.seq}"
        )


def _stored_patch(patch: RunPatch) -> RunPatch:
    """The copy of a patch the store applies: JSON-checked output, copied containers, UTC times.

    Raises:
        SerializationError: The output is not storable as JSON.
    """
    stored: dict[str, object] = {}
    for key, value in patch.items():
        if key == "output":
            value = _json_copy(value)  # type: ignore[arg-type]
        elif key in ("tags", "attributes", "error"):
            value = copy.deepcopy(value)
        elif isinstance(value, datetime):
            value = _utc(value)
        stored[key] = value
    return cast("RunPatch", stored)


def _matches(run: RunRecord, query: RunQuery) -> bool:
    return (
        (query.namespace is None or run.namespace == query.namespace)
        and (query.statuses is None or run.status in query.statuses)
        and (query.workflow is None or run.workflow == query.workflow)
        and query.tags.issubset(run.tags)
        and all(
            k in run.attributes and _attr_equal(run.attributes[k], v)
            for k, v in query.attributes.items()
        )
        and (query.created_after is None or run.created_at >= query.created_after)
        and (query.created_before is None or run.created_at < query.created_before)
    )


def _attr_equal(stored: object, wanted: object) -> bool:
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    return stored == wanted


def _copy_run(run: RunRecord) -> RunRecord:
    return replace(
        run,
        input=copy.deepcopy(run.input),
        output=copy.deepcopy(run.output),
        error=copy.deepcopy(run.error),
        tags=list(run.tags),
        attributes=dict(run.attributes),
    )


def _stored_checkpoint(checkpoint: CheckpointRecord) -> CheckpointRecord:
    """The copy the store keeps: JSON-checked payloads, UTC times."""
    return replace(
        _copy_checkpoint(checkpoint),
        started_at=_utc(checkpoint.started_at),
        finished_at=_utc_or_none(checkpoint.finished_at),
        wake_at=_utc_or_none(checkpoint.wake_at),
    )


def _copy_checkpoint(cp: CheckpointRecord) -> CheckpointRecord:
    return replace(
        cp,
        input=_json_copy(cp.input),
        output=_json_copy(cp.output),
        error=copy.deepcopy(cp.error),
    )
