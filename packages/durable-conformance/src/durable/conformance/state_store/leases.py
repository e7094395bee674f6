"""Leases: ``try_lock_run``, ``renew_run_lock``, ``release_run_lock`` and ``wake_run``."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance.state_store._helpers import (
    _A,
    _ALL_STATUSES,
    _B,
    _LEASE,
    _assert_same_run,
    _checkpoint,
    _create,
    _get,
    _ids,
    _locked,
    _new_id,
    _now,
    _race,
    _run,
)
from durable.core import TERMINAL_STATUSES, SerializationError

if TYPE_CHECKING:
    from durable.core import StateStore


class LeasesSuite(SuiteBase):
    """``try_lock_run``, ``renew_run_lock``, ``release_run_lock`` and ``wake_run``."""

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

    async def test_try_lock_run_with_namespace_claims_only_a_run_of_that_namespace(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _create(durable_store, _run(namespace=_new_id("ns")))
        before = await _get(durable_store, run.id)
        for namespace in (_new_id("ns"), "default", run.namespace.upper()):
            claimed = await durable_store.try_lock_run(
                run.id, _A, now + _LEASE, now, namespace=namespace
            )
            assert claimed is False, f"claimed a run of {run.namespace!r} for {namespace!r}"
        _assert_same_run(await durable_store.get_run(run.id), before)
        claimed = await durable_store.try_lock_run(
            run.id, _A, now + _LEASE, now, namespace=run.namespace, workflows=[("other", "1")]
        )
        assert claimed is False, "the namespace matched, the workflow did not"
        assert await durable_store.try_lock_run(
            run.id, _A, now + _LEASE, now, namespace=run.namespace
        )
        assert (await _get(durable_store, run.id)).locked_by == _A

    async def test_try_lock_run_with_workflows_claims_only_a_listed_workflow_version(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        pending = await _create(durable_store, _run(workflow="billing", version="2"))
        due = await _create(
            durable_store, _run("suspended", workflow="billing", version="2", wake_at=now)
        )
        expired = await _create(durable_store, _run(workflow="billing", version="2"))
        assert await durable_store.try_lock_run(expired.id, "dead-worker", now, now - _LEASE)
        refused: list[set[tuple[str, str]]] = [
            set(),
            {("billing", "1")},
            {("shipping", "2")},
            {("billin", "g2")},
            {("2", "billing")},
        ]
        for run in (pending, due, expired):
            before = await _get(durable_store, run.id)
            for workflows in refused:
                claimed = await durable_store.try_lock_run(
                    run.id, _A, now + _LEASE, now, workflows=workflows
                )
                assert claimed is False, f"a {before.status} run claimed for {workflows}"
            _assert_same_run(await durable_store.get_run(run.id), before)
            assert await durable_store.try_lock_run(
                run.id, _A, now + _LEASE, now, workflows=[("shipping", "2"), ("billing", "2")]
            ), f"a {before.status} run of a listed pair was not claimed"
            got = await _get(durable_store, run.id)
            assert (got.status, got.locked_by) == ("running", _A)

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

    async def test_renew_run_lock_fails_once_the_run_is_cancelled_or_ended(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        for status in _ALL_STATUSES:
            if status == "running":
                continue
            run = await _locked(durable_store, _A, now)
            assert await durable_store.update_run(run.id, status=status)
            renewed = await durable_store.renew_run_lock(run.id, _A, now + 3 * _LEASE)
            assert renewed is False, f"renewed the lease of a {status} run"
            got = await _get(durable_store, run.id)
            assert (got.status, got.locked_by, got.locked_until) == (status, _A, now + _LEASE)

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
