"""The durable side of every scenario; each function runs in a fresh child process."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import anyio

from benchmarks._counting import CountingStore, SqlCounter
from benchmarks._targets import Target, make_store
from durable.core import Engine, StateStore, WorkflowCtx, WorkflowDef, step, workflow
from durable.transports.inprocess import InProcessTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

POLL = 0.05  # seconds: the workers' polling fallback (DBOS queues are given the same)
_COUNTED_WORKFLOWS = 20  # workflows per step count in the statement-counting pass


@step(name="noop")
async def noop() -> None:
    return None


@workflow(name="bench_steps")
async def steps_wf(ctx: WorkflowCtx, n: int) -> int:
    for _ in range(n):
        await ctx.step(noop)
    return n


@workflow(name="bench_replay")
async def replay_wf(ctx: WorkflowCtx, n: int) -> int:
    for _ in range(n):
        await ctx.step(noop)
    await ctx.wait_for_signal(f"go:{ctx.run_id}")
    return n


@workflow(name="bench_signals")
async def signals_wf(ctx: WorkflowCtx, n: int) -> int:
    for _ in range(n):
        await ctx.wait_for_signal(f"sig:{ctx.run_id}")
    return n


@workflow(name="bench_parked")
async def parked_wf(ctx: WorkflowCtx) -> None:
    await ctx.wait_for_signal(f"park:{ctx.run_id}")


WORKFLOWS: list[WorkflowDef[Any, Any]] = [steps_wf, replay_wf, signals_wf, parked_wf]


def _engine(store: StateStore, *, drive: bool = True, poll: float = POLL) -> Engine:
    return Engine(
        store,
        InProcessTransport(),
        workflows=WORKFLOWS,
        drive=drive,
        poll_interval=poll,
    )


async def _run_one(engine: Engine, wf: Any, arg: object) -> None:
    handle = await engine.start(wf, arg)
    run = await engine.wait_for_run(handle.run_id, until="terminal", timeout=120)
    if run.status != "completed":
        raise RuntimeError(f"run {run.id} ended {run.status}: {run.error}")


# -- per-step overhead ---------------------------------------------------------------------------


async def _steps(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    store = make_store(target)
    sql = SqlCounter()
    out: dict[str, Any] = {}
    async with _engine(store) as engine:
        for _ in range(p["warmup"]):
            await _run_one(engine, steps_wf, 10)
        for n in (1, 10):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(p["workflows"]):
                await _run_one(engine, steps_wf, n)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out[f"wf{n}_us"] = wall / p["workflows"] * 1e6
            out[f"wf{n}_cpu_us"] = cpu / p["workflows"] * 1e6
    counted = min(p["workflows"], _COUNTED_WORKFLOWS)
    # Counted on an engine that does not poll (nudges drive every run in one process), so the
    # poller's ticks, which come with wall time, do not blur the statements a step costs.
    async with _engine(store, poll=3600) as engine:
        for n in (1, 10):
            with sql.counting(store):
                for _ in range(counted):
                    await _run_one(engine, steps_wf, n)
            out[f"wf{n}_statements"] = sql.statements / counted
    await store.aclose()
    out["step_us"] = (out["wf10_us"] - out["wf1_us"]) / 9
    out["step_cpu_us"] = (out["wf10_cpu_us"] - out["wf1_cpu_us"]) / 9
    if sql.attached:
        out["step_statements"] = (out["wf10_statements"] - out["wf1_statements"]) / 9
    else:
        del out["wf1_statements"], out["wf10_statements"]
    out["completed"] = p["warmup"] + 2 * (p["workflows"] + counted)
    return out


# -- replay --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _measured(
    out: dict[str, Any], key: str, counting: bool, counted: CountingStore, sql: SqlCounter
) -> Iterator[None]:
    """Record the block as ``<key>_*``: counted (statements, store calls) or timed, not both."""
    counter = sql.counting(counted._inner) if counting else contextlib.nullcontext()
    with counter:
        counted.calls.clear()
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
    if not counting:
        out[f"{key}_ms"] = elapsed * 1e3
        return
    out[f"{key}_store_calls"] = counted.total
    out[f"{key}_checkpoint_reads"] = counted.checkpoint_reads
    if sql.attached:
        out[f"{key}_statements"] = sql.statements


async def _replay(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    counted = CountingStore(make_store(target))
    sql = SqlCounter()
    out: dict[str, Any] = {"completed": 0}
    async with _engine(cast("StateStore", counted)) as engine:
        for n in p["replay_steps"]:
            for counting in (True, False):  # statements in one pass, time in another
                handle = await engine.start(replay_wf, n)
                run = await engine.wait_for_run(handle.run_id, timeout=600)
                if run.status != "suspended":
                    raise RuntimeError(f"replay run {run.id} is {run.status}, not suspended")
                with _measured(out, f"n{n}", counting, counted, sql):
                    await engine.signal(f"go:{handle.run_id}")
                    run = await engine.wait_for_run(handle.run_id, until="terminal", timeout=600)
                if run.status != "completed":
                    raise RuntimeError(f"replay run {run.id} ended {run.status}")
                out["completed"] += 1
    await counted._inner.aclose()
    return out


# -- signals -------------------------------------------------------------------------------------


async def _signals(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    counted = CountingStore(make_store(target))
    sql = SqlCounter()
    out: dict[str, Any] = {"completed": 0}
    async with _engine(cast("StateStore", counted)) as engine:
        await _run_one(engine, steps_wf, 1)  # warm up
        for n, counting in itertools.product(p["signals"], (True, False)):
            # Statements in one pass, time in another.
            # Burst: start the run, send every signal back to back, wait for the end.
            with _measured(out, f"burst{n}", counting, counted, sql):
                handle = await engine.start(signals_wf, n)
                for i in range(n):
                    await engine.signal(f"sig:{handle.run_id}", i)
                run = await engine.wait_for_run(handle.run_id, until="terminal", timeout=600)
            out["completed"] += run.status == "completed"
            # one at a time: each signal wakes a suspended run, which replays and parks again
            handle = await engine.start(signals_wf, n)
            await engine.wait_for_run(handle.run_id, timeout=60)
            with _measured(out, f"serial{n}", counting, counted, sql):
                for i in range(n):
                    await engine.signal(f"sig:{handle.run_id}", i)
                    run = await engine.wait_for_run(handle.run_id, timeout=60)
            out["completed"] += run.status == "completed"
    await counted._inner.aclose()
    return out


# -- throughput ----------------------------------------------------------------------------------


def _count_completed(target: Target) -> int:
    query = "SELECT count(*) FROM durable_workflow_runs WHERE status = 'completed'"
    if target.raw_sqlite is not None:
        import sqlite3

        with sqlite3.connect(target.raw_sqlite, timeout=30) as conn:
            return int(conn.execute(query).fetchone()[0])
    import psycopg

    assert target.raw_pg is not None
    with psycopg.connect(target.raw_pg) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def spawn_children(spec: dict[str, Any], count: int) -> list[subprocess.Popen[str]]:
    """Start ``count`` child processes running ``spec``; return once each printed ``ready``."""
    import json

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            for other in procs:
                other.kill()
            raise RuntimeError(f"worker failed to start (said {line!r})")
    return procs


def stop_children(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _worker(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    store = make_store(target)
    async with Engine(
        store,
        InProcessTransport(),
        workflows=WORKFLOWS,
        poll_interval=POLL,
        max_concurrent_runs=p.get("max_concurrent_runs", 100),
    ):
        print("ready", flush=True)
        await anyio.sleep_forever()
    return {}


async def _throughput(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    runs, steps, workers = p["throughput_runs"], p["throughput_steps"], p["workers"]
    store = make_store(target)
    procs: list[subprocess.Popen[str]] = []
    if target.db == "memory":  # one process: the client engine also drives
        if workers != 1:
            raise ValueError("the in-memory store cannot be shared by worker processes")
        engine = _engine(store)
        counter: Callable[[], Any] = lambda: None  # noqa: E731
    else:
        await store.ensure_schema()
        procs = spawn_children(
            {"engine": "durable", "scenario": "worker", "target": target.to_json(), "params": p},
            workers,
        )
        engine = _engine(store, drive=False)
        counter = lambda: _count_completed(target)  # noqa: E731
    try:
        async with engine:
            limiter = anyio.CapacityLimiter(8)
            ids: list[str] = []
            t0 = time.perf_counter()

            async def start_one() -> None:
                async with limiter:
                    ids.append((await engine.start(steps_wf, steps)).run_id)

            async with anyio.create_task_group() as tg:
                for _ in range(runs):
                    tg.start_soon(start_one)
            started = time.perf_counter() - t0
            with anyio.fail_after(600):
                if target.db == "memory":
                    for run_id in ids:
                        await engine.wait_for_run(run_id, until="terminal")
                    done = runs
                else:
                    while (done := await anyio.to_thread.run_sync(counter)) < runs:  # noqa: ASYNC110 - another process finishes them
                        await anyio.sleep(0.02)
            elapsed = time.perf_counter() - t0
    finally:
        stop_children(procs)
        await store.aclose()
    return {
        "workflows_per_s": runs / elapsed,
        "steps_per_s": runs * steps / elapsed,
        "start_s": started,
        "elapsed_s": elapsed,
        "completed": done,
    }


# -- memory --------------------------------------------------------------------------------------


def _rss_kib() -> tuple[int, int]:
    fields: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


async def _rss(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """A worker's RSS after it polled the database for a while and ran a few workflows."""
    store = make_store(target)
    async with _engine(store) as engine:
        for _ in range(2):
            for _ in range(p["rss_workflows"]):
                await _run_one(engine, steps_wf, 5)
            await anyio.sleep(10 * POLL)  # let the pollers go over the table a few times
        rss, hwm = _rss_kib()
        suspended = await engine.list_runs(status="suspended", limit=1)
    await store.aclose()
    return {"rss_kib": rss, "hwm_kib": hwm, "any_suspended": bool(suspended.runs)}


