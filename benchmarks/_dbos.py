"""The DBOS side of the scenarios (sync API, as DBOS users write it); one child process each.

DBOS is configured with nothing but its system database URL, so it runs with its defaults
(on SQLite: ``journal_mode=delete``, ``synchronous=FULL``; on Postgres: ``synchronous_commit=on``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from benchmarks._counting import SqlCounter
from benchmarks._durable import POLL, spawn_children, stop_children

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from benchmarks._targets import Target

APP = "durable_bench"
_registered: dict[str, Any] = {}


def _launch(target: Target, executor_id: str | None = None) -> SqlCounter:
    from dbos import DBOS

    config: dict[str, Any] = {
        "name": APP,
        "system_database_url": target.dbos_url,
        "log_level": "ERROR",
    }
    if executor_id is not None:
        config["executor_id"] = executor_id
    DBOS(config=config)  # type: ignore[arg-type]

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.workflow(name="bench_steps")
    def steps_wf(n: int) -> int:
        for _ in range(n):
            noop()
        return n

    @DBOS.workflow(name="bench_signals")
    def signals_wf(n: int) -> int:
        for _ in range(n):
            DBOS.recv("sig", timeout_seconds=60)
        return n

    _registered.update(steps=steps_wf, signals=signals_wf)
    DBOS.launch()
    sql = SqlCounter()
    from dbos import _dbos as dbos_module

    instance = getattr(dbos_module, "_dbos_global_instance", None)
    sys_db = getattr(instance, "_sys_db_field", None)
    if sys_db is not None:
        sql.attach(sys_db)
    return sql


def _destroy() -> None:
    from dbos import DBOS

    DBOS.destroy(destroy_registry=True)


def _steps(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    from dbos import DBOS

    sql = _launch(target)
    wf = _registered["steps"]
    out: dict[str, Any] = {}
    variants: dict[str, Callable[[int], Any]] = {
        "": wf,
        "start_": lambda n: DBOS.start_workflow(wf, n).get_result(),
    }
    try:
        for _ in range(p["warmup"]):
            wf(10)
        for prefix, call in variants.items():
            for n in (1, 10):
                sql.reset()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(p["workflows"]):
                    if call(n) != n:
                        raise RuntimeError("DBOS workflow returned a wrong result")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                out[f"{prefix}wf{n}_us"] = wall / p["workflows"] * 1e6
                out[f"{prefix}wf{n}_cpu_us"] = cpu / p["workflows"] * 1e6
                out[f"{prefix}wf{n}_statements"] = sql.statements / p["workflows"]
            for key in ("us", "cpu_us", "statements"):
                out[f"{prefix}step_{key}"] = (
                    out[f"{prefix}wf10_{key}"] - out[f"{prefix}wf1_{key}"]
                ) / 9
    finally:
        _destroy()
    out["completed"] = p["warmup"] + 4 * p["workflows"]
    return out


def _signals(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    from dbos import DBOS

    sql = _launch(target)
    out: dict[str, Any] = {"completed": 0}
    try:
        _registered["steps"](1)  # warm up
        for n in p["signals"]:
            sql.reset()
            t0 = time.perf_counter()
            handle = DBOS.start_workflow(_registered["signals"], n)
            for i in range(n):
                DBOS.send(handle.workflow_id, i, "sig")
            result = handle.get_result()
            out[f"burst{n}_ms"] = (time.perf_counter() - t0) * 1e3
            out[f"burst{n}_statements"] = sql.statements
            out["completed"] += result == n
    finally:
        _destroy()
    return out


def _worker(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    from dbos import DBOS

    _launch(target, executor_id=f"bench-{os.getpid()}")
    DBOS.register_queue(
        "bench", polling_interval_sec=POLL, worker_concurrency=p.get("max_concurrent_runs", 100)
    )
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def _count_completed(target: Target) -> int:
    if target.raw_sqlite is not None:
        import sqlite3

        with sqlite3.connect(target.raw_sqlite, timeout=30) as conn:
            query = "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'"
            return int(conn.execute(query).fetchone()[0])
    import psycopg

    assert target.raw_pg is not None
    with psycopg.connect(target.raw_pg) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        ).fetchone()
        return int(row[0]) if row else 0


def _throughput(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    from dbos import DBOSClient

    runs, steps, workers = p["throughput_runs"], p["throughput_steps"], p["workers"]
    procs: list[subprocess.Popen[str]] = []
    procs = spawn_children(
        {"engine": "dbos", "scenario": "worker", "target": target.to_json(), "params": p},
        workers,
    )
    client = DBOSClient(system_database_url=target.dbos_url, application_name=APP)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda _: client.enqueue(
                        {"queue_name": "bench", "workflow_name": "bench_steps"}, steps
                    ),
                    range(runs),
                )
            )
        started = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        while (done := _count_completed(target)) < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} of {runs} DBOS workflows finished")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        stop_children(procs)
        client.destroy()
    return {
        "workflows_per_s": runs / elapsed,
        "steps_per_s": runs * steps / elapsed,
        "start_s": started,
        "elapsed_s": elapsed,
        "completed": done,
    }


SCENARIOS: dict[str, Callable[[Target, dict[str, Any]], dict[str, Any]]] = {
    "steps": _steps,
    "signals": _signals,
    "throughput": _throughput,
    "worker": _worker,
}


def run(scenario: str, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    return SCENARIOS[scenario](target, params)
