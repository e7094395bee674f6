"""The signal algorithms: waiter writes, buffered takes and pairing a signal with its waiter.

Each function is the body of one of the store's signal methods, run through the store's calls
(``StoreCalls._run``). Pairing looks without locking first, then locks the waiter's run row and
re-checks inside one transaction; see :func:`pair_signal`.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from durable.core import (
    TERMINAL_STATUSES,
    BufferedSignal,
    CheckpointRecord,
    SignalWaiter,
    StoreError,
)
from durable.stores.sqlalchemy._calls import Rollback, Session
from durable.stores.sqlalchemy._convert import checkpoint_params, utcnow
from durable.stores.sqlalchemy._errors import is_duplicate_key
from durable.stores.sqlalchemy._statements import W

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime

    from sqlalchemy.sql import Executable

    from durable.core import JSONValue
    from durable.stores.sqlalchemy._calls import StoreCalls
    from durable.stores.sqlalchemy._statements import Features, Statements


_PAIR_ROUNDS = 8
"""Tries of ``pair_signal`` when the waiter changed between looking and locking."""
_RETRY_PAIR = object()
_STALE_WAITER = object()


async def put_waiter(
    calls: StoreCalls,
    waiter: SignalWaiter,
    *,
    owner: str | None = None,
    checkpoint: CheckpointRecord | None = None,
) -> bool:
    """``put_signal_waiter``: the upsert (fenced or not), or the transaction with the checkpoint.

    Raises:
        ValueError: ``checkpoint`` is not at the waiter's ``(run_id, seq)``.
    """
    what = f"put_signal_waiter(token {waiter.token!r})"
    params: dict[str, Any] = {"token": waiter.token, "run_id": waiter.run_id, "seq": waiter.seq}
    if owner is not None:
        params["owner"] = owner
    if checkpoint is None:
        if owner is None:
            await calls._count(what, _put_waiter, params)
            return True
        return await calls._count(what, _put_waiter_fenced, params) > 0
    if (checkpoint.run_id, checkpoint.seq) != (waiter.run_id, waiter.seq):
        raise ValueError(
            f"{what}: the checkpoint is at run {checkpoint.run_id!r} seq {checkpoint.seq}, "
            f"not at the waiter's run {waiter.run_id!r} seq {waiter.seq}"
        )
    cp_params = checkpoint_params(checkpoint)

    async def op(s: Session) -> bool:
        run = await s.first(s.q.lock_run_state, {"rid": waiter.run_id})
        if owner is not None and (run is None or (run[0], run[1]) != ("running", owner)):
            raise Rollback(False)
        await s.count(s.q.put_waiter, params)
        await s.count(s.q.upsert_checkpoint, cp_params)
        return True

    return await calls._run(what, op, tx=True)


async def take_waiter(calls: StoreCalls, token: str) -> SignalWaiter | None:
    """``take_signal_waiter``: ``DELETE ... RETURNING``, or lock and delete (MySQL)."""

    async def op(s: Session) -> SignalWaiter | None:
        params = {"token": token}
        if s.q.features.delete_returning:
            row = await s.first(s.q.take_waiter, params)
        else:
            row = await s.first(s.q.lock_waiter, params)
            if row is not None:
                await s.count(s.q.delete_waiter, params)
        return None if row is None else SignalWaiter(row[0], row[1], row[2])

    return await calls._run(f"take_signal_waiter(token {token!r})", op, tx=_no_returning)


async def remove_waiter(calls: StoreCalls, waiter: SignalWaiter) -> bool:
    """``remove_signal_waiter``: delete the waiter whose token, run id and seq all match."""
    params = {"token": waiter.token, "run_id": waiter.run_id, "seq": waiter.seq}
    what = f"remove_signal_waiter(token {waiter.token!r})"
    return await calls._count(what, _remove_waiter, params) > 0


async def list_waiters(calls: StoreCalls, prefix: str) -> list[SignalWaiter]:
    """``list_signal_waiters``: a statement built for the prefix (``GLOB`` on SQLite)."""
    sqlite = calls._sqlite

    def build(q: Statements) -> Executable:
        stmt = select(W.token, W.run_id, W.seq).order_by(W.token)
        if not prefix:
            return stmt
        if sqlite:  # LIKE ignores ASCII case on SQLite; GLOB does not
            escaped = "".join(f"[{ch}]" if ch in "*?[" else ch for ch in prefix)
            return stmt.where(W.token.op("GLOB")(escaped + "*"))
        return stmt.where(W.token.startswith(prefix, autoescape=True))

    rows = await calls._adhoc_rows("list_signal_waiters", build)
    return [SignalWaiter(row[0], row[1], row[2]) for row in rows]


async def buffer_signal(calls: StoreCalls, token: str, payload: JSONValue, now: datetime) -> int:
    """``buffer_signal``: one ``INSERT``; the new row's id."""
    params = {"token": token, "payload": payload, "created_at": now}

    async def op(s: Session) -> int:
        result = await s.conn.execute(s.q.insert_signal, params)
        key = result.inserted_primary_key
        if key is None or key[0] is None:
            raise StoreError(f"buffer_signal(token {token!r}): no id came back")
        return int(key[0])

    return await calls._run(f"buffer_signal(token {token!r})", op)


