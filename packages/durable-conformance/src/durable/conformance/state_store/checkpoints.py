"""Checkpoints: ``save_checkpoint``, ``get_checkpoint``, ``list_checkpoints`` and fenced saves."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance.state_store._helpers import (
    _A,
    _B,
    _LEASE,
    _assert_utc,
    _checkpoint,
    _create,
    _get,
    _locked,
    _new_id,
    _now,
    _race,
    _run,
)
from durable.core import CheckpointRecord, RunNotFound

if TYPE_CHECKING:
    from durable.core import (
        CheckpointKind,
        CheckpointStatus,
        JSONValue,
        RunPatch,
        RunRecord,
        StateStore,
    )


def _remote(
    run_id: str,
    status: CheckpointStatus = "completed",
    *,
    output: JSONValue = None,
    seq: int = 1,
    attempts: int = 1,
) -> CheckpointRecord:
    """A remote step's checkpoint: ``running`` once dispatched, then its result."""
    return _checkpoint(run_id, seq, kind="remote", status=status, output=output, attempts=attempts)


async def _dispatched(store: StateStore) -> tuple[RunRecord, CheckpointRecord]:
    """A run leased by worker A, with a remote step dispatched at ``seq`` 1."""
    run = await _locked(store, _A, _now())
    dispatched = _remote(run.id, "running")
    assert await store.save_checkpoint(dispatched, owner=_A)
    return run, dispatched


