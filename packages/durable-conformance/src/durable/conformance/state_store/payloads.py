"""Payloads: JSON payloads and datetimes round trip through every column that holds them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from durable.conformance._base import SuiteBase
from durable.conformance.state_store._helpers import (
    _A,
    _B,
    _LEASE,
    _assert_utc,
    _checkpoint,
    _create,
    _get,
    _ids,
    _new_id,
    _now,
    _run,
    _same_json,
)
from durable.core import RunQuery, SignalWaiter

if TYPE_CHECKING:
    from durable.core import ErrorInfo, JSONValue, StateStore


def _nested(depth: int) -> JSONValue:
    value: JSONValue = "bottom"
    for level in range(depth):
        value = {"level": level, "next": value} if level % 2 else [level, value]
    return value


async def _payload_roundtrips(store: StateStore, payload: JSONValue) -> dict[str, JSONValue]:
    """Write ``payload`` to every payload column and read each back."""
    now = _now()
    run = await _create(store, _run("suspended", payload=payload))
    assert await store.update_run(run.id, output=payload)
    assert await store.save_checkpoint(_checkpoint(run.id, 1, payload=payload, output=payload))
    token = _new_id("token")
    await store.put_signal_waiter(SignalWaiter(token, run.id, 2))
    await store.buffer_signal(token, payload, now)
    assert await store.pair_signal(token, now) is not None
    stored = await _get(store, run.id)
    checkpoint = await store.get_checkpoint(run.id, 1)
    listed = await store.list_checkpoints(run.id)
    paired = await store.get_checkpoint(run.id, 2)
    assert checkpoint is not None
    assert paired is not None
    assert [cp.seq for cp in listed] == [1, 2]
    return {
        "run.input": stored.input,
        "run.output": stored.output,
        "checkpoint.input": checkpoint.input,
        "checkpoint.output": checkpoint.output,
        "list_checkpoints output": listed[0].output,
        "pair_signal checkpoint output": paired.output,
    }


async def _assert_payload_roundtrips(store: StateStore, payload: JSONValue) -> None:
    values = await _payload_roundtrips(store, payload)
    wrong = sorted(where for where, value in values.items() if not _same_json(value, payload))
    assert not wrong, f"payload changed in {', '.join(wrong)}: {values[wrong[0]]!r:.300}"


def _key_orders(value: JSONValue) -> list[list[str]]:
    """The keys of every object in ``value``, in their order, depth first."""
    if isinstance(value, dict):
        orders = [list(value)]
        for item in value.values():
            orders += _key_orders(item)
        return orders
    if isinstance(value, list):
        return [order for item in value for order in _key_orders(item)]
    return []


async def _datetime_roundtrips(store: StateStore, when: datetime) -> dict[str, datetime | None]:
    """Write ``when`` to every datetime column and read each back."""
    namespace = _new_id("ns")
    timer = await _create(
        store, _run("suspended", created_at=when, wake_at=when, namespace=namespace)
    )
    leased = await _create(store, _run())
    now = _now()
    assert await store.try_lock_run(leased.id, _A, when, now)
    patched = await _create(store, _run())
    assert await store.update_run(patched.id, wake_at=when, updated_at=when)
    checkpoint = dataclasses.replace(
        _checkpoint(timer.id, 1, started_at=when), wake_at=when, finished_at=when
    )
    assert await store.save_checkpoint(checkpoint)
    got_timer = await _get(store, timer.id)
    got_checkpoint = await store.get_checkpoint(timer.id, 1)
    assert got_checkpoint is not None
    due = await store.list_due_timers(when, namespace, 10)
    assert [run.id for run in due] == [timer.id], "list_due_timers(now=when) missed the timer"
    return {
        "run.created_at": got_timer.created_at,
        "run.updated_at": got_timer.updated_at,
        "run.wake_at": got_timer.wake_at,
        "run.locked_until": (await _get(store, leased.id)).locked_until,
        "update_run wake_at": (await _get(store, patched.id)).wake_at,
        "update_run updated_at": (await _get(store, patched.id)).updated_at,
        "checkpoint.started_at": got_checkpoint.started_at,
        "checkpoint.finished_at": got_checkpoint.finished_at,
        "checkpoint.wake_at": got_checkpoint.wake_at,
        "list_due_timers wake_at": due[0].wake_at,
    }


async def _assert_datetime_roundtrips(store: StateStore, when: datetime) -> None:
    values = await _datetime_roundtrips(store, when)
    wrong = {where: value for where, value in values.items() if value != when}
    assert not wrong, f"datetimes changed (wrote {when.isoformat()}): {wrong!r}"
    for where, value in values.items():
        _assert_utc(value, where)


class PayloadsSuite(SuiteBase):
    """Payload and datetime round trips through every column that holds them."""

    # -- payloads -------------------------------------------------------------------------------

    async def test_unicode_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {
                "accents": "héllo wörld ñ ß",
                "cjk": "日本語のテキスト",
                "emoji": "😀 👍🏽 🇺🇳 👨‍👩‍👧",
                "astral": "\U0001d518\U0001d52b\U0001d526 \U0001d11e \U0002070e",
                "rtl": "مرحبا שלום",
                "combining": "e\u0301 a\u0308",
                "controls": "tab\t newline\n cr\r unit\u001f",
                "separators": "\u2028\u2029\ufeff",
                "quotes": "\"'` \\ \\\\ / \\u0041",
                "sql": "'; DROP TABLE durable_workflow_runs; --",
                "keys 🔑": {"ключ": "значение", "😀": ["𝄞", "é"]},
            },
        )

    async def test_deeply_nested_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(durable_store, _nested(100))

    async def test_one_megabyte_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {
                "blob": "0123456789abcdef" * 65536,
                "unicode": "é😀" * 1000,
                "numbers": list(range(1000)),
            },
        )

    async def test_null_values_and_missing_keys_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            {"present_null": None, "nested": {"a": None, "b": {}}, "list": [None, 1, None]},
        )
        await _assert_payload_roundtrips(durable_store, {"only": 1})
        await _assert_payload_roundtrips(durable_store, None)

    async def test_float_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [0.1, 0.5, -2.25, 1.0, 2.0, 3.141592653589793, 1e-7, 123456.789, -0.001, 1 / 3],
        )

    async def test_large_exponent_float_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [6.02e23, 1e16, 1e300, -1e300, 1.7976931348623157e308, 2.2250738585072014e-308, 5e-324],
        )

    async def test_big_int_payload_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(
            durable_store,
            [2**53, -(2**53), 2**53 - 1, 2**31, 2**32 + 1, -(2**31) - 1, 10**15, 0, -1],
        )

    async def test_empty_containers_roundtrip(self, durable_store: StateStore) -> None:
        empties: list[JSONValue] = [{}, [], "", {"a": {}, "b": [], "c": "", "d": [[]], "e": [{}]}]
        for payload in empties:
            await _assert_payload_roundtrips(durable_store, payload)

    async def test_scalars_keep_their_types_roundtrip(self, durable_store: StateStore) -> None:
        scalars: list[JSONValue] = [True, False, 0, 1, 1.5, "null", "true", "1", '{"a": 1}', "[]"]
        for payload in scalars:
            await _assert_payload_roundtrips(durable_store, payload)
        await _assert_payload_roundtrips(durable_store, {"t": True, "one": 1, "f": False, "z": 0})

    async def test_object_key_order_roundtrip(self, durable_store: StateStore) -> None:
        # Neither sorted nor by length (jsonb's order): only a store keeping the text keeps it.
        payload: JSONValue = {
            "zeta": 1,
            "beta": {"yankee": [{"delta": 1, "charlie": 2, "d": 3}], "alpha": None},
            "a": [],
            "mid": {"z": {}, "y": [{"b": 1, "a": 2}]},
        }
        values = await _payload_roundtrips(durable_store, payload)
        expected = _key_orders(payload)
        wrong = sorted(where for where, value in values.items() if _key_orders(value) != expected)
        assert not wrong, (
            f"object keys reordered in {', '.join(wrong)}: "
            f"wrote {expected}, read {_key_orders(values[wrong[0]])}"
        )
        await _assert_payload_roundtrips(durable_store, payload)

    async def test_nul_character_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_payload_roundtrips(durable_store, "\x00")
        await _assert_payload_roundtrips(
            durable_store, {"text": "before\x00after", "key\x00": ["\x00", {"\x00": "\x00"}]}
        )
        error: ErrorInfo = {"type": "ValueError", "message": "bad byte \x00 in input"}
        run = await _create(durable_store, dataclasses.replace(_run("failed"), error=error))
        assert (await _get(durable_store, run.id)).error == error

    async def test_error_info_roundtrip(self, durable_store: StateStore) -> None:
        full: ErrorInfo = {
            "type": "payments.CardDeclined",
            "message": "carte refusée 💳",
            "code": "D-17",
            "retryable": False,
            "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\n' * 50,
        }
        minimal: ErrorInfo = {"type": "RuntimeError", "message": ""}
        for error in (full, minimal):
            run = await _create(durable_store, dataclasses.replace(_run("failed"), error=error))
            assert (await _get(durable_store, run.id)).error == error
            assert await durable_store.update_run(run.id, error=error)
            assert (await _get(durable_store, run.id)).error == error
            checkpoint = dataclasses.replace(_checkpoint(run.id, 1, status="failed"), error=error)
            assert await durable_store.save_checkpoint(checkpoint)
            stored = await durable_store.get_checkpoint(run.id, 1)
            assert stored is not None
            assert stored.error == error

    # -- datetimes ------------------------------------------------------------------------------

    async def test_microseconds_roundtrip(self, durable_store: StateStore) -> None:
        base = _now().replace(microsecond=0) + timedelta(days=1)
        for micros in (123457, 1, 999999):
            await _assert_datetime_roundtrips(durable_store, base.replace(microsecond=micros))

    async def test_year_9999_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_datetime_roundtrips(
            durable_store, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        )

    async def test_year_2100_roundtrip(self, durable_store: StateStore) -> None:
        await _assert_datetime_roundtrips(
            durable_store, datetime(2100, 3, 1, 0, 0, 0, 1, tzinfo=UTC)
        )

    async def test_other_offsets_return_as_utc_roundtrip(self, durable_store: StateStore) -> None:
        for offset in (timedelta(hours=5, minutes=30), timedelta(hours=-8)):
            when = datetime(2031, 5, 17, 13, 39, 10, 123457, tzinfo=timezone(offset))
            await _assert_datetime_roundtrips(durable_store, when)

    async def test_times_compare_by_instant_across_offsets(self, durable_store: StateStore) -> None:
        ns, u = _new_id("ns"), datetime(2031, 5, 17, 12, 0, tzinfo=UTC)
        east, west = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))
        created = [
            u.astimezone(east),
            (u + timedelta(minutes=1)).astimezone(west),
            u + timedelta(minutes=2),
        ]
        runs = [await _create(durable_store, _run(namespace=ns, created_at=at)) for at in created]
        assert await _ids(durable_store.list_pending_runs(10, ns)) == [r.id for r in runs]
        page = await durable_store.list_runs(RunQuery(namespace=ns, created_after=created[1]))
        assert [r.id for r in page.runs] == [runs[2].id, runs[1].id]
        timer = await _create(durable_store, _run("suspended", namespace=_new_id("ns"), wake_at=u))
        early = (u - timedelta(seconds=1)).astimezone(east)
        assert await durable_store.list_due_timers(early, timer.namespace, 10) == []
        late = (u + timedelta(seconds=1)).astimezone(west)
        assert await _ids(durable_store.list_due_timers(late, timer.namespace, 10)) == [timer.id]
        lease_until = (u + _LEASE).astimezone(east)
        assert await durable_store.try_lock_run(runs[0].id, _A, lease_until, u)
        soon = (u + _LEASE / 2).astimezone(west)
        assert await durable_store.try_lock_run(runs[0].id, _B, soon + _LEASE, soon) is False
        later = (u + 2 * _LEASE).astimezone(west)
        assert await durable_store.try_lock_run(runs[0].id, _B, later + _LEASE, later) is True
