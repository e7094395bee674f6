"""Stores that each break one StateStore contract, to prove the suite notices.

Each subclasses ``InMemoryStateStore`` and overrides one method, usually by moving an await
between a check and the write that depends on it (the classic lost race), or by dropping one
rule. They reach into the in-memory store's private dictionaries on purpose. ``NoAdminStore``
breaks only the optional ``StateStoreAdmin`` operations, which ``StateStoreSuite`` never calls.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio.lowlevel

from durable.core import (
    CheckpointRecord,
    InMemoryStateStore,
    RunPage,
    decode_cursor,
    encode_cursor,
)
from durable.core._machine import claimable

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from typing_extensions import Unpack

    from durable.core import (
        BufferedSignal,
        CheckpointStatus,
        JSONValue,
        RunPatch,
        RunQuery,
        RunRecord,
        RunStatus,
        SignalWaiter,
    )


class RacyLockStore(InMemoryStateStore):
    """``try_lock_run`` checks, awaits, then claims: several callers win (filters ignored)."""

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
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None or not claimable(run, now):
            return False
        await anyio.lowlevel.checkpoint()
        if run.status == "running":
            run.recovery_attempts += 1
        run.status = "running"
        run.locked_by, run.locked_until = owner, lease_until
        run.wake_requested, run.wake_at = False, None
        return True


class RacyRenewStore(InMemoryStateStore):
    """``renew_run_lock`` checks the holder, awaits, then extends: it can extend a lost lease."""

    async def renew_run_lock(self, run_id: str, owner: str, lease_until: datetime) -> bool:
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None or run.locked_by != owner:
            return False
        await anyio.lowlevel.checkpoint()
        run.locked_until = lease_until
        return True


class OwnerBlindRenewStore(InMemoryStateStore):
    """``renew_run_lock`` extends whoever holds the lease."""

    async def renew_run_lock(self, run_id: str, owner: str, lease_until: datetime) -> bool:
        run = self._runs.get(run_id)
        if run is None:
            return False
        run.locked_until = lease_until
        return True


class RacyWaiterTakeStore(InMemoryStateStore):
    """``take_signal_waiter`` reads, awaits, then deletes: several callers get the waiter."""

    async def take_signal_waiter(self, token: str) -> SignalWaiter | None:
        await anyio.lowlevel.checkpoint()
        waiter = self._waiters.get(token)
        await anyio.lowlevel.checkpoint()
        self._waiters.pop(token, None)
        return waiter


class LifoBufferStore(InMemoryStateStore):
    """``take_buffered_signal`` hands out the newest signal first."""

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        queue = self._buffered.get(token)
        return queue.pop() if queue else None


class RacyBufferTakeStore(InMemoryStateStore):
    """``take_buffered_signal`` peeks, awaits, then removes: a signal is taken twice."""

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        await anyio.lowlevel.checkpoint()
        queue = self._buffered.get(token)
        if not queue:
            return None
        signal = queue[0]
        await anyio.lowlevel.checkpoint()
        if signal in queue:
            queue.remove(signal)
        return signal


class RacyPairStore(InMemoryStateStore):
    """``pair_signal`` reads waiter and signal, awaits, then delivers: it delivers twice."""

    async def pair_signal(
        self, token: str, now: datetime, *, holder: str | None = None
    ) -> SignalWaiter | None:
        await anyio.lowlevel.checkpoint()
        waiter = self._waiters.get(token)
        queue = self._buffered.get(token)
        if waiter is None or not queue:
            return None
        signal = queue[0]
        await anyio.lowlevel.checkpoint()
        self._waiters.pop(token, None)
        if signal in queue:
            queue.remove(signal)
        self._checkpoints.setdefault(waiter.run_id, {})[waiter.seq] = CheckpointRecord(
            run_id=waiter.run_id,
            seq=waiter.seq,
            name=token,
            kind="signal",
            status="completed",
            step_id=f"{waiter.run_id}:{waiter.seq}",
            started_at=now,
            output=signal.payload,
        )
        await self.wake_run(waiter.run_id)
        return waiter


class LimitBeforeNamespaceStore(InMemoryStateStore):
    """``list_pending_runs`` applies the limit, then the namespace filter."""

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        oldest = await super().list_pending_runs(limit, None, workflows=workflows)
        return [run for run in oldest if namespace is None or run.namespace == namespace]


class LimitBeforeWorkflowsStore(InMemoryStateStore):
    """``list_pending_runs`` applies the limit, then the workflow filter: a worker starves."""

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        oldest = await super().list_pending_runs(limit, namespace)
        return [
            run
            for run in oldest
            if workflows is None or (run.workflow, run.workflow_version) in workflows
        ]


class UnfencedCheckpointStore(InMemoryStateStore):
    """``save_checkpoint`` ignores ``owner``."""

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        return await super().save_checkpoint(checkpoint, run_patch, expect=expect)


class RacyFenceStore(InMemoryStateStore):
    """``save_checkpoint`` checks the fence, awaits, then writes: writes land after a takeover."""

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(checkpoint.run_id)
        if owner is not None and (run is None or run.status != "running" or run.locked_by != owner):
            return False
        await anyio.lowlevel.checkpoint()
        return await super().save_checkpoint(checkpoint, run_patch, expect=expect)


class ExpectBlindCheckpointStore(InMemoryStateStore):
    """``save_checkpoint`` ignores ``expect``: a late result overwrites a finished step."""

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        return await super().save_checkpoint(checkpoint, run_patch, owner=owner)


class RacyExpectStore(InMemoryStateStore):
    """``save_checkpoint`` compares with ``expect``, awaits, then writes: several writers win."""

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        current = self._checkpoints.get(checkpoint.run_id, {}).get(checkpoint.seq)
        if expect is not None and (current is None or (current.status, current.attempts) != expect):
            return False
        await anyio.lowlevel.checkpoint()
        return await super().save_checkpoint(checkpoint, run_patch, owner=owner)


class UnfencedWaiterStore(InMemoryStateStore):
    """``put_signal_waiter`` ignores ``owner``: a worker that lost its lease leaves a waiter."""

    async def put_signal_waiter(
        self,
        waiter: SignalWaiter,
        *,
        owner: str | None = None,
        checkpoint: CheckpointRecord | None = None,
    ) -> bool:
        return await super().put_signal_waiter(waiter, checkpoint=checkpoint)


class RacyWaiterFenceStore(InMemoryStateStore):
    """``put_signal_waiter`` checks the fence, awaits, then writes: it lands after a takeover."""

    async def put_signal_waiter(
        self,
        waiter: SignalWaiter,
        *,
        owner: str | None = None,
        checkpoint: CheckpointRecord | None = None,
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(waiter.run_id)
        if owner is not None and (run is None or run.status != "running" or run.locked_by != owner):
            return False
        await anyio.lowlevel.checkpoint()
        return await super().put_signal_waiter(waiter, checkpoint=checkpoint)


class OverwritingPairStore(InMemoryStateStore):
    """``pair_signal`` writes a fresh checkpoint whatever the row at the waiter's seq holds."""

    async def pair_signal(
        self, token: str, now: datetime, *, holder: str | None = None
    ) -> SignalWaiter | None:
        waiter = self._waiters.get(token)
        if waiter is not None and self._buffered.get(token):
            self._checkpoints.get(waiter.run_id, {}).pop(waiter.seq, None)
        return await super().pair_signal(token, now, holder=holder)


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class MillisecondStore(InMemoryStateStore):
    """Every datetime written loses its microseconds below the millisecond."""

    async def create_run(self, run: RunRecord) -> bool:
        return await super().create_run(
            replace(
                run,
                created_at=_ms(run.created_at),
                updated_at=_ms(run.updated_at),
                wake_at=run.wake_at and _ms(run.wake_at),
                locked_until=run.locked_until and _ms(run.locked_until),
            )
        )

    async def update_run(
        self,
        run_id: str,
        *,
        if_status: Collection[RunStatus] | None = None,
        **patch: Unpack[RunPatch],
    ) -> bool:
        if (wake_at := patch.get("wake_at")) is not None:
            patch["wake_at"] = _ms(wake_at)
        if (updated_at := patch.get("updated_at")) is not None:
            patch["updated_at"] = _ms(updated_at)
        return await super().update_run(run_id, if_status=if_status, **patch)

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
        return await super().try_lock_run(
            run_id, owner, _ms(lease_until), now, namespace=namespace, workflows=workflows
        )

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        truncated = replace(
            checkpoint,
            started_at=_ms(checkpoint.started_at),
            finished_at=checkpoint.finished_at and _ms(checkpoint.finished_at),
            wake_at=checkpoint.wake_at and _ms(checkpoint.wake_at),
        )
        return await super().save_checkpoint(truncated, run_patch, owner=owner, expect=expect)

    async def buffer_signal(self, token: str, payload: JSONValue, now: datetime) -> int:
        return await super().buffer_signal(token, payload, _ms(now))


