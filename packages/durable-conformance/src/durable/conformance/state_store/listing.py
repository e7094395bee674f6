"""Listing: ``list_runs`` filters, ordering and cursor pagination."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from durable.conformance._base import SuiteBase
from durable.conformance.state_store._helpers import (
    _A,
    _ALL_STATUSES,
    _LEASE,
    _assert_same_run,
    _create,
    _get,
    _new_id,
    _now,
    _run,
    _same_json,
)
from durable.core import RunQuery, RunRecord

if TYPE_CHECKING:
    from collections.abc import Iterable

    from durable.core import AttributeValue, RunStatus, StateStore


async def _all_pages(store: StateStore, query: RunQuery) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await store.list_runs(dataclasses.replace(query, cursor=cursor))
        pages.append([run.id for run in page.runs])
        if page.next_cursor is None:
            return pages
        assert page.runs, "a page with a next_cursor must not be empty"
        cursor = page.next_cursor
    raise AssertionError("list_runs pagination did not end after 1000 pages")


def _newest_first(runs: Iterable[RunRecord]) -> list[str]:
    return [run.id for run in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]


class ListingSuite(SuiteBase):
    """``list_runs``: filters, ordering and cursor pagination."""

    async def test_list_runs_orders_newest_first_with_id_breaking_ties(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), _now()
        runs = [
            await _create(durable_store, _run(namespace=ns, created_at=base - timedelta(i // 2)))
            for i in range(7)
        ]
        page = await durable_store.list_runs(RunQuery(namespace=ns))
        assert [run.id for run in page.runs] == _newest_first(runs)
        assert page.next_cursor is None

    async def test_list_runs_filters_by_status(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        by_status = {s: await _create(durable_store, _run(s, namespace=ns)) for s in _ALL_STATUSES}
        cases: list[set[RunStatus]] = [{"pending"}, {"failed", "dead"}, set(_ALL_STATUSES)]
        for wanted in cases:
            query = RunQuery(namespace=ns, statuses=frozenset(wanted))
            got = {run.id for run in (await durable_store.list_runs(query)).runs}
            assert got == {by_status[s].id for s in wanted}, f"statuses={sorted(wanted)}"

    async def test_list_runs_with_empty_statuses_matches_nothing(
        self, durable_store: StateStore
    ) -> None:
        ns = _new_id("ns")
        await _create(durable_store, _run(namespace=ns))
        page = await durable_store.list_runs(RunQuery(namespace=ns, statuses=frozenset()))
        assert (page.runs, page.next_cursor) == ([], None)

    async def test_list_runs_filters_by_workflow(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        wanted = await _create(durable_store, _run(namespace=ns, workflow="checkout"))
        for other in ("refund", "Checkout", "checkout "):
            await _create(durable_store, _run(namespace=ns, workflow=other))
        page = await durable_store.list_runs(RunQuery(namespace=ns, workflow="checkout"))
        assert [run.id for run in page.runs] == [wanted.id]

    async def test_list_runs_filters_by_namespace(self, durable_store: StateStore) -> None:
        ns, other = _new_id("ns"), _new_id("ns")
        mine = {(await _create(durable_store, _run(namespace=ns))).id for _ in range(3)}
        theirs = (await _create(durable_store, _run(namespace=other))).id
        page = await durable_store.list_runs(RunQuery(namespace=ns))
        assert {run.id for run in page.runs} == mine
        everywhere = await durable_store.list_runs(RunQuery())
        assert {run.id for run in everywhere.runs} >= {*mine, theirs}

    async def test_list_runs_tags_filter_is_a_subset_match(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        abc = await _create(durable_store, _run(namespace=ns, tags=["a", "b", "c"]))
        ab = await _create(durable_store, _run(namespace=ns, tags=["a", "b"]))
        none = await _create(durable_store, _run(namespace=ns))
        cases: list[tuple[set[str], set[str]]] = [
            ({"a"}, {abc.id, ab.id}),
            ({"a", "c"}, {abc.id}),
            ({"a", "d"}, set()),
            (set(), {abc.id, ab.id, none.id}),
        ]
        for tags, expected in cases:
            page = await durable_store.list_runs(RunQuery(namespace=ns, tags=frozenset(tags)))
            assert {run.id for run in page.runs} == expected, f"tags={sorted(tags)}"

    async def test_list_runs_tags_match_whole_tags_exactly(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        exact = await _create(durable_store, _run(namespace=ns, tags=["vip"]))
        for near in (["VIP"], ["vip "], ["vipx"], ["xvip"], ["v", "ip"], ["vi%"], ['"vip"']):
            await _create(durable_store, _run(namespace=ns, tags=near))
        page = await durable_store.list_runs(RunQuery(namespace=ns, tags=frozenset({"vip"})))
        assert [run.id for run in page.runs] == [exact.id]

    async def _attribute_matches(
        self, store: StateStore, values: list[AttributeValue], wanted: AttributeValue
    ) -> set[int]:
        ns = _new_id("ns")
        ids = [(await _create(store, _run(namespace=ns, attributes={"k": v}))).id for v in values]
        await _create(store, _run(namespace=ns, attributes={"other": wanted}))
        page = await store.list_runs(RunQuery(namespace=ns, attributes={"k": wanted}))
        found = {run.id for run in page.runs}
        return {i for i, run_id in enumerate(ids) if run_id in found}

    async def test_list_runs_filters_by_string_attribute(self, durable_store: StateStore) -> None:
        values: list[AttributeValue] = ["gold", "silver", "Gold", "gold ", "golden", "", "g%"]
        assert await self._attribute_matches(durable_store, values, "gold") == {0}
        assert await self._attribute_matches(durable_store, values, "") == {5}

    async def test_list_runs_filters_by_int_attribute(self, durable_store: StateStore) -> None:
        values: list[AttributeValue] = [7, 8, -7, 70, 2**40, 0]
        assert await self._attribute_matches(durable_store, values, 7) == {0}
        assert await self._attribute_matches(durable_store, values, 2**40) == {4}
        assert await self._attribute_matches(durable_store, values, 0) == {5}

    async def test_list_runs_filters_by_float_attribute(self, durable_store: StateStore) -> None:
        values: list[AttributeValue] = [0.5, 0.25, 0.1, 1e-7, 1234.5678, -0.5]
        for index, wanted in enumerate(values):
            assert await self._attribute_matches(durable_store, values, wanted) == {index}

    async def test_list_runs_filters_by_bool_attribute(self, durable_store: StateStore) -> None:
        values: list[AttributeValue] = [True, False]
        assert await self._attribute_matches(durable_store, values, True) == {0}
        assert await self._attribute_matches(durable_store, values, False) == {1}

    async def test_list_runs_bool_attributes_do_not_match_numbers(
        self, durable_store: StateStore
    ) -> None:
        values: list[AttributeValue] = [True, False, 1, 0, 1.0]
        assert await self._attribute_matches(durable_store, values, True) == {0}
        assert await self._attribute_matches(durable_store, values, False) == {1}
        assert await self._attribute_matches(durable_store, values, 1) == {2, 4}
        assert await self._attribute_matches(durable_store, values, 0) == {3}

    async def test_list_runs_int_and_float_attributes_compare_by_value(
        self, durable_store: StateStore
    ) -> None:
        values: list[AttributeValue] = [3, 3.0, 3.5]
        assert await self._attribute_matches(durable_store, values, 3) == {0, 1}
        assert await self._attribute_matches(durable_store, values, 3.0) == {0, 1}

    async def test_list_runs_string_attributes_do_not_match_numbers(
        self, durable_store: StateStore
    ) -> None:
        values: list[AttributeValue] = ["1", 1, "true", True]
        assert await self._attribute_matches(durable_store, values, "1") == {0}
        assert await self._attribute_matches(durable_store, values, 1) == {1}
        assert await self._attribute_matches(durable_store, values, "true") == {2}

    async def test_list_runs_requires_every_attribute(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        both = await _create(durable_store, _run(namespace=ns, attributes={"a": "x", "b": 2}))
        await _create(durable_store, _run(namespace=ns, attributes={"a": "x", "b": 3}))
        await _create(durable_store, _run(namespace=ns, attributes={"a": "x"}))
        query = RunQuery(namespace=ns, attributes={"a": "x", "b": 2})
        assert [run.id for run in (await durable_store.list_runs(query)).runs] == [both.id]

    async def test_run_attributes_roundtrip_with_their_types(
        self, durable_store: StateStore
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            "s": "text ✓",
            "empty": "",
            "i": 42,
            "negative": -1,
            "big": 2**53,
            "f": 2.5,
            "whole_float": 3.0,
            "t": True,
            "f_flag": False,
        }
        run = await _create(durable_store, _run(attributes=attributes))
        got = await _get(durable_store, run.id)
        assert _same_json(got.attributes, attributes), got.attributes
        listed = await durable_store.list_runs(RunQuery(attributes={"s": "text ✓"}))
        assert [r.id for r in listed.runs] == [run.id]
        assert _same_json(listed.runs[0].attributes, attributes), listed.runs[0].attributes

    async def test_list_runs_created_after_is_inclusive_and_created_before_exclusive(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), datetime(2031, 5, 17, 12, 0, 0, 250, tzinfo=UTC)
        t = [base + timedelta(minutes=i) for i in range(4)]
        runs = [await _create(durable_store, _run(namespace=ns, created_at=at)) for at in t]
        query = RunQuery(namespace=ns, created_after=t[1], created_before=t[3])
        page = await durable_store.list_runs(query)
        assert [run.id for run in page.runs] == [runs[2].id, runs[1].id]

    async def test_list_runs_by_run_ids_returns_only_those_in_any_namespace(
        self, durable_store: StateStore
    ) -> None:
        runs = [await _create(durable_store, _run(namespace=_new_id("ns"))) for _ in range(4)]
        wanted = frozenset({runs[0].id, runs[2].id, _new_id("absent")})
        page = await durable_store.list_runs(RunQuery(run_ids=wanted))
        assert sorted(run.id for run in page.runs) == sorted([runs[0].id, runs[2].id])
        assert (await durable_store.list_runs(RunQuery(run_ids=frozenset()))).runs == []
        scoped = RunQuery(run_ids=wanted, namespace=runs[0].namespace)
        assert [run.id for run in (await durable_store.list_runs(scoped)).runs] == [runs[0].id]

    async def test_listed_runs_are_complete_records(self, durable_store: StateStore) -> None:
        ns, now = _new_id("ns"), _now()
        run = await _create(
            durable_store,
            _run(namespace=ns, tags=["x", "y"], attributes={"a": 1.5, "b": "z"}, payload=[{}]),
        )
        (listed,) = (await durable_store.list_runs(RunQuery(namespace=ns))).runs
        _assert_same_run(listed, run)
        (pending,) = await durable_store.list_pending_runs(10, ns)
        _assert_same_run(pending, run)
        assert await durable_store.try_lock_run(run.id, _A, now + _LEASE, now)
        later = now + 2 * _LEASE
        (incomplete,) = await durable_store.list_incomplete_runs(later, ns)
        _assert_same_run(incomplete, await _get(durable_store, run.id))
        status = await durable_store.release_run_lock(run.id, _A, status="suspended", wake_at=now)
        assert status == "suspended"
        (due,) = await durable_store.list_due_timers(later, ns, 10)
        _assert_same_run(due, await _get(durable_store, run.id))

    async def test_list_runs_cursor_pages_cover_every_run_once(
        self, durable_store: StateStore
    ) -> None:
        ns, base = _new_id("ns"), _now()
        runs = [
            await _create(
                durable_store, _run(namespace=ns, created_at=base - timedelta(seconds=i // 3))
            )
            for i in range(25)
        ]
        pages = await _all_pages(durable_store, RunQuery(namespace=ns, limit=4))
        assert [len(page) for page in pages] == [4, 4, 4, 4, 4, 4, 1]
        assert [run_id for page in pages for run_id in page] == _newest_first(runs)

    async def test_list_runs_cursor_pages_through_equal_created_at(
        self, durable_store: StateStore
    ) -> None:
        ns, same = _new_id("ns"), datetime(2031, 5, 17, 12, 0, 0, 123456, tzinfo=UTC)
        runs = [
            await _create(durable_store, _run(namespace=ns, created_at=same)) for _ in range(10)
        ]
        pages = await _all_pages(durable_store, RunQuery(namespace=ns, limit=3))
        assert [run_id for page in pages for run_id in page] == _newest_first(runs)

    async def test_list_runs_last_full_page_has_no_cursor(self, durable_store: StateStore) -> None:
        ns = _new_id("ns")
        for _ in range(8):
            await _create(durable_store, _run(namespace=ns))
        pages = await _all_pages(durable_store, RunQuery(namespace=ns, limit=4))
        assert [len(page) for page in pages] == [4, 4]

    async def test_list_runs_cursor_keeps_applying_filters(self, durable_store: StateStore) -> None:
        ns, base = _new_id("ns"), _now()
        matching: list[RunRecord] = []
        for i in range(12):
            wanted = i % 3 == 0
            run = _run(
                "failed" if wanted else "completed",
                namespace=ns,
                created_at=base - timedelta(seconds=i),
                tags=["keep"] if wanted else [],
            )
            await _create(durable_store, run)
            if wanted:
                matching.append(run)
        query = RunQuery(
            namespace=ns, statuses=frozenset({"failed"}), tags=frozenset({"keep"}), limit=2
        )
        pages = await _all_pages(durable_store, query)
        assert [run_id for page in pages for run_id in page] == _newest_first(matching)

    async def test_list_runs_of_no_match_is_an_empty_last_page(
        self, durable_store: StateStore
    ) -> None:
        page = await durable_store.list_runs(RunQuery(namespace=_new_id("ns")))
        assert (page.runs, page.next_cursor) == ([], None)
