"""The run state machine as a table of expected outcomes, shared by every form of the rules.

``durable.core._machine`` states the rules as functions; the in-memory store applies them and
the SQL stores encode them in statements. This module says what must come out, as data: for
every run state (status x lease x ``wake_at`` x ``wake_requested``) the outcome of a claim, a
release to each target, a wake, a signal pairing and a renewal. durable-core's tests check the
functions against it, durable-store-sqlalchemy's tests check the statements on real databases
(:func:`disagreements` drives any ``StateStore``). It lives here because both test suites
already depend on durable-conformance and it is test data, not runtime code.

Each operation has a decision table: a list of rules, each a tuple of the states it covers
(one value or a group per dimension) and the outcome. Every state matches exactly one rule of
each table (:func:`expected` refuses a gap or an overlap), so a table is complete by
construction. The worker acting is always :data:`ME` at :data:`NOW`. A lease ``expired`` and a
timer ``due`` sit exactly at :data:`NOW`: the instant belongs to the past.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from durable.core import RunRecord, SignalWaiter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from durable.core import AttributeValue, ErrorInfo, JSONValue, RunPatch, RunStatus, StateStore

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""The moment every operation happens at."""
LATER = NOW + timedelta(hours=1)
"""A live lease's end, a future timer."""
LEASE_UNTIL = NOW + timedelta(minutes=5)
"""The lease a claim or a renewal gives."""
PATCH_WAKE_AT = NOW + timedelta(hours=2)
"""The ``wake_at`` a release to ``suspended`` asks for."""
ME = "worker-me"
"""The worker that claims, releases, renews and pairs."""
OTHER = "worker-other"

Lease = Literal["free", "mine", "other", "mine-expired", "other-expired"]
WakeAt = Literal["none", "future", "due"]

# -- groups of states, for the tables ------------------------------------------------------------

PENDING: tuple[RunStatus, ...] = ("pending",)
RUNNING: tuple[RunStatus, ...] = ("running",)
SUSPENDED: tuple[RunStatus, ...] = ("suspended",)
ENDED: tuple[RunStatus, ...] = ("completed", "failed", "cancelled", "dead")
NOT_RUNNING: tuple[RunStatus, ...] = ("pending", "suspended", *ENDED)
ANY_STATUS: tuple[RunStatus, ...] = ("running", *NOT_RUNNING)

LEASES: tuple[Lease, ...] = ("free", "mine", "other", "mine-expired", "other-expired")
FREE: tuple[Lease, ...] = ("free", "mine-expired", "other-expired")
LIVE: tuple[Lease, ...] = ("mine", "other")
MINE: tuple[Lease, ...] = ("mine", "mine-expired")
NOT_MINE: tuple[Lease, ...] = ("free", "other", "other-expired")

WAKE_ATS: tuple[WakeAt, ...] = ("none", "future", "due")
NOT_DUE: tuple[WakeAt, ...] = ("none", "future")

EITHER: tuple[bool, ...] = (False, True)
"""``wake_requested`` does not matter."""

# -- outcomes --------------------------------------------------------------------------------------


class Claim(Enum):
    """What ``try_lock_run(run, ME, LEASE_UNTIL, NOW)`` does."""

    CLAIMED = "running under ME's new lease, wake_requested and wake_at cleared; True"
    RECOVERED = "CLAIMED, and recovery_attempts grows by one; True"
    REFUSED = "nothing changes; False"


class Renew(Enum):
    """What ``renew_run_lock(run, ME, LEASE_UNTIL)`` does."""

    RENEWED = "locked_until becomes LEASE_UNTIL; True"
    REFUSED = "nothing changes; False"


class Wake(Enum):
    """What a wake does: ``wake_run(run)``, or pairing a signal with the run's waiter."""

    MADE_PENDING = "status pending, wake_at cleared; wake_run returns True"
    STAYS_PENDING = "nothing changes; wake_run returns True"
    FLAGGED = "wake_requested set; wake_run returns False"
    UNCHANGED = "nothing changes; wake_run returns False"
    NOT_DELIVERED = "pairing only: the signal stays buffered, nothing changes"


class Keep(Enum):
    """A value a release leaves as it was."""

    KEPT = "as before"


