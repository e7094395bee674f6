"""Every statement the store runs, built once per dialect and reused (compiled-cache friendly).

Each hot-path operation is one statement whose ``WHERE`` (or ``RETURNING``) decides the outcome.
MySQL evaluates ``SET`` assignments left to right, each seeing the columns already assigned, so
every assignment that reads ``status`` or ``wake_requested`` comes before the ones that change
them (``ordered_values``). MySQL has no ``UPDATE ... RETURNING``: the resulting status is carried
out of the statement with ``LAST_INSERT_ID(expr)`` (reported as ``lastrowid``).

The fixed statements name every parameter (no expanding ``IN`` lists, no values supplied only at
execution), so each compiles to one SQL text that ``_direct`` can run on the driver. A worker's
filter on ``(workflow, workflow_version)`` pairs is therefore an ``OR`` of ``AND``s over numbered
parameters (``wf_0``, ``wv_0``, ...), built once per number of pairs: it reads the same on every
database (SQLite takes a row-value ``IN`` only over ``VALUES``), and it leaves the namespace and
status indexes in charge.

Checkpoint compare-and-sets are ``UPDATE ... WHERE status = ... AND attempts = ...``: every
database re-checks an ``UPDATE``'s condition on the row version it locks, so of concurrent writers
expecting the same state one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from sqlalchemy import (
    Boolean,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from durable.core import AttributeValue, RunStatus
from durable.stores.sqlalchemy._coltypes import Key, QueryableJSON, UTCDateTime
from durable.stores.sqlalchemy._tables import (
    attributes,
    buffered_signals,
    checkpoints,
    runs,
    signal_waiters,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql import ColumnElement, Delete, Executable, Insert, Select, Update
    from sqlalchemy.sql.elements import BindParameter

Family = Literal["postgresql", "mysql", "sqlite"]
_Filterable = TypeVar("_Filterable", "Select[Any]", "Update")

R = runs.c
C = checkpoints.c
A = attributes.c
W = signal_waiters.c
B = buffered_signals.c

RUN_COLUMNS = tuple(runs.c)
CHECKPOINT_COLUMNS = tuple(checkpoints.c)
CHECKPOINT_KEYS = tuple(c.key for c in checkpoints.c)
_CHECKPOINT_DATA = tuple(c for c in checkpoints.c if not c.primary_key)
BUFFERED_COLUMNS = (B.id, B.token, B.payload, B.created_at)
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
"""Run statuses in a fixed order (MySQL carries a status out of an UPDATE as its position)."""


@dataclass(frozen=True, slots=True)
class Features:
    """What the connected database can do, as far as the statements care."""

    family: Family
    returning: bool
    """``UPDATE ... RETURNING`` (PostgreSQL, SQLite >= 3.35)."""
    delete_returning: bool
    """``DELETE ... RETURNING`` (also MariaDB >= 10.0.5)."""
    mariadb: bool

    @classmethod
    def of(cls, dialect: Dialect) -> Features:
        """The features of an initialised (connected) dialect."""
        name = dialect.name
        family: Family
        if name == "postgresql":
            family = "postgresql"
        elif name in ("mysql", "mariadb"):
            family = "mysql"
        elif name == "sqlite":
            family = "sqlite"
        else:
            raise ValueError(
                f"SqlAlchemyStateStore supports PostgreSQL, MySQL/MariaDB and SQLite, not {name!r}"
            )
        if family == "sqlite" and not dialect.update_returning:
            raise ValueError(
                "SqlAlchemyStateStore needs SQLite 3.35 or later (UPDATE/DELETE ... RETURNING)"
            )
        return cls(
            family=family,
            returning=bool(dialect.update_returning) and family != "mysql",
            delete_returning=bool(dialect.delete_returning),
            mariadb=bool(getattr(dialect, "is_mariadb", False)),
        )


def _p(name: str, type_: Any = None) -> BindParameter[Any]:
    return bindparam(name, type_=type_)


# Shared parameters: one object per name, reused wherever the statement needs the value.
P_ID = _p("rid", Key())
P_RUN_ID = _p("run_id", Key())
P_OWNER = _p("owner", Key())
P_NOW = _p("now", UTCDateTime())
P_WALL = _p("wall", UTCDateTime())
P_LEASE = _p("lease", UTCDateTime())
P_TOKEN = _p("token", Key())
P_NS = _p("ns", Key())
P_LIMIT = _p("limit")
P_SEQ = _p("seq", Integer())

_PATCH_TYPES: dict[str, Any] = {c.key: c.type for c in runs.c}


def patch_param(key: str) -> BindParameter[Any]:
    """The parameter carrying the new value of run column ``key`` in a patch."""
    return bindparam(f"v_{key}", type_=_PATCH_TYPES[key])


def _status_code(expr: ColumnElement[Any]) -> ColumnElement[Any]:
    """MySQL: record ``expr`` (a status) as ``LAST_INSERT_ID`` and return it unchanged."""
    return func.ELT(func.LAST_INSERT_ID(func.FIELD(expr, *STATUSES)), *STATUSES)


RUN_PARAMS: dict[str, BindParameter[Any]] = {c.key: bindparam(c.key, type_=c.type) for c in runs.c}
"""A whole run row's parameters, named by column key (as ``run_params`` returns them)."""

