"""Runs: ``create_run``, ``get_run`` and ``update_run``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance.state_store._helpers import (
    _assert_same_run,
    _assert_utc,
    _checkpoint,
    _create,
    _get,
    _new_id,
    _now,
    _race,
    _run,
)
from durable.core import RunNotFound, RunQuery, RunRecord

if TYPE_CHECKING:
    from durable.core import JSONValue, StateStore


_CLOCK_SKEW = timedelta(minutes=5)


class RunsSuite(SuiteBase):
    """``create_run``, ``get_run`` and ``update_run``."""

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