@dataclass(frozen=True)
class Released:
    """ME's release applied the patch: the run has ``status`` and ``wake_at``.

    The patch's other columns are applied; the lease and ``wake_requested`` are cleared; the
    release returns ``status``.
    """

    status: RunStatus | Keep
    wake_at: datetime | Keep | None


class Release(Enum):
    """A release whose patch is not applied."""

    LEASE_ONLY = "ME held a run that is not running: lease and wake_requested cleared; status"
    NOT_HOLDER = "nothing changes; None"


Target = Literal[
    "pending",
    "suspended",
    "suspended, no wake_at",
    "suspended, attributes",
    "completed",
    "completed, attributes",
    "failed",
    "cancelled",
    "dead",
    "no status",
]
_ERROR: ErrorInfo = {"type": "Boom", "message": "it broke"}
_ATTRIBUTES: dict[str, AttributeValue] = {"stage": "released"}
PATCHES: dict[Target, RunPatch] = {
    "pending": {"status": "pending"},
    "suspended": {"status": "suspended", "wake_at": PATCH_WAKE_AT, "recovery_attempts": 0},
    "suspended, no wake_at": {"status": "suspended"},
    "suspended, attributes": {
        "status": "suspended",
        "wake_at": PATCH_WAKE_AT,
        "attributes": _ATTRIBUTES,
    },
    "completed": {
        "status": "completed",
        "output": {"done": True},
        "error": None,
        "wake_at": None,
        "recovery_attempts": 0,
    },
    "completed, attributes": {"status": "completed", "output": 7, "attributes": _ATTRIBUTES},
    "failed": {"status": "failed", "error": _ERROR, "wake_at": None},
    "cancelled": {"status": "cancelled"},
    "dead": {"status": "dead", "error": _ERROR, "wake_at": None},
    "no status": {"output": "partial"},
}
"""The patch of each release target: the engine's own, and the shapes each SQL path takes."""
TARGETS: tuple[Target, ...] = tuple(PATCHES)
SUSPENDS: tuple[Target, ...] = ("suspended", "suspended, attributes")
KEPT = Keep.KEPT

OutcomeT = TypeVar("OutcomeT")


@dataclass(frozen=True)
class Rule(Generic[OutcomeT]):
    """The states a table row covers, and their outcome."""

    status: tuple[RunStatus, ...]
    lease: tuple[Lease, ...]
    wake_at: tuple[WakeAt, ...]
    wake_requested: tuple[bool, ...]
    outcome: OutcomeT
    targets: tuple[Target, ...] = TARGETS
    """Release only: the targets the row covers."""


# -- the tables ------------------------------------------------------------------------------------

CLAIMS: list[Rule[Claim]] = [
    #    status     lease  wake_at   wake_requested  outcome
    Rule(PENDING, FREE, WAKE_ATS, EITHER, Claim.CLAIMED),
    Rule(PENDING, LIVE, WAKE_ATS, EITHER, Claim.REFUSED),
    Rule(RUNNING, FREE, WAKE_ATS, EITHER, Claim.RECOVERED),
    Rule(RUNNING, LIVE, WAKE_ATS, EITHER, Claim.REFUSED),
    Rule(SUSPENDED, FREE, ("due",), EITHER, Claim.CLAIMED),
    Rule(SUSPENDED, FREE, NOT_DUE, EITHER, Claim.REFUSED),
    Rule(SUSPENDED, LIVE, WAKE_ATS, EITHER, Claim.REFUSED),
    Rule(ENDED, LEASES, WAKE_ATS, EITHER, Claim.REFUSED),
]

RENEWALS: list[Rule[Renew]] = [
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Renew.RENEWED),
    Rule(RUNNING, NOT_MINE, WAKE_ATS, EITHER, Renew.REFUSED),
    Rule(NOT_RUNNING, LEASES, WAKE_ATS, EITHER, Renew.REFUSED),
]

