"""``StateStoreSuite``: the executable definition of the :class:`~durable.core.StateStore` protocol.

Every test calls the store only through the protocol. The suite covers each method's semantics,
races between many concurrent callers (anyio task groups, repeated with fresh rows), payload and
datetime round trips, and schema idempotency. Subclass it and override ``durable_store``::

    class TestAcmeStore(StateStoreSuite):
        @pytest.fixture
        async def durable_store(self, tmp_path):
            store = AcmeStateStore(tmp_path / "state.db")
            await store.ensure_schema()
            yield store
            await store.aclose()
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar
from uuid import uuid4

import anyio
import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.core import (
    TERMINAL_STATUSES,
    CheckpointRecord,
    RunNotFound,
    RunQuery,
    RunRecord,
    SerializationError,
    SignalWaiter,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from durable.core import (
        AttributeValue,
        CheckpointKind,
        CheckpointStatus,
        ErrorInfo,
        JSONValue,
        RunStatus,
        StateStore,
    )

_T = TypeVar("_T")

_LEASE = timedelta(seconds=30)
_RACE_TIMEOUT = 60.0
_CLOCK_SKEW = timedelta(minutes=5)
_A = "worker-a"
_B = "worker-b"
_ALL_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "dead",
)


# -- helpers ------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid4().hex}"


def _run(
    status: RunStatus = "pending",
    *,
    run_id: str | None = None,
    created_at: datetime | None = None,
    namespace: str = "default",
    workflow: str = "conformance",
    wake_at: datetime | None = None,
    tags: Iterable[str] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    payload: JSONValue = None,
) -> RunRecord:
    created = created_at or _now()
    return RunRecord(
        id=run_id or _new_id(),
        workflow=workflow,
        workflow_version="1",
        status=status,
        input=payload,
        created_at=created,
        updated_at=created,
        namespace=namespace,
        wake_at=wake_at,
        tags=list(tags),
        attributes=dict(attributes or {}),
    )


def _checkpoint(
    run_id: str,
    seq: int,
    *,
    name: str = "step",
    kind: CheckpointKind = "local",
    status: CheckpointStatus = "completed",
    started_at: datetime | None = None,
    payload: JSONValue = None,
    output: JSONValue = None,
) -> CheckpointRecord:
    return CheckpointRecord(
        run_id=run_id,
        seq=seq,
        name=name,
        kind=kind,
        status=status,
        step_id=f"{run_id}:{seq}",
        started_at=started_at or _now(),
        input=payload,
        output=output,
    )


async def _create(store: StateStore, run: RunRecord) -> RunRecord:
    assert await store.create_run(run), f"create_run({run.id!r}) returned False for a new id"
    return run


async def _get(store: StateStore, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None, f"get_run({run_id!r}) returned None for a run that exists"
    return run


async def _locked(
    store: StateStore, owner: str, now: datetime, *, namespace: str = "default"
) -> RunRecord:
    run = await _create(store, _run(namespace=namespace))
    assert await store.try_lock_run(run.id, owner, now + _LEASE, now)
    return run


async def _ids(listing: Awaitable[list[RunRecord]]) -> list[str]:
    return [run.id for run in await listing]


async def _race(contenders: int, attempt: Callable[[int], Awaitable[_T]]) -> list[_T]:
    """Start ``attempt(i)`` in ``contenders`` tasks, release them together, return results."""
    results: dict[int, _T] = {}
    arrived = 0
    everyone_arrived = anyio.Event()
    go = anyio.Event()

    async def contender(index: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == contenders:
            everyone_arrived.set()
        await go.wait()
        results[index] = await attempt(index)

    with anyio.fail_after(_RACE_TIMEOUT):
        async with anyio.create_task_group() as group:
            for index in range(contenders):
                group.start_soon(contender, index)
            await everyone_arrived.wait()
            go.set()
    return [results[index] for index in range(contenders)]


def _same_json(left: object, right: object) -> bool:
    """Equal with the same types all the way down (``True`` is not ``1``, ``2.0`` not ``2``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    return left == right


def _assert_utc(value: datetime | None, what: str) -> None:
    assert value is not None, f"{what} is None"
    assert value.tzinfo is not None, f"{what} is naive: {value!r}"
    assert value.utcoffset() == timedelta(0), f"{what} is not in UTC: {value!r}"


def _normalized(run: RunRecord) -> dict[str, object]:
    fields = dataclasses.asdict(run)
    fields["tags"] = sorted(run.tags)
    return fields


def _assert_same_run(actual: RunRecord | None, expected: RunRecord) -> None:
    assert actual is not None, f"run {expected.id!r} is missing"
    assert _same_json(_normalized(actual), _normalized(expected)), (
        f"stored run differs:\n  got      {actual!r}\n  expected {expected!r}"
    )


def _nested(depth: int) -> JSONValue:
    value: JSONValue = "bottom"
    for level in range(depth):
        value = {"level": level, "next": value} if level % 2 else [level, value]
    return value


async def _payload_roundtrips(store: StateStore, payload: JSONValue) -> dict[str, JSONValue]:
    """Write ``payload`` to every payload column and read each back."""
    now = _now()
    run = await _create(store, _run("suspended", payload=payload))
    assert await store.update_run(run.id, output=payload)
    assert await store.save_checkpoint(_checkpoint(run.id, 1, payload=payload, output=payload))
    token = _new_id("token")
    await store.buffer_signal(token, payload, now)
    signal = await store.take_buffered_signal(token)
    await store.put_signal_waiter(SignalWaiter(token, run.id, 2))
    await store.buffer_signal(token, payload, now)
    assert await store.pair_signal(token, now) is not None
    stored = await _get(store, run.id)
    checkpoint = await store.get_checkpoint(run.id, 1)
    listed = await store.list_checkpoints(run.id)
    paired = await store.get_checkpoint(run.id, 2)
    assert signal is not None
    assert checkpoint is not None
    assert paired is not None
    assert [cp.seq for cp in listed] == [1, 2]
    return {
        "run.input": stored.input,
        "run.output": stored.output,
        "checkpoint.input": checkpoint.input,
        "checkpoint.output": checkpoint.output,
        "list_checkpoints output": listed[0].output,
        "buffered signal payload": signal.payload,
        "pair_signal checkpoint output": paired.output,
    }


async def _assert_payload_roundtrips(store: StateStore, payload: JSONValue) -> None:
    values = await _payload_roundtrips(store, payload)
    wrong = sorted(where for where, value in values.items() if not _same_json(value, payload))
    assert not wrong, f"payload changed in {', '.join(wrong)}: {values[wrong[0]]!r:.300}"


async def _datetime_roundtrips(store: StateStore, when: datetime) -> dict[str, datetime | None]:
    """Write ``when`` to every datetime column and read each back."""
    namespace = _new_id("ns")
    timer = await _create(
        store, _run("suspended", created_at=when, wake_at=when, namespace=namespace)
    )
    leased = await _create(store, _run())
    now = _now()
    assert await store.try_lock_run(leased.id, _A, when, now)
    patched = await _create(store, _run())
    assert await store.update_run(patched.id, wake_at=when, updated_at=when)
    checkpoint = dataclasses.replace(
        _checkpoint(timer.id, 1, started_at=when), wake_at=when, finished_at=when
    )
    assert await store.save_checkpoint(checkpoint)
    token = _new_id("token")
    await store.buffer_signal(token, None, when)
    signal = await store.take_buffered_signal(token)
    assert signal is not None
    got_timer = await _get(store, timer.id)
    got_checkpoint = await store.get_checkpoint(timer.id, 1)
    assert got_checkpoint is not None
    due = await store.list_due_timers(when, namespace, 10)
    assert [run.id for run in due] == [timer.id], "list_due_timers(now=when) missed the timer"
    return {
        "run.created_at": got_timer.created_at,
        "run.updated_at": got_timer.updated_at,
        "run.wake_at": got_timer.wake_at,
        "run.locked_until": (await _get(store, leased.id)).locked_until,
        "update_run wake_at": (await _get(store, patched.id)).wake_at,
        "update_run updated_at": (await _get(store, patched.id)).updated_at,
        "checkpoint.started_at": got_checkpoint.started_at,
        "checkpoint.finished_at": got_checkpoint.finished_at,
        "checkpoint.wake_at": got_checkpoint.wake_at,
        "buffered signal created_at": signal.created_at,
        "list_due_timers wake_at": due[0].wake_at,
    }


async def _assert_datetime_roundtrips(store: StateStore, when: datetime) -> None:
    values = await _datetime_roundtrips(store, when)
    wrong = {where: value for where, value in values.items() if value != when}
    assert not wrong, f"datetimes changed (wrote {when.isoformat()}): {wrong!r}"
    for where, value in values.items():
        _assert_utc(value, where)


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


class StateStoreSuite(SuiteBase):
    """Conformance tests for a :class:`~durable.core.StateStore`.

    Subclass it (its name keeps pytest from collecting it on its own), override the
    ``durable_store`` fixture to yield a fresh, empty store whose schema exists, and run pytest.
    See :class:`~durable.conformance.SuiteOptions` and ``expected_failures`` for what a store
    may declare.
    """

    # -- schema ---------------------------------------------------------------------------------

    async def test_ensure_schema_twice_keeps_existing_data(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run(payload={"kept": True}))
        await durable_store.ensure_schema()
        await durable_store.ensure_schema()
        _assert_same_run(await durable_store.get_run(run.id), run)
        await _create(durable_store, _run())

    # -- create_run / get_run -------------------------------------------------------------------

    async def test_create_run_then_get_run_returns_every_field(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = RunRecord(
            id=_new_id(),
            workflow="checkout",
            workflow_version="7",
            status="failed",
            input={"order": 42, "items": ["a", "b"]},
            created_at=now - timedelta(hours=1),
            updated_at=now,
            namespace=_new_id("ns"),
            output={"partial": [1, 2]},
            error={"type": "ValueError", "message": "bad order", "code": "E42", "retryable": False},
            wake_at=now + timedelta(days=3),
            locked_by="worker-z",
            locked_until=now + timedelta(minutes=1),
            recovery_attempts=2,
            tags=["vip", "eu"],
            attributes={"customer": "acme", "total": 99, "ratio": 0.25, "rush": True},
        )
        await _create(durable_store, run)
        got = await durable_store.get_run(run.id)
        _assert_same_run(got, run)
        assert got is not None
        for name in ("created_at", "updated_at", "wake_at", "locked_until"):
            _assert_utc(getattr(got, name), f"run.{name}")

    async def test_get_run_of_unknown_id_returns_none(self, durable_store: StateStore) -> None:
        assert await durable_store.get_run(_new_id()) is None

    async def test_create_run_with_existing_id_returns_false_and_changes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(
            durable_store, _run(tags=["first"], attributes={"who": "first"}, payload=1)
        )
        again = _run(
            "completed",
            run_id=run.id,
            workflow="other",
            tags=["second"],
            attributes={"who": "second", "extra": 1},
            payload=2,
        )
        assert await durable_store.create_run(again) is False
        _assert_same_run(await durable_store.get_run(run.id), run)
        page = await durable_store.list_runs(RunQuery(attributes={"who": "second"}))
        assert page.runs == []

    @needs("race_repeats")
    async def test_one_of_many_concurrent_creates_of_one_id_wins(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            run_id = _new_id()
            created = await _race(
                self.options.concurrency,
                lambda i: durable_store.create_run(_run(run_id=run_id, payload=i)),
            )
            winners = [i for i, won in enumerate(created) if won]
            assert len(winners) == 1, f"{len(winners)} concurrent create_run calls returned True"
            assert (await _get(durable_store, run_id)).input == winners[0]

        for _ in range(self.options.race_repeats):
            await one_round()

    async def test_records_are_detached_from_stored_state(self, durable_store: StateStore) -> None:
        items: list[JSONValue] = [1]
        run = _run(tags=["a"], attributes={"k": "v"}, payload={"items": items})
        await _create(durable_store, run)
        run.tags.append("late")
        items.append(2)
        got = await _get(durable_store, run.id)
        assert got.tags == ["a"]
        assert got.input == {"items": [1]}
        got.tags.append("mutated")
        got.attributes["mutated"] = True
        assert isinstance(got.input, dict)
        got.input["mutated"] = True
        again = await _get(durable_store, run.id)
        assert (again.tags, again.attributes, again.input) == (["a"], {"k": "v"}, {"items": [1]})
        output: list[JSONValue] = ["x"]
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1, output=output))
        output.append("late")
        checkpoint = await durable_store.get_checkpoint(run.id, 1)
        assert checkpoint is not None
        assert checkpoint.output == ["x"]
        assert isinstance(checkpoint.output, list)
        checkpoint.output.append("mutated")
        assert [cp.output for cp in await durable_store.list_checkpoints(run.id)] == [["x"]]

    async def test_run_ids_compare_exactly(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run(payload="lower"))
        for variant in (run.id.upper(), f"{run.id} ", f" {run.id}"):
            assert await durable_store.get_run(variant) is None, f"get_run({variant!r}) matched"
        upper = await _create(durable_store, _run(run_id=run.id.upper(), payload="upper"))
        assert (await _get(durable_store, run.id)).input == "lower"
        assert (await _get(durable_store, upper.id)).input == "upper"

    # -- update_run -----------------------------------------------------------------------------

    async def test_update_run_applies_every_patch_key(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run(tags=["old"], attributes={"old": 1}))
        wake = _now() + timedelta(hours=2)
        applied = await durable_store.update_run(
            run.id,
            status="suspended",
            output={"done": [1, 2]},
            error={"type": "Timeout", "message": "slow"},
            wake_at=wake,
            recovery_attempts=3,
            tags=["new", "tags"],
            attributes={"new": "yes"},
        )
        assert applied is True
        got = await _get(durable_store, run.id)
        assert got.status == "suspended"
        assert got.output == {"done": [1, 2]}
        assert got.error == {"type": "Timeout", "message": "slow"}
        assert got.wake_at == wake
        assert got.recovery_attempts == 3
        assert sorted(got.tags) == ["new", "tags"]
        assert got.attributes == {"new": "yes"}

    async def test_update_run_sets_updated_at_to_now_unless_patched(
        self, durable_store: StateStore
    ) -> None:
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        run = await _create(durable_store, dataclasses.replace(_run(), updated_at=long_ago))
        before = _now()
        assert await durable_store.update_run(run.id, output="x")
        after = _now()
        updated = (await _get(durable_store, run.id)).updated_at
        _assert_utc(updated, "updated_at set by update_run")
        assert before - _CLOCK_SKEW <= updated <= after + _CLOCK_SKEW
        explicit = datetime(2030, 6, 1, 12, 0, 0, 5, tzinfo=UTC)
        assert await durable_store.update_run(run.id, output="y", updated_at=explicit)
        assert (await _get(durable_store, run.id)).updated_at == explicit

    async def test_update_run_with_none_clears_nullable_columns(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run("suspended", wake_at=_now()))
        assert await durable_store.update_run(
            run.id, output={"x": 1}, error={"type": "E", "message": "m"}
        )
        assert await durable_store.update_run(run.id, output=None, error=None, wake_at=None)
        got = await _get(durable_store, run.id)
        assert (got.output, got.error, got.wake_at) == (None, None, None)

    async def test_update_run_leaves_unpatched_columns_unchanged(
        self, durable_store: StateStore
    ) -> None:
        wake = _now() + timedelta(minutes=5)
        run = await _create(
            durable_store,
            _run("suspended", wake_at=wake, tags=["t"], attributes={"a": 1}, payload=[1]),
        )
        assert await durable_store.update_run(
            run.id, output="o", error={"type": "E", "message": ""}
        )
        assert await durable_store.update_run(run.id, status="pending")
        got = await _get(durable_store, run.id)
        expected = dataclasses.replace(
            run,
            status="pending",
            output="o",
            error={"type": "E", "message": ""},
            updated_at=got.updated_at,
        )
        _assert_same_run(got, expected)

    async def test_update_run_attributes_replace_the_whole_set(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run(attributes={"a": 1, "b": "x"}))
        assert await durable_store.update_run(run.id, attributes={"c": True})
        assert (await _get(durable_store, run.id)).attributes == {"c": True}
        assert (await durable_store.list_runs(RunQuery(attributes={"a": 1}))).runs == []
        found = await durable_store.list_runs(RunQuery(attributes={"c": True}))
        assert [r.id for r in found.runs] == [run.id]

    async def test_update_run_if_status_applies_only_from_listed_statuses(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run())
        refused = await durable_store.update_run(
            run.id, if_status={"running", "suspended"}, status="completed", output="no"
        )
        assert refused is False
        got = await _get(durable_store, run.id)
        assert (got.status, got.output) == ("pending", None)
        applied = await durable_store.update_run(
            run.id, if_status=("pending", "suspended"), status="cancelled", output="yes"
        )
        assert applied is True
        got = await _get(durable_store, run.id)
        assert (got.status, got.output) == ("cancelled", "yes")

    async def test_update_run_of_unknown_id_raises_run_not_found(
        self, durable_store: StateStore
    ) -> None:
        with pytest.raises(RunNotFound):
            await durable_store.update_run(_new_id(), status="failed")
        with pytest.raises(RunNotFound):
            await durable_store.update_run(_new_id(), if_status={"pending"}, status="failed")

    @needs("race_repeats")
    async def test_one_of_many_concurrent_if_status_updates_wins(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            run = await _create(durable_store, _run())
            applied = await _race(
                self.options.concurrency,
                lambda i: durable_store.update_run(
                    run.id, if_status={"pending"}, status="running", output=i
                ),
            )
            winners = [i for i, won in enumerate(applied) if won]
            assert len(winners) == 1, f"{len(winners)} compare-and-set updates applied"
            assert (await _get(durable_store, run.id)).output == winners[0]

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- delete_run -----------------------------------------------------------------------------

    async def test_delete_run_removes_checkpoints_waiters_and_attributes(
        self, durable_store: StateStore
    ) -> None:
        marker = _new_id("attr")
        run = await _create(durable_store, _run(tags=[marker], attributes={marker: "x"}))
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1))
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 2))
        token = _new_id("token")
        await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 3))
        await durable_store.delete_run(run.id)
        assert await durable_store.get_run(run.id) is None
        assert await durable_store.list_checkpoints(run.id) == []
        assert await durable_store.get_checkpoint(run.id, 1) is None
        assert await durable_store.list_signal_waiters(token) == []
        assert await durable_store.take_signal_waiter(token) is None
        assert (await durable_store.list_runs(RunQuery(attributes={marker: "x"}))).runs == []
        assert (await durable_store.list_runs(RunQuery(tags=frozenset({marker})))).runs == []

    async def test_delete_run_keeps_other_runs_and_buffered_signals(
        self, durable_store: StateStore
    ) -> None:
        doomed = await _create(durable_store, _run())
        kept = await _create(durable_store, _run(attributes={"k": 1}))
        token, kept_token = _new_id("token"), _new_id("token")
        await durable_store.put_signal_waiter(SignalWaiter(token, doomed.id, 1))
        await durable_store.put_signal_waiter(SignalWaiter(kept_token, kept.id, 1))
        await durable_store.buffer_signal(token, "early", _now())
        assert await durable_store.save_checkpoint(_checkpoint(kept.id, 1))
        await durable_store.delete_run(doomed.id)
        _assert_same_run(await durable_store.get_run(kept.id), kept)
        assert [cp.seq for cp in await durable_store.list_checkpoints(kept.id)] == [1]
        assert await durable_store.take_signal_waiter(kept_token) is not None
        signal = await durable_store.take_buffered_signal(token)
        assert signal is not None
        assert signal.payload == "early"

    async def test_delete_run_of_unknown_id_is_a_noop(self, durable_store: StateStore) -> None:
        await durable_store.delete_run(_new_id())

    async def test_deleted_run_id_can_be_reused_without_leftovers(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run(tags=["old"], attributes={"old": 1}))
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1))
        await durable_store.delete_run(run.id)
        fresh = await _create(durable_store, _run(run_id=run.id, payload="fresh"))
        _assert_same_run(await durable_store.get_run(run.id), fresh)
        assert await durable_store.list_checkpoints(run.id) == []

    # -- list_runs ------------------------------------------------------------------------------

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

    # -- checkpoints ----------------------------------------------------------------------------

    async def test_save_checkpoint_then_get_checkpoint_returns_every_field(
        self, durable_store: StateStore
    ) -> None:
        run, now = await _create(durable_store, _run()), _now()
        checkpoint = CheckpointRecord(
            run_id=run.id,
            seq=4,
            name="payments.charge-card",
            kind="remote",
            status="failed",
            step_id="step-" + uuid4().hex,
            started_at=now,
            input={"amount": 100, "currency": "EUR"},
            output=None,
            error={"type": "CardDeclined", "message": "no", "code": "D1", "retryable": True},
            attempts=3,
            wake_at=now + timedelta(minutes=10),
            finished_at=now + timedelta(seconds=2),
        )
        assert await durable_store.save_checkpoint(checkpoint) is True
        got = await durable_store.get_checkpoint(run.id, 4)
        assert got == checkpoint
        assert got is not None
        for name in ("started_at", "wake_at", "finished_at"):
            _assert_utc(getattr(got, name), f"checkpoint.{name}")
        assert await durable_store.list_checkpoints(run.id) == [checkpoint]

    async def test_get_checkpoint_of_unknown_key_returns_none(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run())
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1))
        assert await durable_store.get_checkpoint(run.id, 2) is None
        assert await durable_store.get_checkpoint(_new_id(), 1) is None

    async def test_list_checkpoints_orders_by_numeric_seq(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run())
        kinds: list[tuple[int, CheckpointKind, CheckpointStatus]] = [
            (10, "signal", "completed"),
            (2, "sleep", "pending"),
            (1, "local", "completed"),
            (3, "remote", "running"),
            (0, "local", "failed"),
        ]
        for seq, kind, status in kinds:
            assert await durable_store.save_checkpoint(
                _checkpoint(run.id, seq, kind=kind, status=status)
            )
        listed = await durable_store.list_checkpoints(run.id)
        assert [(cp.seq, cp.kind, cp.status) for cp in listed] == sorted(kinds)

    async def test_list_checkpoints_of_unknown_run_is_empty(
        self, durable_store: StateStore
    ) -> None:
        assert await durable_store.list_checkpoints(_new_id()) == []

    async def test_save_checkpoint_upserts_on_run_id_and_seq(
        self, durable_store: StateStore
    ) -> None:
        run, other = await _create(durable_store, _run()), await _create(durable_store, _run())
        first = _checkpoint(run.id, 1, status="pending", payload={"try": 1})
        assert await durable_store.save_checkpoint(first)
        assert await durable_store.save_checkpoint(_checkpoint(other.id, 1, output="other"))
        second = dataclasses.replace(
            first, status="completed", output={"ok": True}, attempts=2, finished_at=_now()
        )
        assert await durable_store.save_checkpoint(second)
        assert await durable_store.list_checkpoints(run.id) == [second]
        assert [cp.output for cp in await durable_store.list_checkpoints(other.id)] == ["other"]

    async def test_save_checkpoint_applies_run_patch(self, durable_store: StateStore) -> None:
        run, wake = await _create(durable_store, _run()), _now() + timedelta(hours=1)
        checkpoint = dataclasses.replace(
            _checkpoint(run.id, 1, kind="sleep", status="pending"), wake_at=wake
        )
        assert await durable_store.save_checkpoint(
            checkpoint, {"status": "suspended", "wake_at": wake, "output": "parked"}
        )
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at, got.output) == ("suspended", wake, "parked")
        assert await durable_store.get_checkpoint(run.id, 1) == checkpoint

    async def test_save_checkpoint_with_owner_writes_while_owner_holds_running_run(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        checkpoint = _checkpoint(run.id, 1, output="mine")
        assert await durable_store.save_checkpoint(checkpoint, {"output": "patched"}, owner=_A)
        assert await durable_store.get_checkpoint(run.id, 1) == checkpoint
        assert (await _get(durable_store, run.id)).output == "patched"

    async def test_save_checkpoint_with_other_owner_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        original = _checkpoint(run.id, 1, status="pending", output="original")
        assert await durable_store.save_checkpoint(original, owner=_A)
        stolen = _checkpoint(run.id, 1, output="stolen")
        assert await durable_store.save_checkpoint(stolen, {"output": "stolen"}, owner=_B) is False
        new = _checkpoint(run.id, 2, output="stolen")
        assert await durable_store.save_checkpoint(new, {"status": "failed"}, owner=_B) is False
        assert await durable_store.list_checkpoints(run.id) == [original]
        got = await _get(durable_store, run.id)
        assert (got.status, got.output, got.locked_by) == ("running", None, _A)

    async def test_save_checkpoint_with_owner_on_non_running_run_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        pending = await _create(durable_store, _run())
        assert await durable_store.save_checkpoint(_checkpoint(pending.id, 1), owner=_A) is False
        cancelled = await _locked(durable_store, _A, _now())
        assert await durable_store.update_run(cancelled.id, status="cancelled")
        fenced = await durable_store.save_checkpoint(
            _checkpoint(cancelled.id, 1), {"output": "late"}, owner=_A
        )
        assert fenced is False
        assert await durable_store.list_checkpoints(pending.id) == []
        assert await durable_store.list_checkpoints(cancelled.id) == []
        assert (await _get(durable_store, cancelled.id)).output is None

    async def test_save_checkpoint_with_owner_after_release_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        assert await durable_store.release_run_lock(run.id, _A, status="pending") == "pending"
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1), owner=_A) is False
        assert await durable_store.list_checkpoints(run.id) == []

    async def test_save_checkpoint_with_owner_on_unknown_run_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run_id = _new_id()
        assert await durable_store.save_checkpoint(_checkpoint(run_id, 1), owner=_A) is False
        assert await durable_store.list_checkpoints(run_id) == []

    @needs("race_repeats")
    async def test_fenced_saves_racing_a_takeover_never_land_after_it(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            start = _now()
            run = await _locked(durable_store, _A, start)
            later = start + 2 * _LEASE
            seen_by_taker: set[int] = set()
            taker = self.options.concurrency // 2

            async def contend(i: int) -> bool:
                if i == taker:
                    won = await durable_store.try_lock_run(run.id, _B, later + _LEASE, later)
                    cps = await durable_store.list_checkpoints(run.id)
                    seen_by_taker.update(cp.seq for cp in cps)
                    return won
                checkpoint = _checkpoint(run.id, i, output=i)
                return await durable_store.save_checkpoint(checkpoint, {"output": i}, owner=_A)

            results = await _race(self.options.concurrency, contend)
            assert results[taker], "the takeover of an expired lease failed"
            written = {cp.seq for cp in await durable_store.list_checkpoints(run.id)}
            assert written == {i for i, ok in enumerate(results) if i != taker and ok}, (
                "save_checkpoint's return value disagrees with what was written"
            )
            assert written == seen_by_taker, (
                f"fenced writes landed after the takeover: {sorted(written - seen_by_taker)}"
            )
            output = (await _get(durable_store, run.id)).output
            assert output is None if not written else output in written, (
                f"the run patch {output!r} does not match a written checkpoint"
            )

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- dispatch -------------------------------------------------------------------------------

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

    # -- leases ---------------------------------------------------------------------------------

    async def test_try_lock_run_claims_pending_run(self, durable_store: StateStore) -> None:
        run, now = await _create(durable_store, _run()), _now()
        assert await durable_store.try_lock_run(run.id, _A, now + _LEASE, now) is True
        got = await _get(durable_store, run.id)
        assert (got.status, got.locked_by, got.locked_until) == ("running", _A, now + _LEASE)
        assert (got.recovery_attempts, got.wake_requested, got.wake_at) == (0, False, None)

    async def test_try_lock_run_fails_while_lease_is_live(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        soon = now + _LEASE / 2
        assert await durable_store.try_lock_run(run.id, _B, soon + _LEASE, soon) is False
        got = await _get(durable_store, run.id)
        assert (got.locked_by, got.locked_until, got.recovery_attempts) == (_A, now + _LEASE, 0)

    async def test_try_lock_run_takes_over_expired_lease_and_counts_recovery(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        later = now + 2 * _LEASE
        assert await durable_store.try_lock_run(run.id, _B, later + _LEASE, later) is True
        got = await _get(durable_store, run.id)
        assert (got.status, got.locked_by, got.locked_until) == ("running", _B, later + _LEASE)
        assert got.recovery_attempts == 1
        latest = later + 2 * _LEASE
        assert await durable_store.try_lock_run(run.id, "worker-c", latest + _LEASE, latest)
        assert (await _get(durable_store, run.id)).recovery_attempts == 2

    async def test_lease_expires_at_its_lease_until(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        boundary = now + _LEASE
        assert await _ids(durable_store.list_incomplete_runs(boundary, run.namespace)) == [run.id]
        assert await durable_store.try_lock_run(run.id, _B, boundary + _LEASE, boundary) is True

    async def test_try_lock_run_claims_due_suspended_run(self, durable_store: StateStore) -> None:
        now = _now()
        for wake in (now - timedelta(minutes=1), now):
            run = await _create(durable_store, _run("suspended", wake_at=wake))
            assert await durable_store.try_lock_run(run.id, _A, now + _LEASE, now) is True
            got = await _get(durable_store, run.id)
            assert (got.status, got.locked_by, got.wake_at) == ("running", _A, None)
            assert got.recovery_attempts == 0

    async def test_try_lock_run_refuses_suspended_run_not_due(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        for wake in (now + timedelta(microseconds=1), None):
            run = await _create(durable_store, _run("suspended", wake_at=wake))
            assert await durable_store.try_lock_run(run.id, _A, now + _LEASE, now) is False
            got = await _get(durable_store, run.id)
            assert (got.status, got.locked_by, got.wake_at) == ("suspended", None, wake)

    async def test_try_lock_run_refuses_terminal_runs(self, durable_store: StateStore) -> None:
        now = _now()
        for status in sorted(TERMINAL_STATUSES):
            run = await _create(durable_store, _run(status, wake_at=now - _LEASE))
            assert await durable_store.try_lock_run(run.id, _A, now + _LEASE, now) is False
            got = await _get(durable_store, run.id)
            assert (got.status, got.locked_by) == (status, None)

    async def test_try_lock_run_of_unknown_run_fails(self, durable_store: StateStore) -> None:
        now = _now()
        assert await durable_store.try_lock_run(_new_id(), _A, now + _LEASE, now) is False

    async def test_try_lock_run_refuses_pending_run_with_live_lease(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.update_run(run.id, status="pending")
        assert await durable_store.try_lock_run(run.id, _B, now + _LEASE, now) is False
        assert (await _get(durable_store, run.id)).locked_by == _A

    async def test_try_lock_run_clears_wake_requested(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.wake_run(run.id) is False
        assert (await _get(durable_store, run.id)).wake_requested is True
        later = now + 2 * _LEASE
        assert await durable_store.try_lock_run(run.id, _B, later + _LEASE, later)
        assert (await _get(durable_store, run.id)).wake_requested is False

    @needs("race_repeats")
    async def test_one_of_many_concurrent_lockers_wins(self, durable_store: StateStore) -> None:
        async def one_round() -> None:
            run, now = await _create(durable_store, _run()), _now()
            won = await _race(
                self.options.concurrency,
                lambda i: durable_store.try_lock_run(run.id, f"worker-{i}", now + _LEASE, now),
            )
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"{len(winners)} of {len(won)} lockers won"
            got = await _get(durable_store, run.id)
            assert (got.locked_by, got.recovery_attempts) == (f"worker-{winners[0]}", 0)

        for _ in range(self.options.race_repeats):
            await one_round()

    @needs("race_repeats")
    async def test_one_of_many_concurrent_recoveries_wins_and_counts_once(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            start = _now()
            run = await _locked(durable_store, "dead-worker", start)
            now = start + 2 * _LEASE
            won = await _race(
                self.options.concurrency,
                lambda i: durable_store.try_lock_run(run.id, f"worker-{i}", now + _LEASE, now),
            )
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"{len(winners)} of {len(won)} recoveries won"
            got = await _get(durable_store, run.id)
            assert (got.locked_by, got.recovery_attempts) == (f"worker-{winners[0]}", 1)

        for _ in range(self.options.race_repeats):
            await one_round()

    async def test_renew_run_lock_extends_holders_lease(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.renew_run_lock(run.id, _A, now + 3 * _LEASE) is True
        assert (await _get(durable_store, run.id)).locked_until == now + 3 * _LEASE
        later = now + 2 * _LEASE
        assert await durable_store.try_lock_run(run.id, _B, later + _LEASE, later) is False

    async def test_renew_run_lock_by_non_holder_fails(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.renew_run_lock(run.id, _B, now + 3 * _LEASE) is False
        got = await _get(durable_store, run.id)
        assert (got.locked_by, got.locked_until) == (_A, now + _LEASE)

    async def test_renew_run_lock_of_unknown_or_released_run_fails(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        assert await durable_store.renew_run_lock(_new_id(), _A, now + _LEASE) is False
        run = await _locked(durable_store, _A, now)
        assert await durable_store.release_run_lock(run.id, _A, status="suspended") == "suspended"
        assert await durable_store.renew_run_lock(run.id, _A, now + 3 * _LEASE) is False
        got = await _get(durable_store, run.id)
        assert (got.locked_by, got.locked_until) == (None, None)

    @needs("race_repeats")
    async def test_renew_racing_takeovers_never_both_succeed(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            start = _now()
            run = await _locked(durable_store, _A, start)
            now = start + 2 * _LEASE

            async def contend(i: int) -> bool:
                if i == 0:
                    return await durable_store.renew_run_lock(run.id, _A, now + 2 * _LEASE)
                return await durable_store.try_lock_run(run.id, f"worker-{i}", now + _LEASE, now)

            won = await _race(self.options.concurrency, contend)
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"renewal and takeover both succeeded: {winners}"
            got = await _get(durable_store, run.id)
            if winners == [0]:
                assert (got.locked_by, got.locked_until) == (_A, now + 2 * _LEASE)
            else:
                assert (got.locked_by, got.locked_until) == (f"worker-{winners[0]}", now + _LEASE)

        for _ in range(self.options.race_repeats):
            await one_round()

    async def test_release_run_lock_clears_lease_and_applies_patch(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        wake = now + timedelta(hours=1)
        status = await durable_store.release_run_lock(run.id, _A, status="suspended", wake_at=wake)
        assert status == "suspended"
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at, got.locked_by, got.locked_until) == (
            "suspended",
            wake,
            None,
            None,
        )
        done = await _locked(durable_store, _A, now)
        status = await durable_store.release_run_lock(done.id, _A, status="completed", output=[1])
        assert status == "completed"
        got = await _get(durable_store, done.id)
        assert (got.status, got.output, got.locked_by) == ("completed", [1], None)

    async def test_release_run_lock_by_non_holder_changes_nothing(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.release_run_lock(run.id, _B, status="completed") is None
        got = await _get(durable_store, run.id)
        assert (got.status, got.locked_by, got.locked_until) == ("running", _A, now + _LEASE)

    async def test_release_run_lock_of_unknown_run_returns_none(
        self, durable_store: StateStore
    ) -> None:
        assert await durable_store.release_run_lock(_new_id(), _A, status="completed") is None

    async def test_release_to_suspended_with_wake_requested_leaves_run_pending(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.wake_run(run.id) is False
        wake = now + timedelta(hours=1)
        status = await durable_store.release_run_lock(run.id, _A, status="suspended", wake_at=wake)
        assert status == "pending"
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at, got.wake_requested) == ("pending", None, False)
        assert (got.locked_by, got.locked_until) == (None, None)

    async def test_release_to_terminal_status_with_wake_requested_keeps_it(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        assert await durable_store.wake_run(run.id) is False
        assert await durable_store.release_run_lock(run.id, _A, status="completed") == "completed"
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_requested, got.locked_by) == ("completed", False, None)

    async def test_release_run_lock_keeps_status_set_while_held(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        assert await durable_store.update_run(run.id, status="cancelled")
        status = await durable_store.release_run_lock(run.id, _A, status="suspended", output="x")
        assert status == "cancelled"
        got = await _get(durable_store, run.id)
        assert (got.status, got.output, got.locked_by, got.locked_until) == (
            "cancelled",
            None,
            None,
            None,
        )

    async def test_released_run_can_be_claimed_by_another_owner(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.release_run_lock(run.id, _A, status="pending") == "pending"
        assert await durable_store.try_lock_run(run.id, _B, now + _LEASE, now) is True
        assert (await _get(durable_store, run.id)).recovery_attempts == 0

    async def test_release_run_lock_writes_its_checkpoints_with_the_release(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        wake = now + timedelta(hours=1)
        step = _checkpoint(run.id, 0, output={"n": 1})
        sleep = dataclasses.replace(
            _checkpoint(run.id, 1, name="sleep", kind="sleep", status="pending"), wake_at=wake
        )
        status = await durable_store.release_run_lock(
            run.id, _A, checkpoints=[step, sleep], status="suspended", wake_at=wake
        )
        assert status == "suspended"
        saved = await durable_store.list_checkpoints(run.id)
        assert [(c.seq, c.kind, c.status, c.output, c.wake_at) for c in saved] == [
            (0, "local", "completed", {"n": 1}, None),
            (1, "sleep", "pending", None, wake),
        ]
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at, got.locked_by) == ("suspended", wake, None)

    async def test_release_run_lock_writes_checkpoints_and_attributes_together(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        status = await durable_store.release_run_lock(
            run.id,
            _A,
            checkpoints=[_checkpoint(run.id, 0, output="x")],
            status="completed",
            attributes={"tier": "gold"},
        )
        assert status == "completed"
        assert [c.output for c in await durable_store.list_checkpoints(run.id)] == ["x"]
        assert (await _get(durable_store, run.id)).attributes == {"tier": "gold"}

    async def test_release_run_lock_checkpoints_replace_existing_ones(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 0, output=1), owner=_A)
        again = _checkpoint(run.id, 0, output=2)
        assert await durable_store.release_run_lock(run.id, _A, checkpoints=[again]) == "running"
        assert [c.output for c in await durable_store.list_checkpoints(run.id)] == [2]

    async def test_release_run_lock_by_non_holder_writes_no_checkpoint(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        late = [_checkpoint(run.id, 0)]
        assert await durable_store.release_run_lock(run.id, _B, checkpoints=late) is None
        assert await durable_store.list_checkpoints(run.id) == []
        assert (await _get(durable_store, run.id)).locked_by == _A

    async def test_release_run_lock_of_a_cancelled_run_writes_no_checkpoint(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        assert await durable_store.update_run(run.id, status="cancelled")
        late = [_checkpoint(run.id, 0)]
        status = await durable_store.release_run_lock(
            run.id, _A, checkpoints=late, status="suspended"
        )
        assert status == "cancelled"
        assert await durable_store.list_checkpoints(run.id) == []
        assert (await _get(durable_store, run.id)).locked_by is None

    async def test_release_run_lock_refusing_a_checkpoint_changes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        bad = _checkpoint(run.id, 0, output=float("nan"))
        with pytest.raises(SerializationError):
            await durable_store.release_run_lock(run.id, _A, checkpoints=[bad], status="completed")
        got = await _get(durable_store, run.id)
        assert (got.status, got.locked_by) == ("running", _A)
        assert await durable_store.list_checkpoints(run.id) == []

    async def test_release_run_lock_refuses_a_checkpoint_of_another_run(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        other = await _locked(durable_store, _A, _now())
        refused: ValueError | None = None
        try:
            await durable_store.release_run_lock(
                run.id, _A, checkpoints=[_checkpoint(other.id, 0)], status="completed"
            )
        except ValueError as exc:
            refused = exc
        assert refused is not None, "release_run_lock accepted a checkpoint of another run"
        assert other.id in str(refused), f"the error does not name that run: {refused}"
        for each in (run, other):
            got = await _get(durable_store, each.id)
            assert (got.status, got.locked_by) == ("running", _A)
            assert await durable_store.list_checkpoints(each.id) == []

    @needs("race_repeats")
    async def test_wake_racing_release_is_never_lost(self, durable_store: StateStore) -> None:
        async def one_round() -> None:
            now, pairs = _now(), self.options.concurrency // 2
            runs = [await _locked(durable_store, _A, now) for _ in range(pairs)]

            async def contend(i: int) -> object:
                pair = i // 2
                run_id = runs[pair].id
                if i % 2 != pair % 2:  # half the pairs start with the waker
                    return await durable_store.wake_run(run_id)
                wake = now + timedelta(days=1)
                return await durable_store.release_run_lock(
                    run_id, _A, status="suspended", wake_at=wake
                )

            await _race(2 * pairs, contend)
            for run in runs:
                got = await _get(durable_store, run.id)
                assert (got.status, got.wake_at, got.locked_by) == ("pending", None, None), (
                    f"a wake racing the release was lost: {got!r}"
                )

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- wake_run -------------------------------------------------------------------------------

    async def test_wake_run_makes_suspended_run_pending(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run("suspended", wake_at=_now() + timedelta(days=1)))
        assert await durable_store.wake_run(run.id) is True
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at, got.wake_requested) == ("pending", None, False)

    async def test_wake_run_flags_running_run(self, durable_store: StateStore) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        assert await durable_store.wake_run(run.id) is False
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_requested, got.locked_by) == ("running", True, _A)

    async def test_wake_run_of_pending_run_returns_true(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run())
        assert await durable_store.wake_run(run.id) is True
        assert (await _get(durable_store, run.id)).status == "pending"

    async def test_wake_run_leaves_terminal_runs_alone(self, durable_store: StateStore) -> None:
        for status in sorted(TERMINAL_STATUSES):
            run = await _create(durable_store, _run(status))
            assert await durable_store.wake_run(run.id) is False
            got = await _get(durable_store, run.id)
            assert (got.status, got.wake_requested) == (status, False)

    async def test_wake_run_of_unknown_run_returns_false(self, durable_store: StateStore) -> None:
        assert await durable_store.wake_run(_new_id()) is False

    # -- signal waiters -------------------------------------------------------------------------

    async def test_take_signal_waiter_returns_and_deletes_waiter(
        self, durable_store: StateStore
    ) -> None:
        waiter = SignalWaiter(_new_id("token"), _new_id(), 3)
        await durable_store.put_signal_waiter(waiter)
        assert await durable_store.take_signal_waiter(waiter.token) == waiter
        assert await durable_store.take_signal_waiter(waiter.token) is None
        assert await durable_store.list_signal_waiters(waiter.token) == []

    async def test_put_signal_waiter_replaces_waiter_on_same_token(
        self, durable_store: StateStore
    ) -> None:
        token = _new_id("token")
        await durable_store.put_signal_waiter(SignalWaiter(token, _new_id(), 1))
        newer = SignalWaiter(token, _new_id(), 7)
        await durable_store.put_signal_waiter(newer)
        assert await durable_store.list_signal_waiters(token) == [newer]
        assert await durable_store.take_signal_waiter(token) == newer
        assert await durable_store.take_signal_waiter(token) is None

    async def test_take_signal_waiter_of_unknown_token_returns_none(
        self, durable_store: StateStore
    ) -> None:
        assert await durable_store.take_signal_waiter(_new_id("token")) is None

    async def test_remove_signal_waiter_removes_only_exact_match(
        self, durable_store: StateStore
    ) -> None:
        waiter = SignalWaiter(_new_id("token"), _new_id(), 5)
        await durable_store.put_signal_waiter(waiter)
        for near in (
            dataclasses.replace(waiter, seq=6),
            dataclasses.replace(waiter, run_id=_new_id()),
            dataclasses.replace(waiter, token=_new_id("token")),
        ):
            assert await durable_store.remove_signal_waiter(near) is False
        assert await durable_store.list_signal_waiters(waiter.token) == [waiter]
        assert await durable_store.remove_signal_waiter(waiter) is True
        assert await durable_store.list_signal_waiters(waiter.token) == []
        assert await durable_store.remove_signal_waiter(waiter) is False

    async def test_list_signal_waiters_filters_by_prefix_ordered_by_token(
        self, durable_store: StateStore
    ) -> None:
        prefix, other = _new_id("approve") + ":", _new_id("refund") + ":"
        waiters = [SignalWaiter(f"{prefix}{s}", _new_id(), i) for i, s in enumerate("cab")]
        for waiter in [*waiters, SignalWaiter(f"{other}a", _new_id(), 1)]:
            await durable_store.put_signal_waiter(waiter)
        ordered = sorted(waiters, key=lambda w: w.token)
        assert await durable_store.list_signal_waiters(prefix) == ordered
        everything = await durable_store.list_signal_waiters()
        assert [w for w in everything if w.token.startswith(prefix)] == ordered
        assert len(everything) == 4
        assert await durable_store.list_signal_waiters(_new_id("nobody")) == []

    async def test_list_signal_waiters_prefix_is_literal(self, durable_store: StateStore) -> None:
        base = _new_id("p")
        suffixes = ("%x", "_y", "ab", "\\z", ":Order", ":order", "[a]", "*")
        for suffix in suffixes:
            await durable_store.put_signal_waiter(SignalWaiter(base + suffix, _new_id(), 1))
        for suffix in suffixes:
            prefix = base + suffix[:2] if suffix.startswith(":") else base + suffix[0]
            got = [w.token for w in await durable_store.list_signal_waiters(prefix)]
            assert got == [base + suffix], f"prefix {prefix!r} matched {got!r}"

    async def test_signal_tokens_compare_exactly(self, durable_store: StateStore) -> None:
        token = _new_id("Token")
        waiter = SignalWaiter(token, _new_id(), 1)
        await durable_store.put_signal_waiter(waiter)
        await durable_store.buffer_signal(token, "payload", _now())
        for variant in (token.upper(), token.lower(), f"{token} ", f"{token}\t"):
            assert await durable_store.take_signal_waiter(variant) is None, variant
            assert await durable_store.take_buffered_signal(variant) is None, variant
            assert await durable_store.pair_signal(variant, _now()) is None, variant
        assert await durable_store.take_signal_waiter(token) == waiter
        signal = await durable_store.take_buffered_signal(token)
        assert signal is not None
        assert signal.token == token

    @needs("race_repeats")
    async def test_one_of_many_concurrent_waiter_takers_wins(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            waiter = SignalWaiter(_new_id("token"), _new_id(), 1)
            await durable_store.put_signal_waiter(waiter)
            taken = await _race(
                self.options.concurrency,
                lambda _: durable_store.take_signal_waiter(waiter.token),
            )
            got = [w for w in taken if w is not None]
            assert got == [waiter], f"{len(got)} takers got the waiter"

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- buffered signals -----------------------------------------------------------------------

    async def test_buffer_signal_returns_increasing_ids(self, durable_store: StateStore) -> None:
        tokens = [_new_id("token"), _new_id("token")]
        ids = [await durable_store.buffer_signal(tokens[i % 2], i, _now()) for i in range(6)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

    async def test_take_buffered_signal_is_fifo_per_token(self, durable_store: StateStore) -> None:
        first, second, now = _new_id("token"), _new_id("token"), _now()
        for i in range(10):
            await durable_store.buffer_signal(first if i % 3 else second, i, now)
        for token, expected in ((first, [1, 2, 4, 5, 7, 8]), (second, [0, 3, 6, 9])):
            taken = []
            while (signal := await durable_store.take_buffered_signal(token)) is not None:
                taken.append(signal.payload)
            assert taken == expected

    async def test_take_buffered_signal_returns_what_was_buffered(
        self, durable_store: StateStore
    ) -> None:
        token, when = _new_id("token"), datetime(2031, 5, 17, 12, 0, 0, 654321, tzinfo=UTC)
        signal_id = await durable_store.buffer_signal(token, {"approved": True}, when)
        signal = await durable_store.take_buffered_signal(token)
        assert signal is not None
        assert (signal.id, signal.token, signal.payload) == (signal_id, token, {"approved": True})
        assert signal.created_at == when
        _assert_utc(signal.created_at, "buffered signal created_at")
        assert await durable_store.take_buffered_signal(token) is None

    async def test_take_buffered_signal_of_empty_token_returns_none(
        self, durable_store: StateStore
    ) -> None:
        assert await durable_store.take_buffered_signal(_new_id("token")) is None

    @needs("race_repeats")
    async def test_concurrent_buffered_takers_take_each_signal_once_in_order(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            token, count, now = _new_id("token"), 2 * self.options.concurrency, _now()
            for i in range(count):
                await durable_store.buffer_signal(token, i, now)

            async def drain(_: int) -> list[JSONValue]:
                taken: list[JSONValue] = []
                while (signal := await durable_store.take_buffered_signal(token)) is not None:
                    taken.append(signal.payload)
                return taken

            per_taker = await _race(self.options.concurrency, drain)
            everything = sorted(p for taken in per_taker for p in taken if isinstance(p, int))
            assert everything == list(range(count)), "signals were lost or taken twice"
            for taken in per_taker:
                assert taken == sorted(taken, key=lambda p: p if isinstance(p, int) else -1), (
                    f"one taker saw signals out of FIFO order: {taken}"
                )

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- list_pairable_tokens -------------------------------------------------------------------

    async def test_list_pairable_tokens_finds_tokens_with_waiter_and_signal(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _create(durable_store, _run("suspended"))
        both = sorted(_new_id("both") for _ in range(3))
        waiter_only, signal_only = _new_id("waiter"), _new_id("signal")
        for seq, token in enumerate([*both, waiter_only]):
            await durable_store.put_signal_waiter(SignalWaiter(token, run.id, seq))
        for token in [*both, both[0], signal_only]:
            await durable_store.buffer_signal(token, "x", now)
        assert await durable_store.list_pairable_tokens(10) == both
        assert await durable_store.list_pairable_tokens(2) == both[:2]
        await durable_store.pair_signal(both[1], now)
        assert await durable_store.list_pairable_tokens(10) == [both[0], both[2]]

    # -- pair_signal ----------------------------------------------------------------------------

    async def test_pair_signal_delivers_oldest_signal_to_waiter(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _create(durable_store, _run("suspended", wake_at=now + timedelta(days=1)))
        token = _new_id("token")
        waiter = SignalWaiter(token, run.id, 3)
        await durable_store.put_signal_waiter(waiter)
        await durable_store.buffer_signal(token, {"n": 1}, now)
        await durable_store.buffer_signal(token, {"n": 2}, now)
        assert await durable_store.pair_signal(token, now) == waiter
        assert await durable_store.take_signal_waiter(token) is None
        checkpoint = await durable_store.get_checkpoint(run.id, 3)
        assert checkpoint is not None
        assert (checkpoint.kind, checkpoint.status, checkpoint.name) == (
            "signal",
            "completed",
            token,
        )
        assert (checkpoint.run_id, checkpoint.seq, checkpoint.output) == (run.id, 3, {"n": 1})
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at) == ("pending", None)
        remaining = await durable_store.take_buffered_signal(token)
        assert remaining is not None
        assert remaining.payload == {"n": 2}
        assert await durable_store.take_buffered_signal(token) is None

    async def test_pair_signal_without_waiter_keeps_signal(self, durable_store: StateStore) -> None:
        token = _new_id("token")
        await durable_store.buffer_signal(token, "kept", _now())
        assert await durable_store.pair_signal(token, _now()) is None
        signal = await durable_store.take_buffered_signal(token)
        assert signal is not None
        assert signal.payload == "kept"

    async def test_pair_signal_without_signal_keeps_waiter(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run("suspended"))
        waiter = SignalWaiter(_new_id("token"), run.id, 1)
        await durable_store.put_signal_waiter(waiter)
        assert await durable_store.pair_signal(waiter.token, _now()) is None
        assert await durable_store.list_signal_waiters(waiter.token) == [waiter]
        assert (await _get(durable_store, run.id)).status == "suspended"
        assert await durable_store.list_checkpoints(run.id) == []

    async def test_pair_signal_flags_run_leased_by_another_worker(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        for holder in (None, _B):
            run = await _locked(durable_store, _A, now)
            token = _new_id("token")
            await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 1))
            await durable_store.buffer_signal(token, "go", now)
            assert await durable_store.pair_signal(token, now, holder=holder) is not None
            got = await _get(durable_store, run.id)
            assert (got.status, got.wake_requested, got.locked_by) == ("running", True, _A)
            checkpoint = await durable_store.get_checkpoint(run.id, 1)
            assert checkpoint is not None
            assert checkpoint.output == "go"

    async def test_pair_signal_does_not_flag_run_leased_by_holder(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        token = _new_id("token")
        await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 1))
        await durable_store.buffer_signal(token, "mine", now)
        assert await durable_store.pair_signal(token, now, holder=_A) is not None
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_requested, got.locked_by) == ("running", False, _A)
        checkpoint = await durable_store.get_checkpoint(run.id, 1)
        assert checkpoint is not None
        assert checkpoint.output == "mine"

    async def test_pair_signal_to_ended_run_deletes_waiter_and_keeps_signal(
        self, durable_store: StateStore
    ) -> None:
        for status in sorted(TERMINAL_STATUSES):
            run = await _create(durable_store, _run(status))
            token = _new_id("token")
            await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 1))
            await durable_store.buffer_signal(token, "unread", _now())
            assert await durable_store.pair_signal(token, _now()) is None
            assert await durable_store.list_signal_waiters(token) == []
            assert await durable_store.list_checkpoints(run.id) == []
            assert (await _get(durable_store, run.id)).status == status
            signal = await durable_store.take_buffered_signal(token)
            assert signal is not None
            assert signal.payload == "unread"

    @needs("race_repeats")
    async def test_concurrent_pairers_deliver_one_signal_once(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            now = _now()
            run = await _create(durable_store, _run("suspended"))
            token = _new_id("token")
            waiter = SignalWaiter(token, run.id, 1)
            await durable_store.put_signal_waiter(waiter)
            for i in range(3):
                await durable_store.buffer_signal(token, i, now)
            paired = await _race(
                self.options.concurrency, lambda _: durable_store.pair_signal(token, now)
            )
            assert [w for w in paired if w is not None] == [waiter]
            checkpoint = await durable_store.get_checkpoint(run.id, 1)
            assert checkpoint is not None
            assert checkpoint.output == 0
            left = []
            while (signal := await durable_store.take_buffered_signal(token)) is not None:
                left.append(signal.payload)
            assert left == [1, 2]

        for _ in range(self.options.race_repeats):
            await one_round()

    @needs("race_repeats")
    async def test_racing_senders_and_waiters_deliver_every_signal_once(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            now, pairs = _now(), self.options.concurrency // 2
            runs = [await _create(durable_store, _run("suspended")) for _ in range(pairs)]
            waiters = [SignalWaiter(_new_id("token"), run.id, 1) for run in runs]

            async def contend(i: int) -> SignalWaiter | None:
                waiter = waiters[i // 2]
                if i % 2:
                    await durable_store.put_signal_waiter(waiter)
                else:
                    await durable_store.buffer_signal(waiter.token, f"for {waiter.run_id}", now)
                return await durable_store.pair_signal(waiter.token, now)

            paired = await _race(2 * pairs, contend)
            for index, waiter in enumerate(waiters):
                delivered = [w for w in paired[2 * index : 2 * index + 2] if w is not None]
                assert delivered == [waiter], f"token {waiter.token}: delivered {len(delivered)}x"
                checkpoint = await durable_store.get_checkpoint(waiter.run_id, 1)
                assert checkpoint is not None
                assert checkpoint.output == f"for {waiter.run_id}"
                assert await durable_store.take_signal_waiter(waiter.token) is None
                assert await durable_store.take_buffered_signal(waiter.token) is None
                assert (await _get(durable_store, waiter.run_id)).status == "pending"

        for _ in range(self.options.race_repeats):
            await one_round()

    # -- payloads -------------------------------------------------------------------------------

    async def test_unicode_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {
                "accents": "héllo wörld ñ ß",
                "cjk": "日本語のテキスト",
                "emoji": "😀 👍🏽 🇺🇳 👨‍👩‍👧",
                "astral": "\U0001d518\U0001d52b\U0001d526 \U0001d11e \U0002070e",
                "rtl": "مرحبا שלום",
                "combining": "e\u0301 a\u0308",
                "controls": "tab\t newline\n cr\r unit\u001f",
                "separators": "\u2028\u2029\ufeff",
                "quotes": "\"'` \\ \\\\ / \\u0041",
                "sql": "'; DROP TABLE durable_workflow_runs; --",
                "keys 🔑": {"ключ": "значение", "😀": ["𝄞", "é"]},
            },
        )

    async def test_deeply_nested_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(durable_store, _nested(100))

    async def test_one_megabyte_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {
                "blob": "0123456789abcdef" * 65536,
                "unicode": "é😀" * 1000,
                "numbers": list(range(1000)),
            },
        )

    async def test_null_values_and_missing_keys_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {"present_null": None, "nested": {"a": None, "b": {}}, "list": [None, 1, None]},
        )
        await _assert_payload_roundtrips(durable_store, {"only": 1})
        await _assert_payload_roundtrips(durable_store, None)

    async def test_float_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [0.1, 0.5, -2.25, 1.0, 2.0, 3.141592653589793, 1e-7, 123456.789, -0.001, 1 / 3],
        )

    async def test_large_exponent_float_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [6.02e23, 1e16, 1e300, -1e300, 1.7976931348623157e308, 2.2250738585072014e-308, 5e-324],
        )

    async def test_big_int_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [2**53, -(2**53), 2**53 - 1, 2**31, 2**32 + 1, -(2**31) - 1, 10**15, 0, -1],
        )

    async def test_empty_containers_roundtrip(self, durable_store: StateStore) -> None:
        empties: list[JSONValue] = [{}, [], "", {"a": {}, "b": [], "c": "", "d": [[]], "e": [{}]}]
        for payload in empties:
            await _assert_payload_roundtrips(durable_store, payload)

    async def test_scalars_keep_their_types_roundtrip(self, durable_store: StateStore) -> None:
        scalars: list[JSONValue] = [True, False, 0, 1, 1.5, "null", "true", "1", '{"a": 1}', "[]"]
        for payload in scalars:
            await _assert_payload_roundtrips(durable_store, payload)
        await _assert_payload_roundtrips(durable_store, {"t": True, "one": 1, "f": False, "z": 0})

    async def test_error_info_roundtrip(self, durable_store: StateStore) -> None:
        full: ErrorInfo = {
            "type": "payments.CardDeclined",
            "message": "carte refusée 💳",
            "code": "D-17",
            "retryable": False,
            "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\n' * 50,
        }
        minimal: ErrorInfo = {"type": "RuntimeError", "message": ""}
        for error in (full, minimal):
            run = await _create(durable_store, dataclasses.replace(_run("failed"), error=error))
            assert (await _get(durable_store, run.id)).error == error
            assert await durable_store.update_run(run.id, error=error)
            assert (await _get(durable_store, run.id)).error == error
            checkpoint = dataclasses.replace(_checkpoint(run.id, 1, status="failed"), error=error)
            assert await durable_store.save_checkpoint(checkpoint)
            stored = await durable_store.get_checkpoint(run.id, 1)
            assert stored is not None
            assert stored.error == error

    # -- datetimes ------------------------------------------------------------------------------

    async def test_microseconds_roundtrip(self, durable_store: StateStore) -> None:
        base = _now().replace(microsecond=0) + timedelta(days=1)
        for micros in (123457, 1, 999999):
            await _assert_datetime_roundtrips(durable_store, base.replace(microsecond=micros))

    async def test_year_9999_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_datetime_roundtrips(
            durable_store, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        )

    async def test_year_2100_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_datetime_roundtrips(
            durable_store, datetime(2100, 3, 1, 0, 0, 0, 1, tzinfo=UTC)
        )

    async def test_other_offsets_return_as_utc_roundtrip(self, durable_store: StateStore) -> None:
        for offset in (timedelta(hours=5, minutes=30), timedelta(hours=-8)):
            when = datetime(2031, 5, 17, 13, 39, 10, 123457, tzinfo=timezone(offset))
            await _assert_datetime_roundtrips(durable_store, when)

    async def test_times_compare_by_instant_across_offsets(self, durable_store: StateStore) -> None:
        ns, u = _new_id("ns"), datetime(2031, 5, 17, 12, 0, tzinfo=UTC)
        east, west = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))
        created = [
            u.astimezone(east),
            (u + timedelta(minutes=1)).astimezone(west),
            u + timedelta(minutes=2),
        ]
        runs = [await _create(durable_store, _run(namespace=ns, created_at=at)) for at in created]
        assert await _ids(durable_store.list_pending_runs(10, ns)) == [r.id for r in runs]
        page = await durable_store.list_runs(RunQuery(namespace=ns, created_after=created[1]))
        assert [r.id for r in page.runs] == [runs[2].id, runs[1].id]
        timer = await _create(durable_store, _run("suspended", namespace=_new_id("ns"), wake_at=u))
        early = (u - timedelta(seconds=1)).astimezone(east)
        assert await durable_store.list_due_timers(early, timer.namespace, 10) == []
        late = (u + timedelta(seconds=1)).astimezone(west)
        assert await _ids(durable_store.list_due_timers(late, timer.namespace, 10)) == [timer.id]
        lease_until = (u + _LEASE).astimezone(east)
        assert await durable_store.try_lock_run(runs[0].id, _A, lease_until, u)
        soon = (u + _LEASE / 2).astimezone(west)
        assert await durable_store.try_lock_run(runs[0].id, _B, soon + _LEASE, soon) is False
        later = (u + 2 * _LEASE).astimezone(west)
        assert await durable_store.try_lock_run(runs[0].id, _B, later + _LEASE, later) is True