class LostWakeReleaseStore(InMemoryStateStore):
    """``release_run_lock`` ignores ``wake_requested``: a signal during the run is lost."""

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        await anyio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        if run is None or run.locked_by != owner:
            return None
        run.locked_by, run.locked_until = None, None
        if run.status == "running":
            for checkpoint in checkpoints:
                self._checkpoints.setdefault(run_id, {})[checkpoint.seq] = checkpoint
            for key, value in patch.items():
                setattr(run, key, value)
        run.wake_requested = False
        return run.status


class CheckpointDroppingReleaseStore(InMemoryStateStore):
    """``release_run_lock`` releases but forgets the checkpoints it was given."""

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        return await super().release_run_lock(run_id, owner, **patch)


class ReleaseThenWriteStore(InMemoryStateStore):
    """``release_run_lock`` releases, then writes its checkpoints unfenced: not atomic."""

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        status = await super().release_run_lock(run_id, owner, **patch)
        for checkpoint in checkpoints:
            await self.save_checkpoint(checkpoint)
        return status


class OverwritingCreateStore(InMemoryStateStore):
    """``create_run`` reports a duplicate but overwrites the existing run anyway."""

    async def create_run(self, run: RunRecord) -> bool:
        existed = run.id in self._runs
        self._runs.pop(run.id, None)
        await super().create_run(run)
        return not existed