CP_PARAMS: dict[str, BindParameter[Any]] = {
    c.key: bindparam(f"c_{c.key}", type_=c.type) for c in checkpoints.c
}


def _upsert_checkpoint(family: Family) -> Insert:
    if family == "mysql":
        mins = mysql_insert(checkpoints).values(CP_PARAMS)
        return mins.on_duplicate_key_update({c.key: mins.inserted[c.key] for c in _CHECKPOINT_DATA})
    ins = (pg_insert if family == "postgresql" else sqlite_insert)(checkpoints).values(CP_PARAMS)
    return ins.on_conflict_do_update(
        index_elements=[C.run_id, C.seq],
        set_={c.key: ins.excluded[c.key] for c in _CHECKPOINT_DATA},
    )


def _checkpoint_from_select(family: Family, source: Select[Any]) -> Insert:
    """``INSERT INTO checkpoints SELECT <params> FROM <source> ... upsert``."""
    keys = list(CHECKPOINT_KEYS)
    if family == "mysql":
        mins = mysql_insert(checkpoints).from_select(keys, source)
        # The same parameters again: VALUES() is deprecated on MySQL 8 and has no
        # replacement for INSERT ... SELECT.
        return mins.on_duplicate_key_update({c.key: CP_PARAMS[c.key] for c in _CHECKPOINT_DATA})
    ins = (pg_insert if family == "postgresql" else sqlite_insert)(checkpoints)
    ins = ins.from_select(keys, source)
    return ins.on_conflict_do_update(
        index_elements=[C.run_id, C.seq],
        set_={c.key: ins.excluded[c.key] for c in _CHECKPOINT_DATA},
    )


def _upsert_waiter(family: Family, source: Select[Any] | None) -> Insert:
    """The waiter upsert on ``token``: from parameters, or ``INSERT ... SELECT`` from ``source``."""
    keys = ["token", "run_id", "seq"]
    if family == "mysql":
        mins = mysql_insert(signal_waiters)
        if source is None:
            return mins.on_duplicate_key_update(run_id=mins.inserted.run_id, seq=mins.inserted.seq)
        # As for checkpoints: the same parameters again, VALUES() has no INSERT ... SELECT form.
        return mins.from_select(keys, source).on_duplicate_key_update(run_id=P_RUN_ID, seq=P_SEQ)
    ins = (pg_insert if family == "postgresql" else sqlite_insert)(signal_waiters)
    if source is not None:
        ins = ins.from_select(keys, source)
    return ins.on_conflict_do_update(
        index_elements=[W.token],
        set_={"run_id": ins.excluded.run_id, "seq": ins.excluded.seq},
    )


