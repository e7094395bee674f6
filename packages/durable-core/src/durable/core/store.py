"""The ``StateStore`` protocol: everything the engine asks of a database.

A store implements :class:`StateStore`, exactly what the engine and its clients call;
:class:`StateStoreAdmin` holds the operations only operators and tools call (deleting a run,
listing waiters, taking waiters and buffered signals by hand), and a store may offer it too. A
store that can commit a step's own database writes with its checkpoint also implements
:class:`TransactionalStore`, which ``ctx.transaction`` needs. :mod:`durable.conformance` is the
executable definition of all three.
Times are timezone-aware UTC datetimes with microseconds. Payloads are :data:`JSONValue`.
Stores raise only :mod:`durable.core.errors` types (chaining the driver's exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence
    from datetime import datetime

    from typing_extensions import Unpack

    from durable.core._types import CheckpointStatus, JSONValue, RunStatus
    from durable.core.records import (
        BufferedSignal,
        CheckpointRecord,
        RunPage,
        RunPatch,
        RunQuery,
        RunRecord,
        SignalWaiter,
    )

T = TypeVar("T")


@runtime_checkable
class StateStore(Protocol):
    """Durable state of runs, checkpoints, leases and signals."""

    # -- schema ---------------------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the durable tables if they are missing.

        Idempotent; creates only the five ``durable_*`` tables and their indexes and never
        alters or drops anything else.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> bool:
        """Insert ``run`` (and its attribute rows).

        Returns:
            True if it was inserted; False if a run with that id already exists, in which case
            nothing is changed (this is what makes ``start(run_id=...)`` idempotent under races).
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None when no run has that id."""
        ...

    async def update_run(
        self,
        run_id: str,
        *,
        if_status: Collection[RunStatus] | None = None,
        **patch: Unpack[RunPatch],
    ) -> bool:
        """Apply ``patch`` to the run, in one statement.

        With ``if_status`` the patch applies only while the run's status is one of those
        (a compare-and-set). ``updated_at`` is set to now unless the patch sets it.

        Returns:
            True if the patch was applied; False if ``if_status`` did not hold.

        Raises:
            RunNotFound: No run has that id.
        """
        ...

    async def list_runs(self, query: RunQuery) -> RunPage:
        """Runs matching ``query``, newest first (``created_at`` desc, then ``id`` desc)."""
        ...

    # -- checkpoints ----------------------------------------------------------------------------

    async def get_checkpoint(self, run_id: str, seq: int) -> CheckpointRecord | None:
        """The checkpoint at ``(run_id, seq)``, or None."""
        ...

    async def list_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """Every checkpoint of the run, ordered by ``seq``, in one query."""
        ...

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        """Upsert the checkpoint on ``(run_id, seq)`` and apply ``run_patch``, atomically.

        With ``owner`` the write is fenced: it happens only while the run is ``running`` and
        leased by ``owner``. The ownership check is part of the same statement or transaction.

        With ``expect=(status, attempts)`` the write is a compare-and-set: it happens only if a
        checkpoint at ``(run_id, seq)`` exists whose ``status`` and ``attempts`` are exactly
        those (and, with ``owner``, the fence holds too); the row is then replaced by
        ``checkpoint`` and ``run_patch`` applies. The comparison and the write are one atomic
        step: of concurrent writers expecting the same state at most one succeeds, and a write
        expecting a state the row has left (a late result for a step already failed on
        timeout, a re-dispatch of a step already completed) changes nothing. A missing row
        never matches. With ``expect`` and ``run_patch`` but no ``owner``, an expectation that
        does not hold returns False before a missing run is noticed.

        Returns:
            True if written; False if fenced off or the expectation did not hold (nothing
            was written).

        Raises:
            RunNotFound: ``run_patch`` is given without ``owner`` and no run has that id.
        """
        ...

    # -- dispatch -------------------------------------------------------------------------------

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` runs with status ``pending``, oldest ``created_at`` first.

        ``namespace=None`` means every namespace. ``workflows``, when given, keeps only runs
        whose ``(workflow, workflow_version)`` pair is in it (an empty collection matches
        nothing). Every filter applies before the limit: runs the caller cannot execute never
        take the places of runs it can.
        """
        ...

    async def list_incomplete_runs(
        self,
        now: datetime,
        namespace: str | None,
        limit: int = 100,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` runs with status ``running`` whose lease expired at ``now``.

        These are the recovery candidates: their worker died or lost its lease. Oldest
        ``locked_until`` first (a run without a lease before any other), then by ``id``.
        ``namespace`` and ``workflows`` filter as for :meth:`list_pending_runs`, before the
        limit.
        """
        ...

    async def list_due_timers(
        self,
        now: datetime,
        namespace: str | None,
        limit: int,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` ``suspended`` runs whose ``wake_at`` is at or before ``now``.

        Earliest ``wake_at`` first. ``namespace`` and ``workflows`` filter as for
        :meth:`list_pending_runs`, before the limit.
        """
        ...

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
        """Claim the run for ``owner``: exactly one of many concurrent callers wins.

        Succeeds only if the run is ``pending``, or ``running`` with a lease that expired at
        ``now`` (its worker died), or ``suspended`` with ``wake_at <= now`` (a due timer), and
        its lease is free or expired. On success, atomically: ``status='running'``,
        ``locked_by=owner``, ``locked_until=lease_until``, ``wake_requested=False``,
        ``wake_at=None``, and ``recovery_attempts`` grows by one when the run was ``running``.

        A worker claims only what it can execute: with ``namespace`` only a run of that
        namespace, with ``workflows`` only a run whose ``(workflow, workflow_version)`` pair
        is in the collection (an empty collection claims nothing). A run that fails a filter
        is left exactly as it was. The filters are part of the same atomic claim.

        Returns:
            True if ``owner`` now holds the run.
        """
        ...

    async def renew_run_lock(self, run_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend the lease to ``lease_until``, in one statement.

        Only while the run is ``running`` and leased by ``owner``: a run cancelled (or
        otherwise ended) meanwhile is not renewed, so its worker learns at its next renewal
        that it should stop. This also makes renewal a cheap "do I still own a live run"
        check.

        Returns:
            Whether the lease was extended.
        """
        ...

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        """End ``owner``'s turn on the run: clear the lease and apply ``patch``, atomically.

        Only the holder releases: if ``owner`` does not hold the lease nothing changes and
        None is returned. The patch applies only while the run is ``running`` (a run cancelled
        meanwhile stays cancelled). A patch to ``suspended`` on a run whose
        ``wake_requested`` is set yields ``pending`` instead (the wake is not lost), with
        ``wake_at`` cleared. ``wake_requested`` is cleared.

        ``checkpoints`` are upserted in the same atomic step, under the same condition as the
        patch (``owner`` holds the lease and the run is ``running``), as ``save_checkpoint``
        with ``owner`` would: the turn's last records (a sleep's wake time) cost no commit of
        their own.

        Returns:
            The run's status after the release, or None if ``owner`` did not hold the lease.
        """
        ...

    async def wake_run(self, run_id: str) -> bool:
        """Note that something the run waits for has arrived, in one statement.

        A ``suspended`` run becomes ``pending`` (``wake_at`` cleared); a ``running`` one gets
        ``wake_requested`` so its holder's release leaves it ``pending``.

        Returns:
            True if the run is now ``pending`` (the caller should nudge a worker).
        """
        ...

    # -- signals --------------------------------------------------------------------------------

    async def put_signal_waiter(
        self,
        waiter: SignalWaiter,
        *,
        owner: str | None = None,
        checkpoint: CheckpointRecord | None = None,
    ) -> bool:
        """Register the waiter, replacing any waiter on the same token, atomically.

        With ``owner`` the write is fenced as :meth:`save_checkpoint` fences: it happens only
        while the run is ``running`` and leased by ``owner``, so a worker that lost its lease
        leaves no waiter pointing at an old ``seq``. With ``checkpoint`` (the wait's
        ``pending`` ``signal`` checkpoint, with its ``started_at`` and, for a wait with a
        timeout, its ``wake_at``), that checkpoint is upserted in the same transaction, under
        the same fence: both are written or neither.

        Returns:
            True if written (always, without ``owner``); False if fenced off (nothing was
            written).

        Raises:
            ValueError: ``checkpoint`` is not at the waiter's ``(run_id, seq)``.
        """
        ...

    async def remove_signal_waiter(self, waiter: SignalWaiter) -> bool:
        """Delete the waiter only if token, run_id and seq all match. Returns whether it did."""
        ...

    async def buffer_signal(self, token: str, payload: JSONValue, now: datetime) -> int:
        """Append a signal to the token's FIFO buffer; returns its id (increasing)."""
        ...

    async def list_pairable_tokens(self, limit: int) -> list[str]:
        """Up to ``limit`` tokens that have both a waiter and a buffered signal, sorted.

        Such a pair exists only when a sender died between ``buffer_signal`` and
        ``pair_signal``; the engine's poller pairs them so the signal is still delivered.
        """
        ...

    async def pair_signal(
        self, token: str, now: datetime, *, holder: str | None = None
    ) -> SignalWaiter | None:
        """Deliver the token's oldest buffered signal to its waiter, in one transaction.

        If the token has both a waiter and a buffered signal, the waiter is deleted and:

        - if the waiter's run already ended, nothing is delivered (the signal stays
          buffered);
        - if a checkpoint at the waiter's ``(run_id, seq)`` exists and is anything but a
          ``pending`` ``signal`` checkpoint (a stale waiter: that ``seq`` already finished),
          nothing is delivered and nothing is written (the signal stays buffered for a
          genuine waiter);
        - otherwise the signal is taken and the checkpoint written as a ``completed``
          ``signal`` checkpoint named ``token`` whose output is the payload, with
          ``finished_at=now`` and ``wake_at`` cleared. A ``pending`` row keeps its
          ``started_at`` (when the wait began) and its other columns; a missing row is
          created with ``started_at=now`` and ``attempts=1``. The run is woken as
          :meth:`wake_run` does, except that a run leased by ``holder`` is not flagged (the
          holder is the waiter and reads the checkpoint itself).

        Concurrent callers never deliver one signal twice or lose one, and the check of the
        checkpoint and its write are atomic with the delivery.

        Returns:
            The waiter that received the signal, or None.
        """
        ...


@runtime_checkable
class TransactionalStore(Protocol):
    """A store that runs a step's database writes in the transaction of its checkpoint.

    Optional: ``ctx.transaction`` needs it, nothing else does. Added in 0.1.
    """

    async def run_in_transaction(
        self,
        run_id: str,
        owner: str,
        fn: Callable[[object], Awaitable[T]],
        checkpoint: Callable[[T], CheckpointRecord | None],
    ) -> tuple[T, bool]:
        """Run ``fn`` in one database transaction, then write its checkpoint in it, fenced.

        Opens a transaction and calls ``fn(transaction)`` with the store's handle on it
        (for a SQL store, a connection of the user's database; the store documents its
        type). Then ``checkpoint(result)`` gives the record to write: the record is upserted
        in the same transaction, fenced by ``owner`` as :meth:`StateStore.save_checkpoint`
        fences (run ``run_id`` is ``running`` and leased by ``owner``), and the run row stays locked
        from that check until the commit, so no other worker claims the run in between. Both
        commit, or neither does. When ``checkpoint`` returns None (the step failed) or the
        fence does not hold, the transaction rolls back: ``fn``'s writes are undone.

        ``fn`` handles its own failures (it returns them as a value) and must not commit or
        roll back the transaction itself. Nothing else runs in the transaction; it never
        stays open beyond this call.

        Returns:
            ``fn``'s result, and whether the checkpoint was written (and ``fn``'s writes
            committed): False when ``checkpoint`` returned None or the fence did not hold.

        Raises:
            SerializationError: The checkpoint cannot be stored (nothing is committed).
            PayloadTooLargeError: Likewise, for a payload over the store's limit.
            StoreError: The database failed; nothing is committed.
        """
        ...


@runtime_checkable
class StateStoreAdmin(Protocol):
    """Optional operator operations on a store's state; the engine never calls them.

    A third-party store need not implement it; the bundled stores do. Its conformance tests
    are ``durable.conformance.StateStoreAdminSuite``, which a store opts into.

    Added in 0.1.
    """

    async def delete_run(self, run_id: str) -> None:
        """Delete the run with its checkpoints, waiters and attributes. No-op when absent."""
        ...

    async def take_signal_waiter(self, token: str) -> SignalWaiter | None:
        """Delete and return the token's waiter; of concurrent callers exactly one gets it."""
        ...

    async def list_signal_waiters(self, prefix: str = "") -> list[SignalWaiter]:
        """Waiters whose token starts with ``prefix``, ordered by token."""
        ...

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        """Delete and return the token's oldest buffered signal; each is taken exactly once."""
        ...
