"""The run state machine: which run a worker may claim, and what each lease operation does.

These are the rules of a run's life, written once. :class:`~durable.core.InMemoryStateStore`
applies them as written here; the SQL stores encode the same rules in the ``WHERE`` and ``CASE``
clauses of their statements. Both are checked against one table of expected outcomes
(``durable.conformance._machine_table``), so the forms cannot drift apart unnoticed.

Shape: predicates (:func:`claimable`, :func:`held`, ...) answer whether an operation applies;
transitions (:func:`claimed`, :func:`released`, ...) return a *new* record built with
:func:`dataclasses.replace` and never change their argument. Nothing here reads a clock or does
I/O: ``now`` is the moment leases and timers are compared with, ``updated_at`` the wall time a
change is stamped with, both passed in. Checking first and changing second is the shape of a
SQL ``UPDATE ... WHERE``; returning a whole record keeps the memory store to one assignment per
transition and gives the tests a record to compare field by field.

The vocabulary:

- A lease is *free* when there is none or its ``locked_until`` is not after ``now`` (the instant
  of expiry already belongs to the past). A timer is *due* likewise, at ``wake_at <= now``.
- A run is *claimable* when its lease is free and it is ``pending``, ``running`` (its worker
  died: the claim recovers it) or ``suspended`` with a due timer; never when it ended. Even the
  lease's own owner cannot claim a live lease again.
- A run is *held* by ``owner`` when it is ``running`` and ``locked_by`` is ``owner``, whether or
  not the lease has expired (nobody else claimed it yet). Renewal and every fenced write require
  it.
- A *release* by the lease holder (any status, live or expired lease) clears the lease and
  ``wake_requested``; its patch applies only while the run is ``running``, and a patch to
  ``suspended`` on a run whose ``wake_requested`` is set yields ``pending`` with ``wake_at``
  cleared (the wake is not lost).
- A *wake* makes a ``suspended`` run ``pending`` (``wake_at`` cleared) and flags a ``running``
  one with ``wake_requested``, unless the waker is the lease holder itself (a paired signal
  the holder reads on its own). A ``pending`` run is already awake; an ended one is left alone.
- A signal pairs with a waiter only while the waiter's run has not ended.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from durable.core._types import TERMINAL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

    from durable.core.records import RunPatch, RunRecord


def lease_free(run: RunRecord, now: datetime) -> bool:
    """Nobody holds a live lease on the run at ``now``: none, or it expired (``<= now``)."""
    return run.locked_until is None or run.locked_until <= now


def timer_due(run: RunRecord, now: datetime) -> bool:
    """The run is ``suspended`` and its ``wake_at`` has come (``<= now``)."""
    return run.status == "suspended" and run.wake_at is not None and run.wake_at <= now


def recoverable(run: RunRecord, now: datetime) -> bool:
    """The run is ``running`` under a free lease: its worker stopped renewing it."""
    return run.status == "running" and lease_free(run, now)


def passes_filters(
    run: RunRecord, namespace: str | None, workflows: Collection[tuple[str, str]] | None
) -> bool:
    """The run passes a worker's filters: its namespace, its ``(workflow, version)`` pairs.

    ``None`` filters nothing; an empty ``workflows`` collection lets no run through.
    """
    return (namespace is None or run.namespace == namespace) and (
        workflows is None or (run.workflow, run.workflow_version) in workflows
    )


def claimable(
    run: RunRecord,
    now: datetime,
    *,
    namespace: str | None = None,
    workflows: Collection[tuple[str, str]] | None = None,
) -> bool:
    """A worker with these filters may claim the run at ``now``.

    The lease is free, the run passes the filters, and it is ``pending``, ``running`` (to
    recover) or ``suspended`` with a due timer.
    """
    if not lease_free(run, now) or not passes_filters(run, namespace, workflows):
        return False
    return run.status in ("pending", "running") or timer_due(run, now)


def claimed(
    run: RunRecord, owner: str, lease_until: datetime, *, updated_at: datetime
) -> RunRecord:
    """The run as a claim by ``owner`` leaves it (the caller checked :func:`claimable`).

    ``running`` under ``owner``'s lease until ``lease_until``, no wake pending (the new turn
    reads everything that arrived), and one more recovery attempt if it was already running.
    """
    return replace(
        run,
        status="running",
        locked_by=owner,
        locked_until=lease_until,
        wake_requested=False,
        wake_at=None,
        recovery_attempts=run.recovery_attempts + (1 if run.status == "running" else 0),
        updated_at=updated_at,
    )


def held(run: RunRecord, owner: str) -> bool:
    """``owner`` holds the running run, live lease or expired: the fence of renewals and writes."""
    return run.status == "running" and run.locked_by == owner


def renewed(run: RunRecord, lease_until: datetime) -> RunRecord:
    """The run with its lease extended to ``lease_until`` (the caller checked :func:`held`)."""
    return replace(run, locked_until=lease_until)


def patched(run: RunRecord, patch: RunPatch, *, updated_at: datetime) -> RunRecord:
    """The run with ``patch`` applied, stamped ``updated_at`` unless the patch sets it."""
    stamped: RunPatch = {"updated_at": updated_at, **patch}
    return replace(run, **stamped)


def released(
    run: RunRecord, owner: str, patch: RunPatch, *, updated_at: datetime
) -> RunRecord | None:
    """The run as ``owner``'s release with ``patch`` leaves it, or None if ``owner`` is no holder.

    Only the lease holder releases, whatever the status and whether or not the lease expired.
    The patch applies only while the run is ``running``; a patch to ``suspended`` on a run with
    ``wake_requested`` yields ``pending`` with ``wake_at`` cleared. The lease and
    ``wake_requested`` are cleared in every case.
    """
    if run.locked_by != owner:
        return None
    if run.status == "running":
        if patch.get("status") == "suspended" and run.wake_requested:
            patch = {**patch, "status": "pending", "wake_at": None}
        run = patched(run, patch, updated_at=updated_at)
    return replace(run, locked_by=None, locked_until=None, wake_requested=False)


def woken(
    run: RunRecord, *, holder: str | None = None, updated_at: datetime
) -> tuple[RunRecord, bool]:
    """The run after something it waits for arrived, and whether it is now ``pending``.

    ``suspended`` becomes ``pending`` with ``wake_at`` cleared (stamped ``updated_at``);
    ``running`` gets ``wake_requested`` unless ``holder`` (the waker) holds its lease;
    ``pending`` and ended runs are left as they are.
    """
    if run.status == "suspended":
        return replace(run, status="pending", wake_at=None, updated_at=updated_at), True
    if run.status == "running" and (holder is None or run.locked_by != holder):
        return replace(run, wake_requested=True), False
    return run, run.status == "pending"


def accepts_signal(run: RunRecord) -> bool:
    """A signal may be delivered to a waiter of this run: the run has not ended."""
    return run.status not in TERMINAL_STATUSES
