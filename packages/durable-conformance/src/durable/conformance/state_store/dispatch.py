"""Dispatch: ``list_pending_runs``, ``list_incomplete_runs`` and ``list_due_timers``."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from durable.conformance._base import SuiteBase
from durable.conformance.state_store._helpers import (
    _A,
    _ALL_STATUSES,
    _LEASE,
    _create,
    _ids,
    _locked,
    _new_id,
    _now,
    _run,
)

if TYPE_CHECKING:
    from datetime import datetime

    from durable.core import RunRecord, RunStatus, StateStore

_MINE = ("billing", "2")
_UNRUNNABLE = (
    ("billing", "1"),
    ("billing", "3"),
    ("shipping", "2"),
    ("billin", "g2"),
    ("2", "billing"),
)
"""(workflow, version) pairs a worker running only ``billing`` version 2 cannot execute: other
versions, another workflow, and pairs that equal ``billing2`` once concatenated or swapped."""


def _of(
    pair: tuple[str, str],
    status: RunStatus = "pending",
    *,
    namespace: str,
    created_at: datetime | None = None,
    wake_at: datetime | None = None,
) -> RunRecord:
    workflow, version = pair
    return _run(
        status,
        namespace=namespace,
        created_at=created_at,
        wake_at=wake_at,
        workflow=workflow,
        version=version,
    )


class DispatchSuite(SuiteBase):
    """``list_pending_runs``, ``list_incomplete_runs`` and ``list_due_timers``."""

    async def test_list_pending_runs_returns_only_pending_oldest_first(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), _now()
        pending = []
        for minutes in (3, 1, 4, 2):
            created = base - timedelta(minutes=minutes)
            pending.append(await _create(durable_store, _run(namespace=ns, created_at=created)))
            for status in _ALL_STATUSES[1:]:
                await _create(durable_store, _run(status, namespace=ns, created_at=created))
        listed = await _ids(durable_store.list_pending_runs(100, ns))
        assert listed == [r.id for r in sorted(pending, key=lambda r: r.created_at)]

    async def test_list_pending_runs_respects_limit(self, durable_store: StateStore) -> None:
        ns, base = _new_id("ns"), _now()
        runs = [
            await _create(durable_store, _run(namespace=ns, created_at=base + timedelta(i)))
            for i in range(5)
        ]
        listed = await _ids(durable_store.list_pending_runs(3, ns))
        assert listed == [run.id for run in runs[:3]]

    async def test_list_pending_runs_filters_namespace_before_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, other, base = _new_id("ns"), _new_id("ns"), _now()
        older = [
            await _create(durable_store, _run(namespace=other, created_at=base - timedelta(i)))
            for i in range(1, 6)
        ]
        mine = [
            await _create(durable_store, _run(namespace=ns, created_at=base + timedelta(i)))
            for i in range(3)
        ]
        assert await _ids(durable_store.list_pending_runs(3, ns)) == [r.id for r in mine]
        assert await _ids(durable_store.list_pending_runs(2, other)) == [
            r.id for r in older[::-1][:2]
        ]

    async def test_list_pending_runs_without_namespace_spans_namespaces(
        self, durable_store: StateStore
    ) -> None:
        base = _now()
        runs = [
            await _create(
                durable_store, _run(namespace=_new_id("ns"), created_at=base - timedelta(days=i))
            )
            for i in (5, 4, 3)
        ]
        listed = await _ids(durable_store.list_pending_runs(100, None))
        assert [run_id for run_id in listed if run_id in {r.id for r in runs}] == [
            r.id for r in runs
        ]

    async def test_list_incomplete_runs_returns_running_runs_with_expired_leases(
        self, durable_store: StateStore
    ) -> None:
        ns, start = _new_id("ns"), _now()
        expired = await _locked(durable_store, _A, start - _LEASE, namespace=ns)
        at_boundary = await _locked(durable_store, _A, start - _LEASE / 2, namespace=ns)
        await _locked(durable_store, _A, start, namespace=ns)
        await _create(durable_store, _run(namespace=ns))
        await _create(durable_store, _run("suspended", namespace=ns, wake_at=start - _LEASE))
        now = start + _LEASE / 2
        listed = set(await _ids(durable_store.list_incomplete_runs(now, ns)))
        assert listed == {expired.id, at_boundary.id}

    async def test_list_incomplete_runs_filters_namespace(self, durable_store: StateStore) -> None:
        ns, other, start = _new_id("ns"), _new_id("ns"), _now()
        mine = await _locked(durable_store, _A, start, namespace=ns)
        theirs = await _locked(durable_store, _A, start, namespace=other)
        later = start + 2 * _LEASE
        assert await _ids(durable_store.list_incomplete_runs(later, ns)) == [mine.id]
        everywhere = set(await _ids(durable_store.list_incomplete_runs(later, None)))
        assert everywhere >= {mine.id, theirs.id}

    async def test_list_due_timers_returns_due_suspended_runs_earliest_first(
        self, durable_store: StateStore
    ) -> None:
        ns, now = _new_id("ns"), _now()
        due = [
            await _create(durable_store, _run("suspended", namespace=ns, wake_at=now - delay))
            for delay in (timedelta(seconds=5), timedelta(0), timedelta(hours=1))
        ]
        await _create(
            durable_store, _run("suspended", namespace=ns, wake_at=now + timedelta(seconds=1))
        )
        await _create(durable_store, _run("suspended", namespace=ns))
        for status in ("pending", "running", "completed", "cancelled"):
            await _create(durable_store, _run(status, namespace=ns, wake_at=now - _LEASE))
        listed = await _ids(durable_store.list_due_timers(now, ns, 100))
        assert listed == [due[2].id, due[0].id, due[1].id]

    async def test_list_due_timers_filters_namespace_before_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, other, now = _new_id("ns"), _new_id("ns"), _now()
        for days in (5, 4, 3):
            wake = now - timedelta(days=days)
            await _create(durable_store, _run("suspended", namespace=other, wake_at=wake))
        mine = [
            await _create(
                durable_store, _run("suspended", namespace=ns, wake_at=now - timedelta(hours=h))
            )
            for h in (3, 2, 1)
        ]
        assert await _ids(durable_store.list_due_timers(now, ns, 2)) == [r.id for r in mine[:2]]

    # -- worker filters: only what the worker can execute, before the limit ---------------------

    async def test_list_pending_runs_filters_workflows_before_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), _now()
        for age, pair in enumerate(_UNRUNNABLE, start=1):
            created = base - timedelta(minutes=age)
            await _create(durable_store, _of(pair, namespace=ns, created_at=created))
        elsewhere = _of(_MINE, namespace=_new_id("ns"), created_at=base - timedelta(days=1))
        await _create(durable_store, elsewhere)
        mine = await _create(durable_store, _of(_MINE, namespace=ns, created_at=base))
        listed = await _ids(durable_store.list_pending_runs(1, ns, workflows={_MINE}))
        assert listed == [mine.id]
        everywhere = await _ids(durable_store.list_pending_runs(1, None, workflows=[_MINE]))
        assert everywhere == [elsewhere.id]
        assert await durable_store.list_pending_runs(10, ns, workflows=()) == []
        assert len(await durable_store.list_pending_runs(10, ns)) == len(_UNRUNNABLE) + 1

    async def test_list_pending_runs_matches_any_listed_pair(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), _now()
        runs = [
            await _create(
                durable_store, _of(pair, namespace=ns, created_at=base + timedelta(seconds=i))
            )
            for i, pair in enumerate([_MINE, *_UNRUNNABLE])
        ]
        wanted = frozenset({_MINE, _UNRUNNABLE[2]})
        listed = await _ids(durable_store.list_pending_runs(10, ns, workflows=wanted))
        assert listed == [runs[0].id, runs[3].id]

    async def test_list_due_timers_filters_workflows_before_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, now = _new_id("ns"), _now()
        for hours, pair in enumerate(_UNRUNNABLE, start=1):
            wake = now - timedelta(hours=hours)
            await _create(durable_store, _of(pair, "suspended", namespace=ns, wake_at=wake))
        mine = await _create(durable_store, _of(_MINE, "suspended", namespace=ns, wake_at=now))
        listed = await _ids(durable_store.list_due_timers(now, ns, 1, workflows=[_MINE]))
        assert listed == [mine.id]
        assert await durable_store.list_due_timers(now, ns, 10, workflows=set()) == []

    async def test_list_incomplete_runs_filters_workflows_before_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, start = _new_id("ns"), _now()
        for minutes, pair in enumerate(_UNRUNNABLE, start=1):
            run = await _create(durable_store, _of(pair, namespace=ns))
            at = start - timedelta(minutes=minutes)
            assert await durable_store.try_lock_run(run.id, _A, at + _LEASE, at)
        mine = await _create(durable_store, _of(_MINE, namespace=ns))
        assert await durable_store.try_lock_run(mine.id, _A, start + _LEASE, start)
        later = start + 2 * _LEASE
        listed = await _ids(durable_store.list_incomplete_runs(later, ns, 1, workflows=[_MINE]))
        assert listed == [mine.id]
        assert await durable_store.list_incomplete_runs(later, ns, 10, workflows=[]) == []

    async def test_list_incomplete_runs_lists_oldest_lease_first_up_to_limit(
        self, durable_store: StateStore
    ) -> None:
        ns, start = _new_id("ns"), _now()
        leased = [
            await _locked(durable_store, _A, start - timedelta(minutes=m), namespace=ns)
            for m in (1, 3, 2)
        ]
        unleased = await _create(durable_store, _run("running", namespace=ns))
        later = start + 2 * _LEASE
        oldest_first = [unleased.id, leased[1].id, leased[2].id, leased[0].id]
        assert await _ids(durable_store.list_incomplete_runs(later, ns, 10)) == oldest_first
        assert await _ids(durable_store.list_incomplete_runs(later, ns, 2)) == oldest_first[:2]