def _fence(run_id: BindParameter[Any]) -> ColumnElement[bool]:
    return and_(R.id == run_id, R.status == "running", R.locked_by == P_OWNER)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """A worker's dispatch filters: its namespace and the ``(workflow, version)`` pairs it runs.

    ``pairs`` is None for every workflow; an empty tuple matches nothing.
    """

    namespace: str | None
    pairs: tuple[tuple[str, str], ...] | None

    @classmethod
    def of(cls, namespace: str | None, workflows: Collection[tuple[str, str]] | None) -> RunFilter:
        """The filter for a protocol call's ``namespace`` and ``workflows`` arguments."""
        pairs = None if workflows is None else tuple(sorted(set(workflows)))
        return cls(namespace, pairs)

    @property
    def matches_nothing(self) -> bool:
        """An empty ``workflows`` collection: no run passes, no statement is needed."""
        return self.pairs == ()

    def params(self) -> dict[str, Any]:
        """The parameters of the filtered statement (``ns``, ``wf_<i>``, ``wv_<i>``)."""
        params: dict[str, Any] = {}
        if self.namespace is not None:
            params["ns"] = self.namespace
        for index, (workflow, version) in enumerate(self.pairs or ()):
            params[f"wf_{index}"] = workflow
            params[f"wv_{index}"] = version
        return params


def _workflow_pairs(count: int) -> ColumnElement[bool]:
    """The run's ``(workflow, workflow_version)`` is one of ``count`` numbered parameter pairs."""
    return or_(
        *(
            and_(
                R.workflow == _p(f"wf_{index}", Key()),
                R.workflow_version == _p(f"wv_{index}", Key()),
            )
            for index in range(count)
        )
    )


def run_patch_values(keys: Iterable[str], *, guarded: bool) -> list[tuple[Any, Any]]:
    """``SET`` pairs for a run patch (``updated_at`` included); ``guarded``: only while running."""
    running = R.status == "running"
    pairs: list[tuple[Any, Any]] = []
    for key in sorted(set(keys) | {"updated_at"}):
        if key == "status":
            continue
        column = runs.c[key]
        value: Any = patch_param(key)
        pairs.append((column, case((running, value), else_=column) if guarded else value))
    return pairs


