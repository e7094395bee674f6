"""Signals: waiters, buffered signals, ``list_pairable_tokens`` and ``pair_signal``."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance.state_store._helpers import (
    _A,
    _B,
    _LEASE,
    _buffered,
    _checkpoint,
    _create,
    _get,
    _has_waiter,
    _locked,
    _new_id,
    _now,
    _race,
    _run,
)
from durable.core import TERMINAL_STATUSES, SignalWaiter

if TYPE_CHECKING:
    from durable.core import (
        CheckpointKind,
        CheckpointRecord,
        CheckpointStatus,
        StateStore,
    )


def _waiting(
    waiter: SignalWaiter, started_at: datetime, *, wake_at: datetime | None = None
) -> CheckpointRecord:
    """The ``pending`` signal checkpoint a wait writes with its waiter."""
    return _checkpoint(
        waiter.run_id,
        waiter.seq,
        name=waiter.token,
        kind="signal",
        status="pending",
        started_at=started_at,
        wake_at=wake_at,
    )


class SignalsSuite(SuiteBase):
    """Signal waiters, buffered signals, ``list_pairable_tokens`` and ``pair_signal``."""

    # -- signal waiters -------------------------------------------------------------------------

    async def test_put_signal_waiter_replaces_waiter_on_same_token(
        self, durable_store: StateStore
    ) -> None:
        token = _new_id("token")
        older = SignalWaiter(token, _new_id(), 1)
        await durable_store.put_signal_waiter(older)
        newer = SignalWaiter(token, _new_id(), 7)
        await durable_store.put_signal_waiter(newer)
        assert await _has_waiter(durable_store, newer)
        assert not await _has_waiter(durable_store, older)

    async def test_put_signal_waiter_with_owner_writes_waiter_and_checkpoint(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        waiter = SignalWaiter(_new_id("token"), run.id, 2)
        waiting = _waiting(waiter, now - timedelta(seconds=5), wake_at=now + timedelta(hours=1))
        assert await durable_store.put_signal_waiter(waiter, owner=_A, checkpoint=waiting) is True
        assert await _has_waiter(durable_store, waiter)
        assert await durable_store.list_checkpoints(run.id) == [waiting]
        alone = SignalWaiter(_new_id("token"), run.id, 3)
        assert await durable_store.put_signal_waiter(alone, owner=_A) is True
        assert await _has_waiter(durable_store, alone)
        unfenced = SignalWaiter(_new_id("token"), _new_id(), 1)
        assert await durable_store.put_signal_waiter(unfenced) is True
        assert await _has_waiter(durable_store, unfenced)

    async def test_put_signal_waiter_with_checkpoint_replaces_waiter_and_checkpoint(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        run = await _locked(durable_store, _A, now)
        token = _new_id("token")
        await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 1))
        waiter = SignalWaiter(token, run.id, 4)
        first = _waiting(waiter, now, wake_at=now + timedelta(minutes=1))
        assert await durable_store.put_signal_waiter(waiter, owner=_A, checkpoint=first)
        second = _waiting(waiter, now, wake_at=now + timedelta(minutes=2))
        assert await durable_store.put_signal_waiter(waiter, checkpoint=second)
        assert await _has_waiter(durable_store, waiter)
        assert await durable_store.list_checkpoints(run.id) == [second]

    async def test_put_signal_waiter_with_foreign_or_released_owner_writes_nothing(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        foreign = await _locked(durable_store, _A, now)
        released = await _locked(durable_store, _A, now)
        assert await durable_store.release_run_lock(released.id, _A, status="suspended")
        cancelled = await _locked(durable_store, _A, now)
        assert await durable_store.update_run(cancelled.id, status="cancelled")
        token = _new_id("token")
        genuine = SignalWaiter(token, foreign.id, 5)
        assert await durable_store.put_signal_waiter(genuine, owner=_A)
        stale = SignalWaiter(token, foreign.id, 4)
        replaced = await durable_store.put_signal_waiter(
            stale, owner=_B, checkpoint=_waiting(stale, now)
        )
        assert replaced is False, "a worker without the lease replaced the run's waiter"
        assert await _has_waiter(durable_store, genuine)
        cases = [
            (foreign.id, _B, "leased by another worker"),
            (released.id, _A, "released"),
            (cancelled.id, _A, "cancelled"),
            (_new_id(), _A, "unknown"),
        ]
        for run_id, owner, what in cases:
            for seq, with_checkpoint in ((1, False), (2, True)):
                waiter = SignalWaiter(_new_id("token"), run_id, seq)
                checkpoint = _waiting(waiter, now) if with_checkpoint else None
                written = await durable_store.put_signal_waiter(
                    waiter, owner=owner, checkpoint=checkpoint
                )
                assert written is False, f"a waiter was written for a {what} run"
                assert not await _has_waiter(durable_store, waiter)
            assert await durable_store.list_checkpoints(run_id) == [], f"{what} run"

    async def test_put_signal_waiter_refuses_a_checkpoint_at_another_seq(
        self, durable_store: StateStore
    ) -> None:
        run = await _locked(durable_store, _A, _now())
        waiter = SignalWaiter(_new_id("token"), run.id, 1)
        elsewhere = [
            _waiting(dataclasses.replace(waiter, seq=2), _now()),
            _waiting(dataclasses.replace(waiter, run_id=_new_id()), _now()),
        ]
        for checkpoint in elsewhere:
            for owner in (None, _A):
                with pytest.raises(ValueError, match=waiter.token):
                    await durable_store.put_signal_waiter(
                        waiter, owner=owner, checkpoint=checkpoint
                    )
        assert not await _has_waiter(durable_store, waiter)
        assert await durable_store.list_checkpoints(run.id) == []

    @needs("race_repeats")
    async def test_fenced_waiters_racing_a_takeover_never_land_after_it(
        self, durable_store: StateStore
    ) -> None:
        # Each would-be waiter's token holds a buffered signal, so list_pairable_tokens lists
        # exactly the waiters written (every round's are left behind, hence the limit).
        limit = self.options.race_repeats * self.options.concurrency

        async def waiting(prefix: str) -> set[int]:
            tokens = await durable_store.list_pairable_tokens(limit)
            return {int(t.removeprefix(prefix)) for t in tokens if t.startswith(prefix)}

        async def one_round() -> None:
            start = _now()
            run = await _locked(durable_store, _A, start)
            later = start + 2 * _LEASE
            prefix = _new_id("token") + ":"
            taker = self.options.concurrency // 2
            seen_waiters: set[int] = set()
            seen_checkpoints: set[int] = set()
            for i in range(self.options.concurrency):
                await durable_store.buffer_signal(f"{prefix}{i:04d}", i, start)

            async def contend(i: int) -> bool:
                if i == taker:
                    won = await durable_store.try_lock_run(run.id, _B, later + _LEASE, later)
                    seen_waiters.update(await waiting(prefix))
                    cps = await durable_store.list_checkpoints(run.id)
                    seen_checkpoints.update(cp.seq for cp in cps)
                    return won
                waiter = SignalWaiter(f"{prefix}{i:04d}", run.id, i)
                checkpoint = _waiting(waiter, start) if i % 2 else None
                return await durable_store.put_signal_waiter(
                    waiter, owner=_A, checkpoint=checkpoint
                )

            results = await _race(self.options.concurrency, contend)
            assert results[taker], "the takeover of an expired lease failed"
            waiters = await waiting(prefix)
            assert waiters == {i for i, ok in enumerate(results) if i != taker and ok}, (
                "put_signal_waiter's return value disagrees with what was written"
            )
            checkpoints = {cp.seq for cp in await durable_store.list_checkpoints(run.id)}
            assert checkpoints == {i for i in waiters if i % 2}, (
                "a waiter and its checkpoint were not written together"
            )
            assert (waiters, checkpoints) == (seen_waiters, seen_checkpoints), (
                "fenced waiters landed after the takeover"
            )

        for _ in range(self.options.race_repeats):
            await one_round()

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
        assert await durable_store.remove_signal_waiter(waiter) is True
        assert await durable_store.remove_signal_waiter(waiter) is False

    async def test_signal_tokens_compare_exactly(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run("suspended"))
        token = _new_id("Token")
        waiter = SignalWaiter(token, run.id, 1)
        await durable_store.put_signal_waiter(waiter)
        await durable_store.buffer_signal(token, "payload", _now())
        for variant in (token.upper(), token.lower(), f"{token} ", f"{token}\t"):
            near = dataclasses.replace(waiter, token=variant)
            assert await durable_store.remove_signal_waiter(near) is False, variant
            assert await durable_store.pair_signal(variant, _now()) is None, variant
            assert await _buffered(durable_store, variant) == [], variant
        assert await durable_store.pair_signal(token, _now()) == waiter
        delivered = await durable_store.get_checkpoint(run.id, 1)
        assert delivered is not None
        assert (delivered.name, delivered.output) == (token, "payload")

    # -- buffered signals -----------------------------------------------------------------------

    async def test_buffer_signal_returns_increasing_ids(self, durable_store: StateStore) -> None:
        tokens = [_new_id("token"), _new_id("token")]
        ids = [await durable_store.buffer_signal(tokens[i % 2], i, _now()) for i in range(6)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

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
        assert not await _has_waiter(durable_store, waiter)
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
        assert await _buffered(durable_store, token) == [{"n": 2}]

    async def test_pair_signal_without_waiter_keeps_signal(self, durable_store: StateStore) -> None:
        token = _new_id("token")
        await durable_store.buffer_signal(token, "kept", _now())
        assert await durable_store.pair_signal(token, _now()) is None
        assert await _buffered(durable_store, token) == ["kept"]

    async def test_pair_signal_without_signal_keeps_waiter(self, durable_store: StateStore) -> None:
        run = await _create(durable_store, _run("suspended"))
        waiter = SignalWaiter(_new_id("token"), run.id, 1)
        await durable_store.put_signal_waiter(waiter)
        assert await durable_store.pair_signal(waiter.token, _now()) is None
        assert await _has_waiter(durable_store, waiter)
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
            waiter = SignalWaiter(token, run.id, 1)
            await durable_store.put_signal_waiter(waiter)
            await durable_store.buffer_signal(token, "unread", _now())
            assert await durable_store.pair_signal(token, _now()) is None
            assert not await _has_waiter(durable_store, waiter)
            assert await durable_store.list_checkpoints(run.id) == []
            assert (await _get(durable_store, run.id)).status == status
            assert await _buffered(durable_store, token) == ["unread"]

    async def test_pair_signal_keeps_when_the_pending_wait_began(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        began, deadline = now - timedelta(seconds=90), now + timedelta(hours=1)
        run = await _locked(durable_store, _A, began)
        waiter = SignalWaiter(_new_id("token"), run.id, 2)
        waiting = _waiting(waiter, began, wake_at=deadline)
        assert await durable_store.put_signal_waiter(waiter, owner=_A, checkpoint=waiting)
        released = await durable_store.release_run_lock(
            run.id, _A, status="suspended", wake_at=deadline
        )
        assert released == "suspended"
        await durable_store.buffer_signal(waiter.token, {"approved": True}, now)
        assert await durable_store.pair_signal(waiter.token, now) == waiter
        delivered = dataclasses.replace(
            waiting,
            status="completed",
            output={"approved": True},
            finished_at=now,
            wake_at=None,
        )
        assert await durable_store.get_checkpoint(run.id, 2) == delivered
        got = await _get(durable_store, run.id)
        assert (got.status, got.wake_at) == ("pending", None)

    async def test_pair_signal_with_a_stale_waiter_keeps_the_signal_for_a_genuine_one(
        self, durable_store: StateStore
    ) -> None:
        now = _now()
        finished: list[tuple[CheckpointStatus, CheckpointKind]] = [
            ("completed", "signal"),
            ("failed", "signal"),
            ("pending", "sleep"),
            ("completed", "local"),
            ("running", "remote"),
        ]
        for status, kind in finished:
            run = await _create(durable_store, _run("suspended"))
            token = _new_id("token")
            done = _checkpoint(run.id, 1, name=token, kind=kind, status=status, output="before")
            assert await durable_store.save_checkpoint(done)
            await durable_store.put_signal_waiter(SignalWaiter(token, run.id, 1))
            await durable_store.buffer_signal(token, "for the genuine waiter", now)
            paired = await durable_store.pair_signal(token, now)
            assert paired is None, f"a signal was delivered onto a {status} {kind} checkpoint"
            assert not await _has_waiter(durable_store, SignalWaiter(token, run.id, 1))
            assert await durable_store.get_checkpoint(run.id, 1) == done
            assert (await _get(durable_store, run.id)).status == "suspended"
            genuine = SignalWaiter(token, run.id, 2)
            await durable_store.put_signal_waiter(genuine)
            assert await durable_store.pair_signal(token, now) == genuine, "the signal was lost"
            delivered = await durable_store.get_checkpoint(run.id, 2)
            assert delivered is not None
            assert (delivered.status, delivered.output) == ("completed", "for the genuine waiter")

    @needs("race_repeats")
    async def test_pair_signal_racing_a_timeout_write_either_delivers_or_times_out(
        self, durable_store: StateStore
    ) -> None:
        async def one_round() -> None:
            now = _now()
            began = now - timedelta(seconds=1)
            run = await _locked(durable_store, _A, began)
            waiter = SignalWaiter(_new_id("token"), run.id, 1)
            waiting = _waiting(waiter, began, wake_at=now)
            assert await durable_store.put_signal_waiter(waiter, owner=_A, checkpoint=waiting)
            await durable_store.buffer_signal(waiter.token, "go", now)
            timed_out = dataclasses.replace(
                waiting,
                status="failed",
                finished_at=now,
                error={"type": "SignalTimeoutError", "message": "no signal in time"},
            )
            timeout = self.options.concurrency // 2

            async def contend(i: int) -> SignalWaiter | bool | None:
                if i == timeout:  # the run's worker gives up waiting
                    return await durable_store.save_checkpoint(
                        timed_out, owner=_A, expect=("pending", 0)
                    )
                return await durable_store.pair_signal(waiter.token, now)

            results = await _race(self.options.concurrency, contend)
            paired = [r for i, r in enumerate(results) if i != timeout and r is not None]
            stored = await durable_store.get_checkpoint(run.id, 1)
            assert not await _has_waiter(durable_store, waiter)
            left = await _buffered(durable_store, waiter.token)
            if results[timeout]:
                assert paired == [], "a signal was delivered onto a wait that timed out"
                assert stored == timed_out
                assert left == ["go"], "the signal was lost to a wait that timed out"
            else:
                assert paired == [waiter], f"{len(paired)} pairers delivered one signal"
                assert stored is not None
                assert (stored.status, stored.output) == ("completed", "go")
                assert stored.started_at == began, "the delivery lost when the wait began"
                assert left == [], "a delivered signal is still buffered"

        for _ in range(self.options.race_repeats):
            await one_round()

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
            assert await _buffered(durable_store, token) == [1, 2]

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
                assert not await _has_waiter(durable_store, waiter)
                assert (await _get(durable_store, waiter.run_id)).status == "pending"
                assert await _buffered(durable_store, waiter.token) == []

        for _ in range(self.options.race_repeats):
            await one_round()