class CasBlindUpdateStore(InMemoryStateStore):
    """``update_run`` ignores ``if_status``."""

    async def update_run(
        self,
        run_id: str,
        *,
        if_status: Collection[RunStatus] | None = None,
        **patch: Unpack[RunPatch],
    ) -> bool:
        return await super().update_run(run_id, **patch)


class LeakyRecordsStore(InMemoryStateStore):
    """``get_run`` returns the stored record itself, so callers mutate stored state."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)


class LikePrefixStore(InMemoryStateStore):
    """``list_signal_waiters`` matches the prefix like an unescaped, case-blind SQL ``LIKE``."""

    async def list_signal_waiters(self, prefix: str = "") -> list[SignalWaiter]:
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in prefix)
        like = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        return [w for t, w in sorted(self._waiters.items()) if like.match(t)]


class TextSortedPendingStore(InMemoryStateStore):
    """Keeps ``created_at`` as the text it was given and orders pending runs by that text."""

    def __init__(self) -> None:
        super().__init__()
        self._created_text: dict[str, str] = {}

    async def create_run(self, run: RunRecord) -> bool:
        self._created_text.setdefault(run.id, run.created_at.isoformat())
        return await super().create_run(run)

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        pending = await super().list_pending_runs(len(self._runs), namespace, workflows=workflows)
        return sorted(pending, key=lambda run: self._created_text[run.id])[:limit]


class NoTieBreakCursorStore(InMemoryStateStore):
    """``list_runs`` continues after ``created_at`` only, skipping runs that share it."""

    async def list_runs(self, query: RunQuery) -> RunPage:
        if query.cursor is None:
            return await super().list_runs(query)
        created_at, _ = decode_cursor(query.cursor)
        everything = await super().list_runs(replace(query, cursor=None, limit=len(self._runs)))
        rest = [run for run in everything.runs if run.created_at < created_at]
        page = rest[: query.limit]
        more = len(rest) > query.limit
        return RunPage(runs=page, next_cursor=encode_cursor(page[-1]) if more else None)


class NoAdminStore(InMemoryStateStore):
    """Not broken: the ``StateStoreAdmin`` operations fail, as if the store had none of them."""

    def _no_admin(self, name: str) -> AssertionError:
        return AssertionError(f"StateStoreSuite called {name}, which is not on StateStore")

    async def delete_run(self, run_id: str) -> None:
        raise self._no_admin("delete_run")

    async def take_signal_waiter(self, token: str) -> SignalWaiter | None:
        raise self._no_admin("take_signal_waiter")

    async def list_signal_waiters(self, prefix: str = "") -> list[SignalWaiter]:
        raise self._no_admin("list_signal_waiters")

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        raise self._no_admin("take_buffered_signal")