class Statements:
    """The statements of one database family (built once per store, cached inside)."""

    def __init__(self, features: Features) -> None:
        self.features = features
        fam = features.family
        self.family = fam

        # -- runs -------------------------------------------------------------------------------
        self.get_run = select(*RUN_COLUMNS).where(R.id == P_ID)
        self.run_exists = select(R.id).where(R.id == P_ID)
        self.lock_run_state = select(R.status, R.locked_by, R.wake_requested).where(R.id == P_ID)
        if fam != "sqlite":  # SQLite: BEGIN IMMEDIATE already holds the write lock
            self.lock_run_state = self.lock_run_state.with_for_update()
        self.clear_lease = (
            update(runs)
            .where(R.id == P_ID)
            .values(locked_by=None, locked_until=None, wake_requested=False)
        )
        if fam == "postgresql":
            self.insert_run: Insert = (
                pg_insert(runs).values(RUN_PARAMS).on_conflict_do_nothing(index_elements=[R.id])
            )
        elif fam == "sqlite":
            self.insert_run = (
                sqlite_insert(runs).values(RUN_PARAMS).on_conflict_do_nothing(index_elements=[R.id])
            )
        else:  # a duplicate raises 1062, told apart by errno
            self.insert_run = insert(runs).values(RUN_PARAMS)
        # An INSERT's row count is only kept on request (psycopg reports -1 otherwise).
        self.insert_run = self.insert_run.execution_options(preserve_rowcount=True)
        self.insert_attributes = insert(attributes)
        self.delete_attributes = delete(attributes).where(A.run_id == P_RUN_ID)
        self.delete_run_rows: tuple[Delete, ...] = (
            delete(runs).where(R.id == P_RUN_ID),  # first: the run row is always locked first
            delete(checkpoints).where(C.run_id == P_RUN_ID),
            delete(signal_waiters).where(W.run_id == P_RUN_ID),
            delete(attributes).where(A.run_id == P_RUN_ID),
        )

        # -- checkpoints ------------------------------------------------------------------------
        self.get_checkpoint = select(*CHECKPOINT_COLUMNS).where(
            C.run_id == P_RUN_ID, C.seq == P_SEQ
        )
        self.list_checkpoints = (
            select(*CHECKPOINT_COLUMNS).where(C.run_id == P_RUN_ID).order_by(C.seq)
        )
        self.upsert_checkpoint = _upsert_checkpoint(fam)
        fenced_source = (
            select(*CP_PARAMS.values()).select_from(runs).where(_fence(CP_PARAMS["run_id"]))
        )
        if fam == "postgresql":
            # Waits for a concurrent claim of the run to commit, then re-checks the fence.
            fenced_source = fenced_source.with_for_update(read=True, of=runs)
        self.save_checkpoint_fenced = _checkpoint_from_select(fam, fenced_source).execution_options(
            preserve_rowcount=True
        )
        self.save_checkpoint_expected = (
            update(checkpoints)
            .where(
                C.run_id == CP_PARAMS["run_id"],
                C.seq == CP_PARAMS["seq"],
                C.status == _p("e_status", Key()),
                C.attempts == _p("e_attempts", Integer()),
            )
            .values({c.key: CP_PARAMS[c.key] for c in _CHECKPOINT_DATA})
        )

        # -- dispatch ---------------------------------------------------------------------------
        # Each is narrowed per call by filtered(): namespace, (workflow, version) pairs.
        self.pending = (
            select(*RUN_COLUMNS)
            .where(R.status == "pending")
            .order_by(R.created_at, R.id)
            .limit(P_LIMIT)
        )
        self.incomplete = (
            select(*RUN_COLUMNS)
            .where(R.status == "running", or_(R.locked_until.is_(None), R.locked_until <= P_NOW))
            # A run without a lease first (false sorts before true everywhere), then oldest.
            .order_by(R.locked_until.is_not(None), R.locked_until, R.id)
            .limit(P_LIMIT)
        )
        self.due = (
            select(*RUN_COLUMNS)
            .where(R.status == "suspended", R.wake_at.is_not(None), R.wake_at <= P_NOW)
            .order_by(R.wake_at, R.id)
            .limit(P_LIMIT)
        )
        self._filtered: dict[tuple[int, bool, int | None], Any] = {}

        # -- leases -----------------------------------------------------------------------------
        lease_free = or_(R.locked_until.is_(None), R.locked_until <= P_NOW)
        claimable = or_(
            R.status == "pending",
            R.status == "running",
            and_(R.status == "suspended", R.wake_at.is_not(None), R.wake_at <= P_NOW),
        )
        self.try_lock = (
            update(runs)
            .where(R.id == P_ID, lease_free, claimable)
            .ordered_values(
                (
                    R.recovery_attempts,
                    R.recovery_attempts + case((R.status == "running", 1), else_=0),
                ),
                (R.status, "running"),
                (R.locked_by, P_OWNER),
                (R.locked_until, P_LEASE),
                (R.wake_requested, false()),
                (R.wake_at, null()),
                (R.updated_at, P_WALL),
            )
        )
        self.renew = (
            update(runs)
            .where(R.id == P_ID, R.status == "running", R.locked_by == P_OWNER)
            .values(locked_until=P_LEASE)
        )
        self._release: dict[tuple[frozenset[str], bool], Update] = {}
        self._update: dict[tuple[frozenset[str], bool], Update] = {}
        self._save_with_patch: dict[tuple[frozenset[str], bool], Insert] = {}

        suspended = R.status == "suspended"
        wake_status = case((suspended, "pending"), else_=R.status)
        wake_pairs: list[tuple[Any, Any]] = [
            (R.wake_requested, case((R.status == "running", true()), else_=R.wake_requested)),
            (R.wake_at, case((suspended, null()), else_=R.wake_at)),
            (R.updated_at, case((suspended, P_WALL), else_=R.updated_at)),
            (R.status, _status_code(wake_status) if fam == "mysql" else wake_status),
        ]
        self.wake = (
            update(runs)
            .where(R.id == P_ID, or_(suspended, R.status == "running", R.status == "pending"))
            .ordered_values(*wake_pairs)
        )
        if features.returning:
            self.wake = self.wake.returning(R.status)
        # pair_signal knows the run's state (it holds the row lock): plain updates suffice.
        self.wake_suspended = (
            update(runs)
            .where(R.id == P_ID, R.status == "suspended")
            .values(status="pending", wake_at=None, updated_at=P_WALL)
        )
        self.flag_wake = (
            update(runs).where(R.id == P_ID, R.status == "running").values(wake_requested=True)
        )

        # -- signals ----------------------------------------------------------------------------
        self.put_waiter = _upsert_waiter(fam, None)
        waiter_source = select(P_TOKEN, P_RUN_ID, P_SEQ).select_from(runs).where(_fence(P_RUN_ID))
        if fam == "postgresql":
            waiter_source = waiter_source.with_for_update(read=True, of=runs)
        self.put_waiter_fenced = _upsert_waiter(fam, waiter_source).execution_options(
            preserve_rowcount=True
        )
        self.get_waiter = select(W.token, W.run_id, W.seq).where(W.token == P_TOKEN)
        self.lock_waiter = self.get_waiter.with_for_update() if fam != "sqlite" else self.get_waiter
        self.take_waiter = (
            delete(signal_waiters).where(W.token == P_TOKEN).returning(W.token, W.run_id, W.seq)
        )
        self.delete_waiter = delete(signal_waiters).where(W.token == P_TOKEN)
        self.remove_waiter = delete(signal_waiters).where(
            W.token == P_TOKEN, W.run_id == P_RUN_ID, W.seq == P_SEQ
        )
        # pair_signal: complete the wait's pending checkpoint (keeping when it began), or
        # create the checkpoint where none exists; a row in any other state is left alone.
        self.deliver_signal = (
            update(checkpoints)
            .where(
                C.run_id == CP_PARAMS["run_id"],
                C.seq == CP_PARAMS["seq"],
                C.status == "pending",
                C.kind == "signal",
            )
            .values(
                status=CP_PARAMS["status"],
                output=CP_PARAMS["output"],
                finished_at=CP_PARAMS["finished_at"],
                wake_at=null(),
            )
        )
        self.checkpoint_exists = select(C.seq).where(C.run_id == P_RUN_ID, C.seq == P_SEQ)
        if fam == "mysql":  # a duplicate raises 1062, told apart by errno
            self.insert_checkpoint: Insert = insert(checkpoints).values(CP_PARAMS)
        else:
            self.insert_checkpoint = (
                (pg_insert if fam == "postgresql" else sqlite_insert)(checkpoints)
                .values(CP_PARAMS)
                .on_conflict_do_nothing(index_elements=[C.run_id, C.seq])
            )
        self.insert_checkpoint = self.insert_checkpoint.execution_options(preserve_rowcount=True)
        self.peek_pair = select(
            W.run_id,
            W.seq,
            exists().where(B.token == P_TOKEN).label("buffered"),
        ).where(W.token == P_TOKEN)
        # From the buffered signals (few) to the waiters (one per parked run: maybe millions).
        self.pairable_tokens = (
            select(B.token)
            .distinct()
            .where(exists().where(W.token == B.token))
            .order_by(B.token)
            .limit(P_LIMIT)
        )
        self.insert_signal = insert(buffered_signals)
        if fam == "postgresql" or (fam == "mysql" and not features.delete_returning):
            oldest = (
                select(*BUFFERED_COLUMNS)
                .where(B.token == P_TOKEN)
                .order_by(B.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        else:
            oldest = select(*BUFFERED_COLUMNS).where(B.token == P_TOKEN).order_by(B.id).limit(1)
        self.lock_oldest_signal = oldest
        self.delete_signal = delete(buffered_signals).where(B.id == bindparam("sid"))
        self.take_signal: Executable | None
        if fam == "mysql":
            # MariaDB: single-table DELETE takes ORDER BY, LIMIT and RETURNING together.
            self.take_signal = (
                text(
                    "DELETE FROM durable_buffered_signals WHERE token = :token "
                    "ORDER BY id LIMIT 1 RETURNING id, token, payload, created_at"
                )
                .bindparams(bindparam("token", type_=Key()))
                .columns(
                    B.id.label("id"),
                    B.token.label("token"),
                    B.payload.label("payload"),
                    B.created_at.label("created_at"),
                )
                if features.delete_returning
                else None
            )
        else:
            picked = select(B.id).where(B.token == P_TOKEN).order_by(B.id).limit(1)
            if fam == "postgresql":
                picked = picked.with_for_update(skip_locked=True)
            self.take_signal = (
                delete(buffered_signals)
                .where(B.id == picked.scalar_subquery())
                .returning(*BUFFERED_COLUMNS)
            )

    # -- statements built per patch shape or filter ---------------------------------------------

    def filtered(self, base: _Filterable, run_filter: RunFilter) -> _Filterable:
        """``base`` (a dispatch query or the claim) narrowed by ``run_filter``.

        Built once per shape (namespace or not, number of pairs) and kept, so each shape is
        compiled once.
        """
        pairs = None if run_filter.pairs is None else len(run_filter.pairs)
        key = (id(base), run_filter.namespace is not None, pairs)
        stmt = self._filtered.get(key)
        if stmt is None:
            stmt = base
            if run_filter.namespace is not None:
                stmt = stmt.where(R.namespace == P_NS)
            if pairs is not None:
                stmt = stmt.where(_workflow_pairs(pairs))
            self._filtered[key] = stmt
        return cast("_Filterable", stmt)

    def update_run(self, keys: frozenset[str], conditional: bool) -> Update:
        """``UPDATE`` applying a patch with ``keys``, optionally only from some statuses."""
        stmt = self._update.get((keys, conditional))
        if stmt is None:
            pairs = run_patch_values(keys, guarded=False)
            if "status" in keys:
                pairs.append((R.status, patch_param("status")))
            where = [R.id == P_ID]
            if conditional:
                where.append(R.status.in_(bindparam("if_status", expanding=True)))
            stmt = update(runs).where(*where).ordered_values(*pairs)
            self._update[(keys, conditional)] = stmt
        return stmt

    def fenced_run_update(self, keys: frozenset[str], fenced: bool) -> Update:
        """The run half of ``save_checkpoint(run_patch=...)``, fenced by owner or not."""
        stmt = self.update_run(keys, conditional=False)
        if fenced:
            stmt = stmt.where(R.status == "running", R.locked_by == P_OWNER)
        return stmt

    def save_with_patch(self, keys: frozenset[str], fenced: bool) -> Insert:
        """PostgreSQL: checkpoint upsert and run patch in one statement (a data-modifying CTE)."""
        stmt = self._save_with_patch.get((keys, fenced))
        if stmt is None:
            pairs = run_patch_values(keys, guarded=False)
            if "status" in keys:
                pairs.append((R.status, patch_param("status")))
            where = [R.id == CP_PARAMS["run_id"]]
            if fenced:
                where += [R.status == "running", R.locked_by == P_OWNER]
            patched = (
                update(runs).where(*where).ordered_values(*pairs).returning(R.id).cte("patched")
            )
            source = select(*CP_PARAMS.values()).select_from(patched)
            stmt = _checkpoint_from_select("postgresql", source)
            stmt = stmt.execution_options(preserve_rowcount=True)
            self._save_with_patch[(keys, fenced)] = stmt
        return stmt

    def release(self, keys: frozenset[str], suspend: bool) -> Update:
        """``release_run_lock`` for a patch with ``keys`` (``suspend``: it sets ``suspended``)."""
        stmt = self._release.get((keys, suspend))
        if stmt is None:
            stmt = self._build_release(keys, suspend)
            self._release[(keys, suspend)] = stmt
        return stmt

    def _build_release(self, keys: frozenset[str], suspend: bool) -> Update:
        running = R.status == "running"
        woken = and_(running, R.wake_requested)
        pairs: list[tuple[Any, Any]] = []
        for column, value in run_patch_values(keys - {"wake_at"}, guarded=True):
            pairs.append((column, value))
        if "wake_at" in keys:
            new_wake: Any = patch_param("wake_at")
            if suspend:
                new_wake = case((R.wake_requested, null()), else_=new_wake)
            pairs.append((R.wake_at, case((running, new_wake), else_=R.wake_at)))
        elif suspend:
            pairs.append((R.wake_at, case((woken, null()), else_=R.wake_at)))
        status: Any = R.status
        if suspend:
            status = case((woken, "pending"), (running, "suspended"), else_=R.status)
        elif "status" in keys:
            status = case((running, patch_param("status")), else_=R.status)
        if self.family == "mysql":
            pairs.append((R.status, _status_code(status)))
        elif status is not R.status:
            pairs.append((R.status, status))
        pairs += [(R.wake_requested, false()), (R.locked_by, null()), (R.locked_until, null())]
        stmt = update(runs).where(R.id == P_ID, R.locked_by == P_OWNER).ordered_values(*pairs)
        if self.features.returning:
            stmt = stmt.returning(R.status)
        return stmt

    # -- list_runs ------------------------------------------------------------------------------

    def tags_filter(self, tags: frozenset[str]) -> list[ColumnElement[bool]]:
        """Conditions: the run carries every tag in ``tags``."""
        wanted = sorted(tags)
        if self.family == "postgresql":
            return [R.tags.op("@>", return_type=Boolean)(literal(wanted, QueryableJSON()))]
        if self.family == "mysql":
            return [func.JSON_CONTAINS(R.tags, literal(wanted, QueryableJSON())) == 1]
        conditions: list[ColumnElement[bool]] = []
        for tag in wanted:
            each = func.json_each(R.tags).table_valued("value")
            conditions.append(
                exists(select(literal(1)).select_from(each).where(each.c.value == tag))
            )
        return conditions

    @staticmethod
    def attribute_filter(key: str, value: AttributeValue) -> ColumnElement[bool]:
        """Condition: the run's attribute ``key`` equals ``value`` (bools only match bools)."""
        str_value, num_value = attribute_columns(value)
        match = [A.run_id == R.id, A.key == key]
        if str_value is not None:
            match.append(A.str_value == str_value)
        else:
            match.append(A.str_value.is_(None))
        if num_value is not None:
            match.append(A.num_value == num_value)
        else:
            match.append(A.num_value.is_(None))
        return exists().where(*match)


def attribute_columns(value: AttributeValue) -> tuple[str | None, float | None]:
    """``(str_value, num_value)`` of an attribute row.

    Strings fill ``str_value``, numbers ``num_value``; a bool fills both (``'true'``/``1``), so
    an equality filter tells ``True`` from ``1`` and from ``'true'``.
    """
    if isinstance(value, bool):
        return ("true" if value else "false"), (1.0 if value else 0.0)
    if isinstance(value, int | float):
        return None, float(value)
    return value, None