WAKES: list[Rule[Wake]] = [
    Rule(SUSPENDED, LEASES, WAKE_ATS, EITHER, Wake.MADE_PENDING),
    Rule(PENDING, LEASES, WAKE_ATS, EITHER, Wake.STAYS_PENDING),
    Rule(RUNNING, LEASES, WAKE_ATS, EITHER, Wake.FLAGGED),
    Rule(ENDED, LEASES, WAKE_ATS, EITHER, Wake.UNCHANGED),
]

PAIRINGS: list[Rule[Wake]] = [
    # Pairing by the lease holder ME: a run ME holds is not flagged (ME reads the checkpoint).
    Rule(SUSPENDED, LEASES, WAKE_ATS, EITHER, Wake.MADE_PENDING),
    Rule(PENDING, LEASES, WAKE_ATS, EITHER, Wake.STAYS_PENDING),
    Rule(RUNNING, NOT_MINE, WAKE_ATS, EITHER, Wake.FLAGGED),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Wake.UNCHANGED),
    Rule(ENDED, LEASES, WAKE_ATS, EITHER, Wake.NOT_DELIVERED),
]

RELEASES: list[Rule[Released | Release]] = [
    Rule(ANY_STATUS, NOT_MINE, WAKE_ATS, EITHER, Release.NOT_HOLDER),
    Rule(NOT_RUNNING, MINE, WAKE_ATS, EITHER, Release.LEASE_ONLY),
    # ME holds the running run: the patch applies. A suspend meets a wake: pending instead.
    Rule(RUNNING, MINE, WAKE_ATS, (False,), Released("suspended", PATCH_WAKE_AT), targets=SUSPENDS),
    Rule(RUNNING, MINE, WAKE_ATS, (True,), Released("pending", None), targets=SUSPENDS),
    Rule(
        RUNNING,
        MINE,
        WAKE_ATS,
        (False,),
        Released("suspended", KEPT),
        targets=("suspended, no wake_at",),
    ),
    Rule(
        RUNNING,
        MINE,
        WAKE_ATS,
        (True,),
        Released("pending", None),
        targets=("suspended, no wake_at",),
    ),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("pending", KEPT), targets=("pending",)),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("completed", None), targets=("completed",)),
    Rule(
        RUNNING,
        MINE,
        WAKE_ATS,
        EITHER,
        Released("completed", KEPT),
        targets=("completed, attributes",),
    ),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("failed", None), targets=("failed",)),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("cancelled", KEPT), targets=("cancelled",)),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("dead", None), targets=("dead",)),
    Rule(RUNNING, MINE, WAKE_ATS, EITHER, Released("running", KEPT), targets=("no status",)),
]


@dataclass(frozen=True)
class FilterRow:
    """A worker's filters, and whether it claims a free pending run of ``wf`` 1 in ``default``."""

    namespace: str | None
    workflows: tuple[tuple[str, str], ...] | None
    claims: bool


FILTERS: list[FilterRow] = [
    FilterRow(None, None, claims=True),
    FilterRow("default", None, claims=True),
    FilterRow("elsewhere", None, claims=False),
    FilterRow(None, (("wf", "1"),), claims=True),
    FilterRow(None, (("wf", "2"),), claims=False),
    FilterRow(None, (("other", "1"),), claims=False),
    FilterRow(None, (("wf", "2"), ("wf", "1")), claims=True),
    FilterRow(None, (), claims=False),
    FilterRow("default", (("wf", "1"),), claims=True),
    FilterRow("elsewhere", (("wf", "1"),), claims=False),
]


# -- states and what each operation leaves ---------------------------------------------------------

_LEASE_FIELDS: dict[Lease, tuple[str | None, datetime | None]] = {
    "free": (None, None),
    "mine": (ME, LATER),
    "other": (OTHER, LATER),
    "mine-expired": (ME, NOW),
    "other-expired": (OTHER, NOW),
}
_WAKE_AT_FIELD: dict[WakeAt, datetime | None] = {"none": None, "future": LATER, "due": NOW}