class CheckpointsSuite(SuiteBase):
    """``save_checkpoint``, ``get_checkpoint`` and ``list_checkpoints``, fenced saves included."""

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

    # -- compare-and-set (expect) ---------------------------------------------------------------

    async def test_save_checkpoint_with_expect_writes_only_over_that_status_and_attempts(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run())
        dispatched = _remote(run.id, "running")
        assert await durable_store.save_checkpoint(dispatched)
        result = _remote(run.id, output="ok")
        mismatches: list[tuple[CheckpointStatus, int]] = [
            ("running", 2),
            ("running", 0),
            ("pending", 1),
            ("completed", 1),
        ]
        for expect in mismatches:
            written = await durable_store.save_checkpoint(result, {"output": "ok"}, expect=expect)
            assert written is False, f"written over (running, 1) while expecting {expect}"
            assert await durable_store.get_checkpoint(run.id, 1) == dispatched
        assert (await _get(durable_store, run.id)).output is None
        assert await durable_store.save_checkpoint(result, {"output": "ok"}, expect=("running", 1))
        assert await durable_store.get_checkpoint(run.id, 1) == result
        assert (await _get(durable_store, run.id)).output == "ok"
        again = await durable_store.save_checkpoint(result, expect=("running", 1))
        assert again is False, "the compare-and-set succeeded twice"

    async def test_save_checkpoint_with_expect_never_replaces_a_finished_result(
        self, durable_store: StateStore
    ) -> None:
        run = await _create(durable_store, _run())
        timed_out = _remote(run.id, "failed")
        completed = _remote(run.id, output="done", seq=2)
        for checkpoint in (timed_out, completed):
            assert await durable_store.save_checkpoint(checkpoint)
        late = _remote(run.id, output="late")
        written = await durable_store.save_checkpoint(
            late, {"output": "late"}, expect=("running", 1)
        )
        assert written is False, "a late result replaced a step that failed on timeout"
        redispatch = _remote(run.id, "running", seq=2, attempts=2)
        written = await durable_store.save_checkpoint(redispatch, expect=("running", 1))
        assert written is False, "a re-dispatch replaced a completed result"
        assert await durable_store.list_checkpoints(run.id) == [timed_out, completed]
        assert (await _get(durable_store, run.id)).output is None

    async def test_save_checkpoint_with_expect_of_a_missing_row_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        checkpoint = _checkpoint(run.id, 1)
        expectations: list[tuple[CheckpointStatus, int]] = [("pending", 0), ("running", 1)]
        for expect in expectations:
            assert await durable_store.save_checkpoint(checkpoint, expect=expect) is False
            fenced = await durable_store.save_checkpoint(
                checkpoint, {"output": "x"}, owner=_A, expect=expect
            )
            assert fenced is False
        assert await durable_store.list_checkpoints(run.id) == []
        assert (await _get(durable_store, run.id)).output is None

    async def test_save_checkpoint_with_expect_and_owner_needs_both(
        self, durable_store: StateStore
    ) -> None:
        run, dispatched = await _dispatched(durable_store)
        result = _remote(run.id, output="ok")
        refused: list[tuple[str, tuple[CheckpointStatus, int]]] = [
            (_B, ("running", 1)),
            (_A, ("running", 2)),
        ]
        for owner, expect in refused:
            written = await durable_store.save_checkpoint(
                result, {"output": "ok"}, owner=owner, expect=expect
            )
            assert written is False, f"written for owner {owner!r} expecting {expect}"
        assert await durable_store.get_checkpoint(run.id, 1) == dispatched
        assert (await _get(durable_store, run.id)).output is None
        assert await durable_store.save_checkpoint(
            result, {"output": "ok"}, owner=_A, expect=("running", 1)
        )
        assert await durable_store.get_checkpoint(run.id, 1) == result
        assert (await _get(durable_store, run.id)).output == "ok"

    async def test_save_checkpoint_with_expect_after_release_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        run, dispatched = await _dispatched(durable_store)
        assert await durable_store.release_run_lock(run.id, _A, status="suspended") == "suspended"
        result = _remote(run.id, output="ok")
        fenced = await durable_store.save_checkpoint(result, owner=_A, expect=("running", 1))
        assert fenced is False
        assert await durable_store.get_checkpoint(run.id, 1) == dispatched

    async def test_save_checkpoint_with_expect_and_run_patch_of_unknown_run_raises(
        self, durable_store: StateStore
    ) -> None:
        run_id = _new_id()
        dispatched = _remote(run_id, "running")
        assert await durable_store.save_checkpoint(dispatched)
        result = _remote(run_id, output="ok")
        with pytest.raises(RunNotFound):
            await durable_store.save_checkpoint(result, {"output": "ok"}, expect=("running", 1))
        assert await durable_store.get_checkpoint(run_id, 1) == dispatched

    @needs("race_repeats")
    async def test_one_of_many_concurrent_expect_writers_wins(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            run, _ = await _dispatched(durable_store)

            async def write(i: int) -> bool:
                result = _remote(run.id, output=i)
                patch: RunPatch | None = {"output": i} if i % 3 == 0 else None
                owner = _A if i % 2 else None
                return await durable_store.save_checkpoint(
                    result, patch, owner=owner, expect=("running", 1)
                )

            won = await _race(self.options.concurrency, write)
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"{len(winners)} of {len(won)} compare-and-sets won"
            stored = await durable_store.get_checkpoint(run.id, 1)
            assert stored is not None
            assert (stored.status, stored.output) == ("completed", winners[0])
            output = (await _get(durable_store, run.id)).output
            assert output == (winners[0] if winners[0] % 3 == 0 else None), (
                f"a losing writer's run patch was applied: {output!r}"
            )

        for _ in range(self.options.race_repeats):
            await one_round()

    @needs("race_repeats")
    async def test_late_result_racing_a_timeout_write_never_both_land(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            run, _ = await _dispatched(durable_store)
            timed_out = dataclasses.replace(
                _remote(run.id, "failed"),
                error={"type": "TimeoutError", "message": "remote step timed out"},
            )
            late = _remote(run.id, output="late")
            timeout = self.options.concurrency // 2

            async def contend(i: int) -> bool:
                if i == timeout:  # the workflow's worker gives up on the step
                    return await durable_store.save_checkpoint(
                        timed_out, owner=_A, expect=("running", 1)
                    )
                # the result arrives, redelivered by the transport
                return await durable_store.save_checkpoint(late, expect=("running", 1))

            won = await _race(self.options.concurrency, contend)
            winners = [i for i, ok in enumerate(won) if ok]
            assert len(winners) == 1, f"{len(winners)} writes landed on one running step"
            expected = timed_out if winners == [timeout] else late
            assert await durable_store.get_checkpoint(run.id, 1) == expected

        for _ in range(self.options.race_repeats):
            await one_round()
