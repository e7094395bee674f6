"""Admin: the optional :class:`~durable.core.StateStoreAdmin` operations.

``delete_run``, ``take_signal_waiter``, ``list_signal_waiters`` and ``take_buffered_signal``:
the engine never calls them, so a store that offers them opts into this suite on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from durable.conformance._base import SuiteBase
from durable.conformance._options import needs
from durable.conformance.state_store._helpers import (
    _assert_same_run,
    _assert_utc,
    _checkpoint,
    _create,
    _new_id,
    _now,
    _race,
    _run,
)
from durable.core import RunQuery, SignalWaiter, StateStore, StateStoreAdmin

if TYPE_CHECKING:
    from durable.core import JSONValue


class _AdminStore(StateStore, StateStoreAdmin, Protocol):
    """A store offering both protocols, as the admin suite's fixture yields."""


class StateStoreAdminSuite(SuiteBase):
    """Conformance tests for a :class:`~durable.core.StateStoreAdmin`, for stores that offer it.

    Subclass it next to ``StateStoreSuite`` (one class may subclass both); the ``durable_store``
    fixture then yields a store implementing both protocols.
    """

    # -- delete_run -----------------------------------------------------------------------------

    async def test_delete_run_removes_checkpoints_waiters_and_attributes(
        self, durable_store: _AdminStore
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
        self, durable_store: _AdminStore
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

    async def test_delete_run_of_unknown_id_is_a_noop(self, durable_store: _AdminStore) -> None:
        await durable_store.delete_run(_new_id())

    async def test_deleted_run_id_can_be_reused_without_leftovers(
        self, durable_store: _AdminStore
    ) -> None:
        run = await _create(durable_store, _run(tags=["old"], attributes={"old": 1}))
        assert await durable_store.save_checkpoint(_checkpoint(run.id, 1))
        await durable_store.delete_run(run.id)
        fresh = await _create(durable_store, _run(run_id=run.id, payload="fresh"))
        _assert_same_run(await durable_store.get_run(run.id), fresh)
        assert await durable_store.list_checkpoints(run.id) == []

    # -- take_signal_waiter / list_signal_waiters -----------------------------------------------

    async def test_take_signal_waiter_returns_and_deletes_waiter(
        self, durable_store: _AdminStore
    ) -> None:
        waiter = SignalWaiter(_new_id("token"), _new_id(), 3)
        await durable_store.put_signal_waiter(waiter)
        assert await durable_store.take_signal_waiter(waiter.token) == waiter
        assert await durable_store.take_signal_waiter(waiter.token) is None
        assert await durable_store.list_signal_waiters(waiter.token) == []

    async def test_take_signal_waiter_of_unknown_token_returns_none(
        self, durable_store: _AdminStore
    ) -> None:
        assert await durable_store.take_signal_waiter(_new_id("token")) is None

    async def test_list_signal_waiters_filters_by_prefix_ordered_by_token(
        self, durable_store: _AdminStore
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

    async def test_list_signal_waiters_prefix_is_literal(self, durable_store: _AdminStore) -> None:
        base = _new_id("p")
        suffixes = ("%x", "_y", "ab", "\\z", ":Order", ":order", "[a]", "*")
        for suffix in suffixes:
            await durable_store.put_signal_waiter(SignalWaiter(base + suffix, _new_id(), 1))
        for suffix in suffixes:
            prefix = base + suffix[:2] if suffix.startswith(":") else base + suffix[0]
            got = [w.token for w in await durable_store.list_signal_waiters(prefix)]
            assert got == [base + suffix], f"prefix {prefix!r} matched {got!r}"

    @needs("race_repeats")
    async def test_one_of_many_concurrent_waiter_takers_wins(
        self, durable_store: _AdminStore
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

    async def test_admin_operations_compare_tokens_exactly(
        self, durable_store: _AdminStore
    ) -> None:
        token = _new_id("Token")
        waiter = SignalWaiter(token, _new_id(), 1)
        await durable_store.put_signal_waiter(waiter)
        await durable_store.buffer_signal(token, "payload", _now())
        for variant in (token.upper(), token.lower(), f"{token} ", f"{token}\t"):
            assert await durable_store.list_signal_waiters(variant) == [], variant
            assert await durable_store.take_signal_waiter(variant) is None, variant
            assert await durable_store.take_buffered_signal(variant) is None, variant
        assert await durable_store.take_signal_waiter(token) == waiter
        signal = await durable_store.take_buffered_signal(token)
        assert signal is not None
        assert signal.token == token

    # -- take_buffered_signal -------------------------------------------------------------------

    async def test_take_buffered_signal_is_fifo_per_token(self, durable_store: _AdminStore) -> None:
        first, second, now = _new_id("token"), _new_id("token"), _now()
        for i in range(10):
            await durable_store.buffer_signal(first if i % 3 else second, i, now)
        for token, expected in ((first, [1, 2, 4, 5, 7, 8]), (second, [0, 3, 6, 9])):
            taken = []
            while (signal := await durable_store.take_buffered_signal(token)) is not None:
                taken.append(signal.payload)
            assert taken == expected

    async def test_take_buffered_signal_returns_what_was_buffered(
        self, durable_store: _AdminStore
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
        self, durable_store: _AdminStore
    ) -> None:
        assert await durable_store.take_buffered_signal(_new_id("token")) is None

    @needs("race_repeats")
    async def test_concurrent_buffered_takers_take_each_signal_once_in_order(
        self, durable_store: _AdminStore
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