@dataclass(frozen=True)
class State:
    """One run state: the dimensions the rules look at."""

    status: RunStatus
    lease: Lease
    wake_at: WakeAt
    wake_requested: bool

    @property
    def name(self) -> str:
        """The state in words, for failure reports and test ids."""
        woken = "wake requested" if self.wake_requested else "no wake requested"
        return f"{self.status}, lease {self.lease}, wake_at {self.wake_at}, {woken}"

    def record(self, run_id: str) -> RunRecord:
        """A run in this state (workflow ``wf`` version 1, namespace ``default``)."""
        locked_by, locked_until = _LEASE_FIELDS[self.lease]
        created = NOW - timedelta(days=1)
        return RunRecord(
            id=run_id,
            workflow="wf",
            workflow_version="1",
            status=self.status,
            input={"n": 1},
            created_at=created,
            updated_at=created,
            wake_at=_WAKE_AT_FIELD[self.wake_at],
            locked_by=locked_by,
            locked_until=locked_until,
            recovery_attempts=2,
            wake_requested=self.wake_requested,
            attributes={"stage": "created"},
        )


STATES: tuple[State, ...] = tuple(
    State(status, lease, wake_at, wake_requested)
    for status in ANY_STATUS
    for lease in LEASES
    for wake_at in WAKE_ATS
    for wake_requested in EITHER
)
"""Every state: each table covers each exactly once."""


@dataclass(frozen=True)
class Snapshot:
    """The columns the rules touch, compared before and after an operation."""

    status: RunStatus
    locked_by: str | None
    locked_until: datetime | None
    wake_at: datetime | None
    wake_requested: bool
    recovery_attempts: int
    output: JSONValue
    error: ErrorInfo | None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    @classmethod
    def of(cls, run: RunRecord) -> Snapshot:
        """The snapshot of ``run``."""
        return cls(
            status=run.status,
            locked_by=run.locked_by,
            locked_until=run.locked_until,
            wake_at=run.wake_at,
            wake_requested=run.wake_requested,
            recovery_attempts=run.recovery_attempts,
            output=run.output,
            error=run.error,
            attributes=dict(run.attributes),
        )


def expected(
    table: Sequence[Rule[OutcomeT]], state: State, target: Target | None = None
) -> OutcomeT:
    """The outcome of the one rule of ``table`` that covers ``state`` (and ``target``).

    Raises:
        LookupError: No rule or several rules cover it: the table has a gap or an overlap.
    """
    rules = [
        rule
        for rule in table
        if state.status in rule.status
        and state.lease in rule.lease
        and state.wake_at in rule.wake_at
        and state.wake_requested in rule.wake_requested
        and (target is None or target in rule.targets)
    ]
    if len(rules) != 1:
        where = state.name if target is None else f"{state.name}, release to {target}"
        raise LookupError(f"{len(rules)} rules cover {where}, not exactly one")
    return rules[0].outcome


Operation = Literal["claim", "renew", "wake", "pair", "release"]
OPERATIONS: tuple[Operation, ...] = ("claim", "renew", "wake", "pair", "release")


@dataclass(frozen=True)
class Case:
    """One state, one operation by :data:`ME` at :data:`NOW`, and what must come out."""

    operation: Operation
    state: State
    target: Target | None
    result: bool | RunStatus | None
    """What the store method returns (``pair``: whether the signal was delivered)."""
    after: Snapshot

    @property
    def name(self) -> str:
        """The case in words."""
        to = "" if self.target is None else f" to {self.target}"
        return f"{self.operation}{to} of {self.state.name}"

    @property
    def patch(self) -> RunPatch:
        """The release's patch (empty for the other operations)."""
        return {} if self.target is None else PATCHES[self.target]


def cases(operation: Operation) -> list[Case]:
    """Every state's case of ``operation`` (for a release, every state with every target)."""
    if operation == "release":
        return [_release_case(state, target) for state in STATES for target in TARGETS]
    return [_case(operation, state) for state in STATES]


