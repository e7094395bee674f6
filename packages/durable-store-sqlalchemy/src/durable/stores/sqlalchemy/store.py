"""``SqlAlchemyStateStore``: the StateStore protocol on SQLAlchemy 2 Core, async.

Every call runs on an autocommit connection (one the store kept from an earlier call, or a
new checkout) and runs one statement whose ``WHERE`` or ``RETURNING`` decides the outcome.
The few calls that need more (``pair_signal``, ``delete_run``, a patch that rewrites
attributes, a compare-and-set with an owner or a patch, a waiter with its checkpoint) run one
explicit transaction (``BEGIN IMMEDIATE`` on SQLite) that locks the run row first. No
transaction stays open while code outside the store runs, except a transactional step's
function, which runs inside its own (``run_in_transaction``). Fixed statements run on the driver
connection directly where ``_direct`` can (asyncpg, aiosqlite).

The class holds the protocol methods; how a call runs (retries, transactions, failure
classification) is in ``_calls``, the connections kept between calls in ``_connections``, and
the signal algorithms (waiter writes, buffered takes, pairing) in ``_signals``.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from durable.core import (
    BufferedSignal,
    CheckpointRecord,
    RunNotFound,
    RunPage,
    SignalWaiter,
    decode_cursor,
    encode_cursor,
)
from durable.stores.sqlalchemy import _signals
from durable.stores.sqlalchemy._calls import Rollback, Session, StoreCalls
from durable.stores.sqlalchemy._convert import (
    attribute_rows,
    checkpoint_params,
    checkpoint_record,
    patch_params,
    run_params,
    run_record,
    utcnow,
)
from durable.stores.sqlalchemy._errors import is_duplicate_key
from durable.stores.sqlalchemy._schema import create_durable_tables
from durable.stores.sqlalchemy._statements import (
    RUN_COLUMNS,
    STATUSES,
    R,
    RunFilter,
    Statements,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence
    from datetime import datetime
    from types import TracebackType

    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.sql import ColumnElement, Executable, Select
    from typing_extensions import Unpack

    from durable.core import (
        CheckpointStatus,
        JSONValue,
        RunPatch,
        RunQuery,
        RunRecord,
        RunStatus,
    )

_T = TypeVar("_T")


class SqlAlchemyStateStore(StoreCalls):
    """The durable state in PostgreSQL, MySQL/MariaDB or SQLite, through SQLAlchemy 2 (async).

    Pass an ``AsyncEngine`` you own (the store never disposes it), or let :meth:`from_url` make
    one tuned for the store. Store calls run on autocommit connections whatever the engine's
    isolation level; an engine created with ``isolation_level="AUTOCOMMIT"`` and
    ``skip_autocommit_rollback=True`` (what :meth:`from_url` does) saves switching the mode on
    every checkout.

    Attributes:
        engine: The engine the store runs on.
    """

    def __init__(self, engine: AsyncEngine, *, keep_connections: int = 4) -> None:
        """Keep the durable tables in ``engine``'s database.

        Args:
            engine: An async engine on PostgreSQL (asyncpg, psycopg), MySQL/MariaDB (asyncmy,
                aiomysql) or SQLite (aiosqlite, on a file).
            keep_connections: How many connections the store keeps checked out between calls
                (0: each call returns its connection to the pool). A call that finds one
                skips the pool; a kept connection idle for more than 10 seconds goes back to
                the pool, so the pool's own checks (``pool_pre_ping``, ``pool_recycle``)
                apply to it again. On SQLite the one writer connection is kept as well.

        Raises:
            ValueError: The engine's database is none of those, or SQLite older than 3.35.
        """
        if keep_connections < 0:
            raise ValueError(f"keep_connections must be 0 or more, not {keep_connections}")
        super().__init__(engine, keep_connections)
        self._owns_engine = False

    @classmethod
    def from_url(
        cls, url: str | URL, *, keep_connections: int = 4, **engine_kwargs: object
    ) -> Self:
        """A store on a new engine for ``url``; :meth:`aclose` disposes it.

        The engine is created in autocommit mode with ``skip_autocommit_rollback=True``;
        ``engine_kwargs`` go to ``create_async_engine`` and override those.

        Args:
            url: e.g. ``postgresql+asyncpg://user@host/db``, ``mysql+asyncmy://user@host/db``
                or ``sqlite+aiosqlite:///path/to/state.db``.
            keep_connections: As for the constructor.
            **engine_kwargs: More ``create_async_engine`` arguments (``pool_size``, ...).

        Returns:
            The store. Close it with :meth:`aclose` or ``async with``.
        """
        options: dict[str, Any] = {
            "isolation_level": "AUTOCOMMIT",
            "skip_autocommit_rollback": True,
        }
        options.update(engine_kwargs)
        store = cls(create_async_engine(url, **options), keep_connections=keep_connections)
        store._owns_engine = True
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Return the kept connections; dispose the engine if :meth:`from_url` made it.

        An engine passed in stays open; close the store anyway, to hand back the
        connections it keeps between calls. A call still running returns its connection to
        the pool when it ends.
        """
        self._closed = True
        await self._return_kept()
        if self._owns_engine:
            await self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the missing durable tables and indexes (idempotent; touches nothing else)."""

        async def op(s: Session) -> None:
            await s.conn.run_sync(create_durable_tables)

        await self._run("ensure_schema", op, tx=True)

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> bool:
        """Insert the run and its attribute rows; False, changing nothing, if the id exists."""
        params = run_params(run)
        rows = attribute_rows(run.id, run.attributes)
        mysql = self._mysql

        async def op(s: Session) -> bool:
            try:
                inserted = await s.count(s.q.insert_run, params) > 0
            except sa_exc.IntegrityError as exc:
                if mysql and is_duplicate_key(exc):
                    raise Rollback(False) from None
                raise
            if not inserted:
                raise Rollback(False)
            if rows:
                await s.conn.execute(s.q.insert_attributes, rows)
            return True

        return await self._run(f"create_run(run {run.id!r})", op, tx=bool(rows))

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        rows = await self._rows(f"get_run(run {run_id!r})", _get_run, {"rid": run_id})
        return run_record(rows[0]) if rows else None

    async def update_run(
        self,
        run_id: str,
        *,
        if_status: Collection[RunStatus] | None = None,
        **patch: Unpack[RunPatch],
    ) -> bool:
        """Patch the run in one ``UPDATE`` (one transaction when attributes change)."""
        keys = frozenset(patch)
        conditional = if_status is not None
        params = patch_params(patch)
        params["rid"] = run_id
        if if_status is not None:
            params["if_status"] = list(if_status)
        rows = attribute_rows(run_id, patch["attributes"]) if "attributes" in patch else None

        async def op(s: Session) -> bool:
            # Through SQLAlchemy: if_status is an expanding IN list.
            if (await s.conn.execute(s.q.update_run(keys, conditional), params)).rowcount == 0:
                if not await s.rows(s.q.run_exists, {"rid": run_id}):
                    raise RunNotFound(f"no run {run_id!r}")
                raise Rollback(False)
            if rows is not None:
                await _replace_attributes(s, run_id, rows)
            return True

        return await self._run(f"update_run(run {run_id!r})", op, tx=rows is not None)

    async def delete_run(self, run_id: str) -> None:
        """Delete the run, its checkpoints, waiters and attributes, in one transaction."""

        async def op(s: Session) -> None:
            for stmt in s.q.delete_run_rows:
                await s.count(stmt, {"run_id": run_id})

        await self._run(f"delete_run(run {run_id!r})", op, tx=True)

    async def list_runs(self, query: RunQuery) -> RunPage:
        """Runs matching ``query``, newest first (``created_at``, then ``id``), one page."""
        after = decode_cursor(query.cursor) if query.cursor else None

        def build(q: Statements) -> Executable:
            where: list[ColumnElement[bool]] = []
            if query.namespace is not None:
                where.append(R.namespace == query.namespace)
            if query.run_ids is not None:
                where.append(R.id.in_(sorted(query.run_ids)))
            if query.statuses is not None:
                where.append(R.status.in_(sorted(query.statuses)))
            if query.workflow is not None:
                where.append(R.workflow == query.workflow)
            if query.tags:
                where += q.tags_filter(query.tags)
            where += [q.attribute_filter(k, v) for k, v in sorted(query.attributes.items())]
            if query.created_after is not None:
                where.append(R.created_at >= query.created_after)
            if query.created_before is not None:
                where.append(R.created_at < query.created_before)
            if after is not None:
                at, last_id = after
                where.append((R.created_at < at) | ((R.created_at == at) & (R.id < last_id)))
            return (
                select(*RUN_COLUMNS)
                .where(*where)
                .order_by(R.created_at.desc(), R.id.desc())
                .limit(query.limit + 1)
            )

        rows = await self._adhoc_rows("list_runs", build)
        page = [run_record(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return RunPage(runs=page, next_cursor=encode_cursor(page[-1]) if more and page else None)

    # -- checkpoints ----------------------------------------------------------------------------

    async def get_checkpoint(self, run_id: str, seq: int) -> CheckpointRecord | None:
        """The checkpoint at ``(run_id, seq)``, or None."""
        params = {"run_id": run_id, "seq": seq}
        rows = await self._rows(f"get_checkpoint(run {run_id!r}, seq {seq})", _get_cp, params)
        return checkpoint_record(rows[0]) if rows else None

    async def list_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """Every checkpoint of the run, by ``seq``, in one query."""
        what = f"list_checkpoints(run {run_id!r})"
        rows = await self._rows(what, _list_cps, {"run_id": run_id})
        return [checkpoint_record(row) for row in rows]

    async def save_checkpoint(
        self,
        checkpoint: CheckpointRecord,
        run_patch: RunPatch | None = None,
        *,
        owner: str | None = None,
        expect: tuple[CheckpointStatus, int] | None = None,
    ) -> bool:
        """Upsert the checkpoint, fenced by ``owner``, with the run patch, atomically.

        Without a patch: one upsert, ``INSERT ... SELECT ... FROM durable_workflow_runs WHERE
        <owner holds the running run>`` when fenced. With a patch: one statement on PostgreSQL
        (a data-modifying CTE), one transaction elsewhere. With ``expect``: one conditional
        ``UPDATE`` of the checkpoint row; with ``owner`` or a patch too, one transaction that
        locks the run row first.
        """
        run_id = checkpoint.run_id
        what = f"save_checkpoint(run {run_id!r}, seq {checkpoint.seq})"
        params = checkpoint_params(checkpoint)
        if expect is not None:
            params["e_status"], params["e_attempts"] = expect
            return await self._compare_and_save(what, params, run_patch, owner)
        fenced = owner is not None
        if fenced:
            params["owner"] = owner
        if not run_patch:
            if not fenced:
                await self._count(what, _upsert_cp, params)
                return True
            return await self._count(what, _save_fenced, params) > 0
        keys = frozenset(run_patch)
        if self._postgres and "attributes" not in keys:
            params.update(patch_params(run_patch))
            written = await self._count(what, lambda q: q.save_with_patch(keys, fenced), params)
            if not written and not fenced:
                raise RunNotFound(f"no run {run_id!r}")
            return written > 0
        run_args = patch_params(run_patch)
        run_args["rid"] = run_id
        if fenced:
            run_args["owner"] = owner
        rows = attribute_rows(run_id, run_patch["attributes"]) if "attributes" in keys else None

        async def op(s: Session) -> bool:
            if await s.count(s.q.fenced_run_update(keys, fenced), run_args) == 0:
                if not fenced:
                    raise RunNotFound(f"no run {run_id!r}")
                raise Rollback(False)
            if rows is not None:
                await _replace_attributes(s, run_id, rows)
            await s.count(s.q.upsert_checkpoint, params)
            return True

        return await self._run(what, op, tx=True)

    async def _compare_and_save(
        self,
        what: str,
        params: dict[str, Any],
        run_patch: RunPatch | None,
        owner: str | None,
    ) -> bool:
        """``save_checkpoint`` with ``expect``: the checkpoint's compare-and-set."""
        if owner is None and not run_patch:
            return await self._count(what, _save_expected, params) > 0
        run_id = params["c_run_id"]
        patch: RunPatch = run_patch or {}
        keys = frozenset(patch)
        run_args = patch_params(patch)
        run_args["rid"] = run_id
        rows = attribute_rows(run_id, patch["attributes"]) if "attributes" in patch else None

        async def op(s: Session) -> bool:
            run = await s.first(s.q.lock_run_state, {"rid": run_id})
            if owner is not None and (run is None or (run[0], run[1]) != ("running", owner)):
                raise Rollback(False)
            if await s.count(s.q.save_checkpoint_expected, params) == 0:
                raise Rollback(False)
            if keys:
                if run is None:
                    raise RunNotFound(f"no run {run_id!r}")
                await s.count(s.q.update_run(keys, False), run_args)
                if rows is not None:
                    await _replace_attributes(s, run_id, rows)
            return True

        return await self._run(what, op, tx=True)

    async def run_in_transaction(
        self,
        run_id: str,
        owner: str,
        fn: Callable[[AsyncConnection], Awaitable[_T]],
        checkpoint: Callable[[_T], CheckpointRecord | None],
    ) -> tuple[_T, bool]:
        """Run ``fn`` on a connection in one transaction; commit its checkpoint with it.

        ``fn`` receives an ``AsyncConnection`` of :attr:`engine` inside an open transaction
        (``BEGIN IMMEDIATE`` on SQLite); its statements, SQLAlchemy Core or an ``AsyncSession``
        bound to it and flushed, join that transaction. Then the run row is locked, the fence
        checked and the checkpoint upserted, and all of it commits at once; a failure, a
        refused checkpoint or a lost fence rolls it all back. A deadlock or serialization
        failure reruns ``fn`` in a new transaction. On SQLite the transaction holds the
        database's one write lock while ``fn`` runs.
        """
        what = f"run_in_transaction(run {run_id!r})"

        async def op(s: Session) -> tuple[_T, bool]:
            result = await fn(s.conn)
            record = checkpoint(result)
            if record is None:
                raise Rollback((result, False))
            if record.run_id != run_id:
                raise ValueError(f"checkpoint of run {record.run_id!r} is not of run {run_id!r}")
            run = await s.first(s.q.lock_run_state, {"rid": run_id})
            if run is None or (run[0], run[1]) != ("running", owner):
                raise Rollback((result, False))
            await s.count(s.q.upsert_checkpoint, checkpoint_params(record))
            return result, True

        return await self._run(what, op, tx=True)

    # -- dispatch -------------------------------------------------------------------------------

    async def list_pending_runs(
        self,
        limit: int,
        namespace: str | None,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` pending runs, oldest first, filtered before the limit."""
        run_filter = RunFilter.of(namespace, workflows)
        return await self._dispatch("list_pending_runs", _pending, run_filter, {"limit": limit})

    async def list_incomplete_runs(
        self,
        now: datetime,
        namespace: str | None,
        limit: int = 100,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` running runs whose lease expired at ``now``, oldest lease first."""
        run_filter = RunFilter.of(namespace, workflows)
        params = {"now": now, "limit": limit}
        return await self._dispatch("list_incomplete_runs", _incomplete, run_filter, params)

    async def list_due_timers(
        self,
        now: datetime,
        namespace: str | None,
        limit: int,
        *,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` suspended runs due at ``now``, earliest ``wake_at`` first."""
        run_filter = RunFilter.of(namespace, workflows)
        params = {"now": now, "limit": limit}
        return await self._dispatch("list_due_timers", _due, run_filter, params)

    async def _dispatch(
        self,
        what: str,
        base: Callable[[Statements], Select[Any]],
        run_filter: RunFilter,
        params: dict[str, Any],
    ) -> list[RunRecord]:
        """Rows of a dispatch query narrowed by ``run_filter`` (no query if nothing matches)."""
        if run_filter.matches_nothing:
            return []
        params.update(run_filter.params())
        rows = await self._rows(what, lambda q: q.filtered(base(q), run_filter), params)
        return [run_record(row) for row in rows]

    # -- leases ---------------------------------------------------------------------------------

    async def try_lock_run(
        self,
        run_id: str,
        owner: str,
        lease_until: datetime,
        now: datetime,
        *,
        namespace: str | None = None,
        workflows: Collection[tuple[str, str]] | None = None,
    ) -> bool:
        """Claim the run: one conditional ``UPDATE`` (filters included) whose row count decides."""
        run_filter = RunFilter.of(namespace, workflows)
        if run_filter.matches_nothing:
            return False
        params = {"rid": run_id, "owner": owner, "lease": lease_until, "now": now, "wall": utcnow()}
        params.update(run_filter.params())
        what = f"try_lock_run(run {run_id!r})"
        return await self._count(what, lambda q: q.filtered(q.try_lock, run_filter), params) > 0

    async def renew_run_lock(self, run_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend ``owner``'s lease of the running run: one conditional ``UPDATE``."""
        params = {"rid": run_id, "owner": owner, "lease": lease_until}
        return await self._count(f"renew_run_lock(run {run_id!r})", _renew, params) > 0

    async def release_run_lock(
        self,
        run_id: str,
        owner: str,
        *,
        checkpoints: Sequence[CheckpointRecord] = (),
        **patch: Unpack[RunPatch],
    ) -> RunStatus | None:
        """Clear ``owner``'s lease and apply ``patch`` while running: one ``UPDATE``.

        The resulting status comes back by ``RETURNING`` (MySQL: ``LAST_INSERT_ID``). With
        ``checkpoints``, one transaction: their fenced upserts (which lock the run row), then
        the ``UPDATE``. A patch with ``attributes`` takes one transaction too.

        Raises:
            ValueError: A checkpoint belongs to another run.
        """
        what = f"release_run_lock(run {run_id!r})"
        for cp in checkpoints:
            if cp.run_id != run_id:
                raise ValueError(f"{what}: checkpoint {cp.seq} belongs to run {cp.run_id!r}")
        written = [_fenced_params(cp, owner) for cp in checkpoints]
        if "attributes" in patch:
            return await self._release_with_attributes(what, run_id, owner, patch, written)
        keys = frozenset(patch)
        suspend = patch.get("status") == "suspended"
        params = patch_params(patch)
        if suspend:
            del params["v_status"]  # the statement decides between suspended and pending
        params["rid"] = run_id
        params["owner"] = owner

        async def op(s: Session) -> RunStatus | None:
            for cp_params in written:  # nothing is written unless owner holds the running run
                await s.count(s.q.save_checkpoint_fenced, cp_params)
            stmt = s.q.release(keys, suspend)
            if s.q.features.returning:
                row = await s.first(stmt, params)
                return None if row is None else cast("RunStatus", row[0])
            result = await s.conn.execute(stmt, params)  # MySQL: the status in LAST_INSERT_ID
            return STATUSES[result.lastrowid - 1] if result.rowcount else None

        return await self._run(what, op, tx=bool(written))

    async def _release_with_attributes(
        self,
        what: str,
        run_id: str,
        owner: str,
        patch: RunPatch,
        written: list[dict[str, Any]],
    ) -> RunStatus | None:
        rows = attribute_rows(run_id, patch["attributes"])

        async def op(s: Session) -> RunStatus | None:
            run = await s.first(s.q.lock_run_state, {"rid": run_id})
            if run is None or run[1] != owner:
                raise Rollback(None)
            status = cast("RunStatus", run[0])
            if status == "running":
                for cp_params in written:  # the run row is locked and held by owner
                    await s.count(s.q.upsert_checkpoint, cp_params)
                applied: RunPatch = {**patch}
                if applied.get("status") == "suspended" and run[2]:
                    applied["status"] = "pending"
                    applied["wake_at"] = None
                params = patch_params(applied)
                params["rid"] = run_id
                await s.count(s.q.update_run(frozenset(applied), False), params)
                await _replace_attributes(s, run_id, rows)
                status = applied.get("status", status)
            await s.count(s.q.clear_lease, {"rid": run_id})
            return status

        return await self._run(what, op, tx=True)

    async def wake_run(self, run_id: str) -> bool:
        """Make a suspended run pending, or flag a running one: one ``UPDATE``."""

        async def op(s: Session) -> bool:
            params = {"rid": run_id, "wall": utcnow()}
            if s.q.features.returning:
                row = await s.first(s.q.wake, params)
                return row is not None and row[0] == "pending"
            result = await s.conn.execute(s.q.wake, params)  # MySQL: the status in LAST_INSERT_ID
            return bool(result.rowcount) and STATUSES[result.lastrowid - 1] == "pending"

        return await self._run(f"wake_run(run {run_id!r})", op)

    # -- signals --------------------------------------------------------------------------------

    async def put_signal_waiter(
        self,
        waiter: SignalWaiter,
        *,
        owner: str | None = None,
        checkpoint: CheckpointRecord | None = None,
    ) -> bool:
        """Register the waiter: one upsert on the token, fenced by ``owner`` when given.

        Fenced: ``INSERT ... SELECT ... FROM durable_workflow_runs WHERE <owner holds the
        running run>``. With ``checkpoint``: one transaction that locks the run row, checks the
        fence, then upserts the waiter and the checkpoint (the order ``pair_signal`` takes).

        Raises:
            ValueError: ``checkpoint`` is not at the waiter's ``(run_id, seq)``.
        """
        return await _signals.put_waiter(self, waiter, owner=owner, checkpoint=checkpoint)

    async def take_signal_waiter(self, token: str) -> SignalWaiter | None:
        """Delete and return the token's waiter: ``DELETE ... RETURNING`` (MySQL: row lock)."""
        return await _signals.take_waiter(self, token)

    async def remove_signal_waiter(self, waiter: SignalWaiter) -> bool:
        """Delete exactly this waiter (token, run id and seq all match)."""
        return await _signals.remove_waiter(self, waiter)

    async def list_signal_waiters(self, prefix: str = "") -> list[SignalWaiter]:
        """Waiters whose token starts with ``prefix`` (case-sensitive), by token."""
        return await _signals.list_waiters(self, prefix)

    async def buffer_signal(self, token: str, payload: JSONValue, now: datetime) -> int:
        """Append a signal to the token's FIFO: one ``INSERT``; returns its id."""
        return await _signals.buffer_signal(self, token, payload, now)

    async def take_buffered_signal(self, token: str) -> BufferedSignal | None:
        """Delete and return the token's oldest signal: one ``DELETE ... RETURNING``.

        PostgreSQL picks the row with ``FOR UPDATE SKIP LOCKED``, so concurrent takers get
        different signals; MariaDB uses ``DELETE ... ORDER BY id LIMIT 1 RETURNING``; MySQL
        (no ``RETURNING``) locks the oldest row with ``SKIP LOCKED`` and deletes it.
        """
        return await _signals.take_buffered(self, token)

    async def list_pairable_tokens(self, limit: int) -> list[str]:
        """Up to ``limit`` tokens with both a waiter and a buffered signal, sorted (one query)."""
        rows = await self._rows("list_pairable_tokens", _pairable_tokens, {"limit": limit})
        return [row[0] for row in rows]

    async def pair_signal(
        self, token: str, now: datetime, *, holder: str | None = None
    ) -> SignalWaiter | None:
        """Deliver the token's oldest buffered signal to its waiter, in one transaction.

        Looks first without locking; then locks the waiter's run row, deletes that exact
        waiter (another caller may have taken it: look again), takes the oldest signal,
        completes the wait's ``pending`` checkpoint (one conditional ``UPDATE``) or creates it
        where there is none, and wakes the run. When the checkpoint is in any other state the
        transaction is undone and the stale waiter alone is deleted.
        """
        return await _signals.pair_signal(self, token, now, holder)


# -- module-level helpers (no per-call construction) ------------------------------------------


def _fenced_params(checkpoint: CheckpointRecord, owner: str) -> dict[str, Any]:
    params = checkpoint_params(checkpoint)
    params["owner"] = owner
    return params


async def _replace_attributes(s: Session, run_id: str, rows: list[dict[str, Any]]) -> None:
    await s.count(s.q.delete_attributes, {"run_id": run_id})
    if rows:
        await s.conn.execute(s.q.insert_attributes, rows)  # executemany: through SQLAlchemy


# Which of the built statements a call runs (looked up once they exist).
_get_run = attrgetter("get_run")
_get_cp = attrgetter("get_checkpoint")
_list_cps = attrgetter("list_checkpoints")
_upsert_cp = attrgetter("upsert_checkpoint")
_save_fenced = attrgetter("save_checkpoint_fenced")
_save_expected = attrgetter("save_checkpoint_expected")
_pending = attrgetter("pending")
_incomplete = attrgetter("incomplete")
_due = attrgetter("due")
_renew = attrgetter("renew")
_pairable_tokens = attrgetter("pairable_tokens")
