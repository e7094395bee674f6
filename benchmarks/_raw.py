"""The floor: single-row INSERT + COMMIT transactions, nothing else.

Two drivers per database, each with the durability settings of the engine that uses it:
``sync`` is DBOS's driver (``sqlite3`` with DBOS's settings: ``BEGIN IMMEDIATE``,
``journal_mode=delete``, ``synchronous=FULL``; ``psycopg`` 3), ``async`` is durable's driver
(``aiosqlite`` with the settings ``SqlAlchemyStateStore`` applies; ``asyncpg``). Postgres runs
with the server's ``synchronous_commit=on``. The table is shaped like a checkpoint table.

``async`` writes each row the way application code usually does: an explicit transaction
(INSERT, then COMMIT). ``async_autocommit`` is the least a commit can cost with that driver:
one autocommitted INSERT, one call into the driver (one thread hop for aiosqlite, one round
trip for asyncpg), which is how the store writes a checkpoint.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from benchmarks._targets import Target

DDL = (
    "CREATE TABLE IF NOT EXISTS raw_checkpoints (run_id VARCHAR(191) NOT NULL,"
    " seq INTEGER NOT NULL, output TEXT, PRIMARY KEY (run_id, seq))"
)
# What SqlAlchemyStateStore sets on each SQLite connection (checked in its source; see
# docs/benchmarks.md). Kept here so the async floor pays exactly what durable pays.
DURABLE_SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
)


def _sqlite_sync(path: str, n: int) -> tuple[float, float]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level="IMMEDIATE")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(DDL)
    conn.commit()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        conn.execute("INSERT INTO raw_checkpoints VALUES (?, ?, ?)", ("sync", i, "null"))
        conn.commit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.close()
    if sync != 2:
        raise RuntimeError(f"sqlite3 synchronous={sync}, expected 2 (FULL); journal={mode}")
    return wall / n * 1e6, cpu / n * 1e6


async def _sqlite_async(path: str, n: int, autocommit: bool) -> tuple[float, float]:
    import aiosqlite

    # isolation_level=None: each statement commits by itself (one call, one thread hop).
    async with aiosqlite.connect(path, isolation_level=None if autocommit else "") as conn:
        for pragma in DURABLE_SQLITE_PRAGMAS:
            await conn.execute(pragma)
        await conn.execute(DDL)
        await conn.commit()
        key = "auto" if autocommit else "async"
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await conn.execute("INSERT INTO raw_checkpoints VALUES (?, ?, ?)", (key, i, "null"))
            if not autocommit:
                await conn.commit()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / n * 1e6, cpu / n * 1e6


def _pg_sync(dsn: str, n: int) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(DDL)
        conn.commit()
        setting = conn.execute("SHOW synchronous_commit").fetchone()
        if setting is None or setting[0] != "on":
            raise RuntimeError(f"synchronous_commit is {setting}, expected on")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            conn.execute("INSERT INTO raw_checkpoints VALUES (%s, %s, %s)", ("sync", i, "null"))
            conn.commit()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / n * 1e6, cpu / n * 1e6


async def _pg_async(dsn: str, n: int, autocommit: bool) -> tuple[float, float]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DDL)
        insert = await conn.prepare("INSERT INTO raw_checkpoints VALUES ($1, $2, $3)")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            if autocommit:  # outside a transaction block: one round trip
                await insert.fetch("auto", i, "null")
            else:
                async with conn.transaction():
                    await insert.fetch("async", i, "null")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await conn.close()
    return wall / n * 1e6, cpu / n * 1e6


def run(scenario: str, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    if scenario != "floor":
        raise ValueError(f"raw has only the 'floor' scenario, not {scenario!r}")
    n = params["workflows"] * 10
    if target.raw_sqlite is not None:
        sync = _sqlite_sync(target.raw_sqlite, n)
        asyn = anyio.run(_sqlite_async, target.raw_sqlite, n, False)
        auto = anyio.run(_sqlite_async, target.raw_sqlite, n, True)
    elif target.raw_pg is not None:
        sync = _pg_sync(target.raw_pg, n)
        asyn = anyio.run(_pg_async, target.raw_pg, n, False)
        auto = anyio.run(_pg_async, target.raw_pg, n, True)
    else:
        raise ValueError("the raw floor needs a real database")
    return {
        "sync_us": sync[0],
        "sync_cpu_us": sync[1],
        "async_us": asyn[0],
        "async_cpu_us": asyn[1],
        "async_autocommit_us": auto[0],
        "async_autocommit_cpu_us": auto[1],
        "commits": 3 * n,
    }
