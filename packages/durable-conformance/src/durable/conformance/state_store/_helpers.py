"""Helpers the state-store suite modules share: records, shortcuts, races and comparisons."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from uuid import uuid4

import anyio

from durable.core import CheckpointRecord, RunRecord, SignalWaiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from durable.core import (
        AttributeValue,
        CheckpointKind,
        CheckpointStatus,
        JSONValue,
        RunStatus,
        StateStore,
    )

_T = TypeVar("_T")

_LEASE = timedelta(seconds=30)
_RACE_TIMEOUT = 60.0
_A = "worker-a"
_B = "worker-b"
_ALL_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "dead",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid4().hex}"


def _run(
    status: RunStatus = "pending",
    *,
    run_id: str | None = None,
    created_at: datetime | None = None,
    namespace: str = "default",
    workflow: str = "conformance",
    version: str = "1",
    wake_at: datetime | None = None,
    tags: Iterable[str] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    payload: JSONValue = None,
) -> RunRecord:
    created = created_at or _now()
    return RunRecord(
        id=run_id or _new_id(),
        workflow=workflow,
        workflow_version=version,
        status=status,
        input=payload,
        created_at=created,
        updated_at=created,
        namespace=namespace,
        wake_at=wake_at,
        tags=list(tags),
        attributes=dict(attributes or {}),
    )


def _checkpoint(
    run_id: str,
    seq: int,
    *,
    name: str = "step",
    kind: CheckpointKind = "local",
    status: CheckpointStatus = "completed",
    started_at: datetime | None = None,
    payload: JSONValue = None,
    output: JSONValue = None,
    attempts: int = 0,
    wake_at: datetime | None = None,
) -> CheckpointRecord:
    return CheckpointRecord(
        run_id=run_id,
        seq=seq,
        name=name,
        kind=kind,
        status=status,
        step_id=f"{run_id}:{seq}",
        started_at=started_at or _now(),
        input=payload,
        output=output,
        attempts=attempts,
        wake_at=wake_at,
    )


async def _create(store: StateStore, run: RunRecord) -> RunRecord:
    assert await store.create_run(run), f"create_run({run.id!r}) returned False for a new id"
    return run


async def _get(store: StateStore, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None, f"get_run({run_id!r}) returned None for a run that exists"
    return run


async def _locked(
    store: StateStore, owner: str, now: datetime, *, namespace: str = "default"
) -> RunRecord:
    run = await _create(store, _run(namespace=namespace))
    assert await store.try_lock_run(run.id, owner, now + _LEASE, now)
    return run


async def _has_waiter(store: StateStore, waiter: SignalWaiter) -> bool:
    """Whether exactly ``waiter`` is registered: removed if so, then registered again."""
    if not await store.remove_signal_waiter(waiter):
        return False
    assert await store.put_signal_waiter(waiter), f"put_signal_waiter({waiter!r}) returned False"
    return True


async def _buffered(store: StateStore, token: str) -> list[JSONValue]:
    """Deliver the token's buffered signals one by one to fresh waiters; their payloads in order.

    Replaces any waiter on ``token``; the signals are gone afterwards.
    """
    run = await _create(store, _run("suspended"))
    payloads: list[JSONValue] = []
    while True:
        probe = SignalWaiter(token, run.id, len(payloads))
        await store.put_signal_waiter(probe)
        if await store.pair_signal(token, _now()) is None:
            assert await store.remove_signal_waiter(probe), "pair_signal without a signal ate it"
            return payloads
        delivered = await store.get_checkpoint(run.id, probe.seq)
        assert delivered is not None, f"pair_signal({token!r}) wrote no checkpoint"
        payloads.append(delivered.output)


async def _ids(listing: Awaitable[list[RunRecord]]) -> list[str]:
    return [run.id for run in await listing]


async def _race(contenders: int, attempt: Callable[[int], Awaitable[_T]]) -> list[_T]:
    """Start ``attempt(i)`` in ``contenders`` tasks, release them together, return results."""
    results: dict[int, _T] = {}
    arrived = 0
    everyone_arrived = anyio.Event()
    go = anyio.Event()

    async def contender(index: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == contenders:
            everyone_arrived.set()
        await go.wait()
        results[index] = await attempt(index)

    with anyio.fail_after(_RACE_TIMEOUT):
        async with anyio.create_task_group() as group:
            for index in range(contenders):
                group.start_soon(contender, index)
            await everyone_arrived.wait()
            go.set()
    return [results[index] for index in range(contenders)]


def _same_json(left: object, right: object) -> bool:
    """Equal with the same types all the way down (``True`` is not ``1``, ``2.0`` not ``2``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    return left == right


def _assert_utc(value: datetime | None, what: str) -> None:
    assert value is not None, f"{what} is None"
    assert value.tzinfo is not None, f"{what} is naive: {value!r}"
    assert value.utcoffset() == timedelta(0), f"{what} is not in UTC: {value!r}"


def _normalized(run: RunRecord) -> dict[str, object]:
    fields = dataclasses.asdict(run)
    fields["tags"] = sorted(run.tags)
    return fields


def _assert_same_run(actual: RunRecord | None, expected: RunRecord) -> None:
    assert actual is not None, f"run {expected.id!r} is missing"
    assert _same_json(_normalized(actual), _normalized(expected)), (
        f"stored run differs:\n  got      {actual!r}\n  expected {expected!r}"
    )