async def take_buffered(calls: StoreCalls, token: str) -> BufferedSignal | None:
    """``take_buffered_signal``: delete and return the token's oldest signal."""

    async def op(s: Session) -> BufferedSignal | None:
        return await _take_oldest(s, token)

    return await calls._run(f"take_buffered_signal(token {token!r})", op, tx=_no_returning)


async def pair_signal(
    calls: StoreCalls, token: str, now: datetime, holder: str | None
) -> SignalWaiter | None:
    """``pair_signal``: peek without locking, then pair in one transaction (a few rounds).

    A round whose waiter was taken or replaced between the peek and the lock looks again; a
    waiter whose checkpoint already finished is deleted alone, the signal staying buffered.
    """
    what = f"pair_signal(token {token!r})"
    for _ in range(_PAIR_ROUNDS):
        rows = await calls._rows(what, _peek_pair, {"token": token})
        if not rows or not rows[0][2]:
            return None
        waiter = SignalWaiter(token, rows[0][0], rows[0][1])
        outcome = await calls._run(what, _pair(waiter, now, holder, calls._mysql), tx=True)
        if outcome is _STALE_WAITER:
            exact = {"token": token, "run_id": waiter.run_id, "seq": waiter.seq}
            await calls._count(what, _remove_waiter, exact)
            return None
        if outcome is not _RETRY_PAIR:
            return cast("SignalWaiter | None", outcome)
    return None


def _no_returning(features: Features) -> bool:
    return not features.delete_returning


async def _take_oldest(s: Session, token: str) -> BufferedSignal | None:
    params = {"token": token}
    row: Sequence[Any] | None
    if s.q.take_signal is not None:
        row = await s.first(s.q.take_signal, params)
    else:  # in a transaction: lock the oldest unlocked row, then delete it
        row = await s.first(s.q.lock_oldest_signal, params)
        if row is not None:
            await s.count(s.q.delete_signal, {"sid": row[0]})
    return None if row is None else BufferedSignal(int(row[0]), row[1], row[2], row[3])


def _pair(
    waiter: SignalWaiter, now: datetime, holder: str | None, mysql: bool
) -> Callable[[Session], Awaitable[object]]:
    async def op(s: Session) -> object:
        q = s.q
        run = await s.first(q.lock_run_state, {"rid": waiter.run_id})
        exact = {"token": waiter.token, "run_id": waiter.run_id, "seq": waiter.seq}
        if await s.count(q.remove_waiter, exact) == 0:
            raise Rollback(_RETRY_PAIR)  # taken or replaced meanwhile: look again
        if run is None or run[0] in TERMINAL_STATUSES:
            return None  # the waiter goes, the signal stays buffered
        status, locked_by = run[0], run[1]
        signal = await _take_oldest(s, waiter.token)
        if signal is None:
            raise Rollback(None)
        checkpoint = CheckpointRecord(
            run_id=waiter.run_id,
            seq=waiter.seq,
            name=waiter.token,
            kind="signal",
            status="completed",
            step_id=f"{waiter.run_id}:{waiter.seq}",
            started_at=now,
            finished_at=now,
            output=signal.payload,
            attempts=1,
        )
        if not await _deliver(s, checkpoint, mysql):
            raise Rollback(_STALE_WAITER)  # the seq already finished: undo, keep the signal
        if status == "suspended":
            await s.count(q.wake_suspended, {"rid": waiter.run_id, "wall": utcnow()})
        elif status == "running" and (holder is None or locked_by != holder):
            await s.count(q.flag_wake, {"rid": waiter.run_id})
        return waiter

    return op


async def _deliver(s: Session, checkpoint: CheckpointRecord, mysql: bool) -> bool:
    """Complete the wait's ``pending`` checkpoint, or create it where none exists.

    Returns:
        False when the row at ``(run_id, seq)`` is in any other state (nothing written).
    """
    params = checkpoint_params(checkpoint)
    if mysql:
        # InnoDB would gap-lock an absent key for the UPDATE, and pairers of other runs whose
        # keys share that gap would deadlock on their INSERTs: a plain read takes no lock.
        key = {"run_id": checkpoint.run_id, "seq": checkpoint.seq}
        if await s.rows(s.q.checkpoint_exists, key):
            return await s.count(s.q.deliver_signal, params) > 0
    elif await s.count(s.q.deliver_signal, params) > 0:
        return True
    try:
        return await s.count(s.q.insert_checkpoint, params) > 0
    except sa_exc.IntegrityError as exc:
        if mysql and is_duplicate_key(exc):
            return False
        raise


# Which of the built statements a call runs (looked up once they exist).
_put_waiter = attrgetter("put_waiter")
_put_waiter_fenced = attrgetter("put_waiter_fenced")
_remove_waiter = attrgetter("remove_waiter")
_peek_pair = attrgetter("peek_pair")