def _case(operation: Operation, state: State) -> Case:
    before = Snapshot.of(state.record("-"))
    if operation == "claim":
        claim = expected(CLAIMS, state)
        if claim is Claim.REFUSED:
            return Case(operation, state, None, False, before)
        claimed = replace(
            before,
            status="running",
            locked_by=ME,
            locked_until=LEASE_UNTIL,
            wake_requested=False,
            wake_at=None,
            recovery_attempts=before.recovery_attempts + (1 if claim is Claim.RECOVERED else 0),
        )
        return Case(operation, state, None, True, claimed)
    if operation == "renew":
        if expected(RENEWALS, state) is Renew.REFUSED:
            return Case(operation, state, None, False, before)
        return Case(operation, state, None, True, replace(before, locked_until=LEASE_UNTIL))
    wake = expected(WAKES if operation == "wake" else PAIRINGS, state)
    if wake is Wake.MADE_PENDING:
        return Case(operation, state, None, True, replace(before, status="pending", wake_at=None))
    if wake is Wake.FLAGGED:
        return Case(
            operation, state, None, operation == "pair", replace(before, wake_requested=True)
        )
    delivered = (
        wake is not Wake.NOT_DELIVERED if operation == "pair" else wake is Wake.STAYS_PENDING
    )
    return Case(operation, state, None, delivered, before)


def _release_case(state: State, target: Target) -> Case:
    before = Snapshot.of(state.record("-"))
    outcome = expected(RELEASES, state, target)
    if outcome is Release.NOT_HOLDER:
        return Case("release", state, target, None, before)
    after = replace(before, locked_by=None, locked_until=None, wake_requested=False)
    if outcome is Release.LEASE_ONLY:
        return Case("release", state, target, before.status, after)
    patch = PATCHES[target]
    status = before.status if outcome.status is KEPT else outcome.status
    wake_at = before.wake_at if outcome.wake_at is KEPT else outcome.wake_at
    after = replace(
        after,
        status=status,
        wake_at=wake_at,
        output=patch.get("output", before.output),
        error=patch.get("error", before.error),
        recovery_attempts=patch.get("recovery_attempts", before.recovery_attempts),
        attributes=dict(patch.get("attributes", before.attributes)),
    )
    return Case("release", state, target, status, after)


# -- driving a store -------------------------------------------------------------------------------


async def disagreements(store: StateStore, operation: Operation) -> list[str]:
    """Run every case of ``operation`` on ``store`` (a fresh run each); describe each mismatch.

    Each case's run is created with ``create_run`` in its state, the operation is called as
    :data:`ME` at :data:`NOW`, and the return value and the run read back are compared with
    the case. An empty list: the store agrees with the table.
    """
    found: list[str] = []
    for index, case in enumerate(cases(operation)):
        run_id = f"{operation}-{index}"
        await store.create_run(case.state.record(run_id))
        result = await _perform(store, case, run_id)
        run = await store.get_run(run_id)
        after = None if run is None else Snapshot.of(run)
        if (result, after) != (case.result, case.after):
            found.append(
                f"{case.name}: expected {case.result!r} leaving {case.after}, "
                f"got {result!r} leaving {after}"
            )
    return found


async def _perform(store: StateStore, case: Case, run_id: str) -> bool | RunStatus | None:
    if case.operation == "claim":
        return await store.try_lock_run(run_id, ME, LEASE_UNTIL, NOW)
    if case.operation == "renew":
        return await store.renew_run_lock(run_id, ME, LEASE_UNTIL)
    if case.operation == "wake":
        return await store.wake_run(run_id)
    if case.operation == "pair":
        token = f"token-{run_id}"
        await store.put_signal_waiter(SignalWaiter(token, run_id, 1))
        await store.buffer_signal(token, {"signal": 1}, NOW)
        return await store.pair_signal(token, NOW, holder=ME) is not None
    return await store.release_run_lock(run_id, ME, **case.patch)


async def filter_disagreements(store: StateStore) -> list[str]:
    """Claim a free pending run under each row of :data:`FILTERS`; describe each mismatch."""
    found: list[str] = []
    free_pending = State("pending", "free", "none", wake_requested=False)
    for index, row in enumerate(FILTERS):
        run_id = f"filter-{index}"
        await store.create_run(free_pending.record(run_id))
        claimed = await store.try_lock_run(
            run_id, ME, LEASE_UNTIL, NOW, namespace=row.namespace, workflows=row.workflows
        )
        run = await store.get_run(run_id)
        status = None if run is None else run.status
        want = "running" if row.claims else "pending"
        if (claimed, status) != (row.claims, want):
            found.append(f"{row}: expected {row.claims} ({want}), got {claimed} ({status})")
    return found
