"""Bad input: a typed error that names what was wrong and where, and nothing written.

Keys longer than the stores' key length (191 characters) are refused by the engine itself, so
every store answers the same. A store without its tables is simulated by a wrapper that raises
``SchemaMissingError`` from every call: how a real store detects missing tables is the
StateStore suite's business; refusing to start on it is the engine's.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from durable.conformance._base import SuiteBase
from durable.conformance._harness import FaultyStore, engine, new_id
from durable.conformance.state_store._helpers import _buffered
from durable.core import RunQuery, SchemaMissingError, WorkflowCtx, workflow

if TYPE_CHECKING:
    from durable.core import Engine, StateStore, WorkflowDef

KEY_LIMIT = 191


def _echo() -> WorkflowDef[str | None, str | None]:
    @workflow(name=f"echo-{new_id()}")
    async def echo(ctx: WorkflowCtx, value: str | None) -> str | None:
        return value

    return echo


async def _no_runs(store: StateStore) -> None:
    runs = (await store.list_runs(RunQuery())).runs
    assert runs == [], f"a refused call wrote {len(runs)} run(s)"


async def _too_long(client: Engine, wf: WorkflowDef[str | None, str | None], key: str) -> None:
    """Use a key of ``KEY_LIMIT`` characters (accepted), then one more (refused)."""
    if key == "run_id":
        await client.start(wf, run_id="r" * KEY_LIMIT)
        await client.start(wf, run_id="r" * (KEY_LIMIT + 1))
    elif key == "tag":
        await client.start(wf, tags=["t" * KEY_LIMIT])
        await client.start(wf, tags=["t" * (KEY_LIMIT + 1)])
    else:
        await client.signal("s" * KEY_LIMIT, "fits")
        await client.signal("s" * (KEY_LIMIT + 1), "too long")


class BadInputTests(SuiteBase):
    """Wrong arguments are refused up front, with errors that say what was wrong."""

    async def test_start_with_an_empty_run_id_is_refused(self, durable_store: StateStore) -> None:
        echo = _echo()
        async with engine(durable_store, [echo], drive=False) as client:
            with pytest.raises(ValueError, match="run_id"):
                await client.start(echo, run_id="")
        await _no_runs(durable_store)

    @pytest.mark.parametrize("key", ["run_id", "tag", "token"])
    async def test_a_key_longer_than_191_characters_is_refused(
        self, durable_store: StateStore, key: str
    ) -> None:
        echo = _echo()
        async with engine(durable_store, [echo], drive=False) as client:
            with pytest.raises(ValueError, match=key) as refused:
                await _too_long(client, echo, key)
        assert str(KEY_LIMIT) in str(refused.value)
        runs = (await durable_store.list_runs(RunQuery())).runs
        assert len(runs) == (0 if key == "token" else 1), "the refused call wrote a run"
        buffered = await _buffered(durable_store, "s" * KEY_LIMIT)
        assert buffered == (["fits"] if key == "token" else []), "the refused signal was buffered"

    async def test_start_with_the_run_id_of_another_workflow_is_a_conflict(
        self, durable_store: StateStore
    ) -> None:
        first, second = _echo(), _echo()
        run_id = f"shared-{new_id()}"
        async with engine(durable_store, [first, second], drive=False) as client:
            await client.start(first, "mine", run_id=run_id)
            again = await client.start(first, "mine", run_id=run_id)
            assert (again.run_id, again.created) == (run_id, False)

            from durable.core import RunConflictError

            with pytest.raises(RunConflictError) as conflict:
                await client.start(second, "theirs", run_id=run_id)
        assert first.name in str(conflict.value)
        assert second.name in str(conflict.value)
        run = await durable_store.get_run(run_id)
        assert run is not None
        assert (run.workflow, run.input) == (first.name, "mine")

    async def test_wait_for_run_refuses_an_unknown_until(self, durable_store: StateStore) -> None:
        echo = _echo()
        async with engine(durable_store, [echo], drive=False) as client:
            run_id = (await client.start(echo)).run_id
            with pytest.raises(ValueError, match="bogus"):
                await client.wait_for_run(run_id, 1, until="bogus")  # type: ignore[arg-type]

    async def test_wait_for_run_timeout_names_the_run_and_its_status(
        self, durable_store: StateStore
    ) -> None:
        echo = _echo()
        async with engine(durable_store, [echo], drive=False) as client:
            run_id = (await client.start(echo)).run_id
            with pytest.raises(TimeoutError) as timed_out:
                await client.wait_for_run(run_id, timeout=0.1)
        assert run_id in str(timed_out.value)
        assert "pending" in str(timed_out.value)

    async def test_a_sleep_past_the_calendar_fails_the_run_naming_the_sleep(
        self, durable_store: StateStore
    ) -> None:
        @workflow(name=f"eternal-{new_id()}")
        async def eternal(ctx: WorkflowCtx) -> str:
            await ctx.sleep(1e12)
            return "woke"

        async with engine(durable_store, [eternal]) as e:
            run = await e.wait_for_run((await e.start(eternal)).run_id, 10, until="terminal")
        assert run.status == "failed"
        assert run.error is not None
        assert run.error["type"] != "OverflowError", run.error["message"]
        assert "sleep" in run.error["message"]

    async def test_start_on_an_engine_never_entered_is_refused(
        self, durable_store: StateStore
    ) -> None:
        echo = _echo()
        idle = engine(durable_store, [echo])

        from durable.core import EngineNotRunningError

        with pytest.raises(EngineNotRunningError):
            await idle.start(echo)
        await _no_runs(durable_store)

    async def test_an_engine_told_not_to_create_tables_refuses_to_start_without_them(
        self, durable_store: StateStore
    ) -> None:
        tableless = FaultyStore(
            durable_store,
            range(1, sys.maxsize),
            SchemaMissingError("the durable tables do not exist (simulated by the suite)"),
        )
        with pytest.raises(SchemaMissingError):
            async with engine(tableless, [_echo()], auto_schema=False):
                pass