async def _populate(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """Park one run on a signal, then copy its rows ``suspended_runs - 1`` times in SQL."""
    store = make_store(target)
    async with _engine(store) as engine:
        handle = await engine.start(parked_wf)
        run = await engine.wait_for_run(handle.run_id, timeout=60)
        if run.status != "suspended":
            raise RuntimeError(f"template run is {run.status}")
    await store.aclose()
    t0 = time.perf_counter()
    _clone_run(target, handle.run_id, p["suspended_runs"] - 1)
    return {"populate_s": time.perf_counter() - t0}


_CLONE_KEYS = {
    "durable_workflow_runs": ("id", ("id",)),
    "durable_step_checkpoints": ("run_id", ("run_id",)),
    "durable_signal_waiters": ("run_id", ("token", "run_id")),
    "durable_run_attributes": ("run_id", ("run_id",)),
}


def _clone_run(target: Target, run_id: str, copies: int) -> None:
    """Copy every row of ``run_id`` ``copies`` times, suffixing its keys with ``-<i>``."""
    if target.raw_sqlite is not None:
        import sqlite3

        conn: Any = sqlite3.connect(target.raw_sqlite, timeout=60)
        series = "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})"
        series += " SELECT i FROM s) AS s"
        mark = "?"
    else:
        import psycopg

        assert target.raw_pg is not None
        conn = psycopg.connect(target.raw_pg)
        series = "generate_series(1, {n}) AS s(i)"
        mark = "%s"
    with conn:
        for table, (where, renamed) in _CLONE_KEYS.items():
            cur = conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            cols = [d[0] for d in cur.description]
            values = [f"{c} || '-' || s.i" if c in renamed else c for c in cols]
            conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(values)}"
                f" FROM {table}, {series.format(n=copies)} WHERE {where} = {mark}",
                (run_id,),
            )
    conn.close()


