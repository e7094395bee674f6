from __future__ import annotations

import pytest

from durable.conformance._machine_table import (
    CLAIMS,
    FILTERS,
    LEASE_UNTIL,
    ME,
    NOW,
    OPERATIONS,
    PAIRINGS,
    RELEASES,
    RENEWALS,
    STATES,
    TARGETS,
    WAKES,
    Case,
    FilterRow,
    Operation,
    Rule,
    Snapshot,
    State,
    cases,
    disagreements,
    expected,
    filter_disagreements,
)
from durable.core import InMemoryStateStore, RunRecord, RunStatus
from durable.core import _machine as machine

WALL = NOW.replace(year=2031)
"""The wall time transitions are stamped with: distinct from NOW, to see which is used."""


def _perform(case: Case, run: RunRecord) -> tuple[bool | RunStatus | None, RunRecord]:
    """The operation through the machine's functions, as a store applies them."""
    if case.operation == "claim":
        if not machine.claimable(run, NOW):
            return False, run
        return True, machine.claimed(run, ME, LEASE_UNTIL, updated_at=WALL)
    if case.operation == "renew":
        if not machine.held(run, ME):
            return False, run
        return True, machine.renewed(run, LEASE_UNTIL)
    if case.operation == "wake":
        after, pending = machine.woken(run, updated_at=WALL)
        return pending, after
    if case.operation == "pair":
        if not machine.accepts_signal(run):
            return False, run
        return True, machine.woken(run, holder=ME, updated_at=WALL)[0]
    released = machine.released(run, ME, case.patch, updated_at=WALL)
    return (None, run) if released is None else (released.status, released)


@pytest.mark.parametrize(
    "table", [CLAIMS, RENEWALS, WAKES, PAIRINGS], ids=["claim", "renew", "wake", "pair"]
)
def test_each_state_meets_exactly_one_rule(table: list[Rule[object]]) -> None:
    for state in STATES:
        expected(table, state)


def test_each_state_and_target_meets_exactly_one_release_rule() -> None:
    for state in STATES:
        for target in TARGETS:
            expected(RELEASES, state, target)


def test_the_table_has_every_state() -> None:
    assert len(STATES) == len(set(STATES)) == 7 * 5 * 3 * 2


@pytest.mark.parametrize(
    "case",
    [case for operation in OPERATIONS for case in cases(operation)],
    ids=lambda case: case.name,
)
def test_machine_gives_the_tables_outcome(case: Case) -> None:
    run = case.state.record("run-1")
    result, after = _perform(case, run)
    assert (result, Snapshot.of(after)) == (case.result, case.after)
    assert Snapshot.of(run) == Snapshot.of(case.state.record("run-1")), "the input changed"


@pytest.mark.parametrize("case", cases("claim"), ids=lambda case: case.name)
def test_a_claim_stamps_the_wall_time_it_is_given(case: Case) -> None:
    run = case.state.record("run-1")
    if machine.claimable(run, NOW):
        assert machine.claimed(run, ME, LEASE_UNTIL, updated_at=WALL).updated_at == WALL


def test_a_patch_stamps_the_wall_time_unless_it_sets_one() -> None:
    run = State("running", "mine", "none", wake_requested=False).record("run-1")
    assert machine.patched(run, {"output": 1}, updated_at=WALL).updated_at == WALL
    assert machine.patched(run, {"updated_at": NOW}, updated_at=WALL).updated_at == NOW


@pytest.mark.parametrize("row", FILTERS, ids=str)
def test_claim_filters(row: FilterRow) -> None:
    run = State("pending", "free", "none", wake_requested=False).record("run-1")
    claims = machine.claimable(run, NOW, namespace=row.namespace, workflows=row.workflows)
    assert claims is row.claims


@pytest.mark.anyio
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_the_memory_store_gives_the_tables_outcome(operation: Operation) -> None:
    found = await disagreements(InMemoryStateStore(), operation)
    assert not found, "\n".join(found)


@pytest.mark.anyio
async def test_the_memory_store_applies_claim_filters() -> None:
    found = await filter_disagreements(InMemoryStateStore())
    assert not found, "\n".join(found)