async def _memory(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    import json

    def child(scenario: str) -> dict[str, Any]:
        spec = {"engine": "durable", "scenario": scenario, "target": target.to_json(), "params": p}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        return cast("dict[str, Any]", json.loads(done.stdout.strip().splitlines()[-1]))

    empty = await anyio.to_thread.run_sync(child, "rss")
    filled = await anyio.to_thread.run_sync(child, "populate")
    loaded = await anyio.to_thread.run_sync(child, "rss")
    if not loaded["any_suspended"]:
        raise RuntimeError("populated database has no suspended run")
    return {
        "suspended_runs": p["suspended_runs"],
        "populate_s": filled["populate_s"],
        "rss_empty_mib": empty["rss_kib"] / 1024,
        "rss_loaded_mib": loaded["rss_kib"] / 1024,
        "rss_growth_mib": (loaded["rss_kib"] - empty["rss_kib"]) / 1024,
        "completed": 4 * p["rss_workflows"],
    }


SCENARIOS: dict[str, Callable[[Target, dict[str, Any]], Any]] = {
    "steps": _steps,
    "replay": _replay,
    "signals": _signals,
    "throughput": _throughput,
    "worker": _worker,
    "memory": _memory,
    "rss": _rss,
    "populate": _populate,
}


def run(scenario: str, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = anyio.run(SCENARIOS[scenario], target, params)
    return result
