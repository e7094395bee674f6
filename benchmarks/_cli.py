"""The orchestrator: plan the measurements, run each in a fresh child, report medians."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Results, medians, render
from benchmarks._sizes import SIZES, Size
from benchmarks._targets import (
    DATABASES,
    fresh_target,
    postgres_available,
    sa_store_available,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("steps", "floor", "replay", "signals", "throughput", "memory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="durable side by side with DBOS."
    )
    parser.add_argument("--db", default="all", choices=[*DATABASES, "all"])
    parser.add_argument("--size", default="small", choices=list(SIZES))
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default per size)")
    parser.add_argument("--out", type=Path, default=None, help="also save results as JSON")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--engines", default="durable,dbos", help="durable,dbos or one of them (raw always runs)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run durable's per-step children under pyinstrument; reports go to this directory",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _plan(
    db: str, size: Size, scenarios: list[str], dbos: bool
) -> list[tuple[str, str, dict[str, Any]]]:
    """(scenario key, contender, params) for one repetition on ``db``; contenders interleave."""
    base: dict[str, Any] = {
        "warmup": size.warmup,
        "workflows": size.workflows,
        "replay_steps": list(size.replay_steps),
        "signals": list(size.signals),
        "throughput_runs": size.throughput_runs,
        "throughput_steps": size.throughput_steps,
        "suspended_runs": size.suspended_runs,
        "rss_workflows": 10 if size.name == "tiny" else 20,
    }
    real = db != "memory"
    with_dbos = dbos and real
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for scenario in scenarios:
        if scenario == "steps":
            plan += [("steps", "durable", base)] + ([("steps", "dbos", base)] if with_dbos else [])
        elif scenario == "floor" and real:
            plan.append(("floor", "raw", base))
        elif scenario == "replay":
            plan.append(("replay", "durable", base))
        elif scenario == "signals":
            plan += [("signals", "durable", base)]
            plan += [("signals", "dbos", base)] if with_dbos else []
        elif scenario == "throughput":
            workers = size.throughput_workers if db == "postgres" else (1,)
            for w in workers:
                params = {**base, "workers": w}
                plan.append((f"throughput_w{w}", "durable", params))
                if with_dbos and size.name != "tiny":
                    plan.append((f"throughput_w{w}", "dbos", params))
        elif scenario == "memory" and real:
            plan.append(("memory", "durable", base))
    return plan


def _run_child(
    db: str,
    key: str,
    who: str,
    params: dict[str, Any],
    workdir: Path,
    profile: str | None = None,
) -> dict[str, Any]:
    scenario = "throughput" if key.startswith("throughput") else key
    with fresh_target(db, workdir) as target:
        spec = {"engine": who, "scenario": scenario, "target": target.to_json(), "params": params}
        if profile is not None:
            spec["profile"] = profile
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{who} {key} on {db} failed: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in (
        "durable-core",
        "durable-store-sqlalchemy",
        "dbos",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "psycopg",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    size = SIZES[args.size]
    reps = args.reps or size.reps
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    engines = {e.strip() for e in args.engines.split(",")}
    notes: list[str] = []
    dbos = "dbos" in engines
    if dbos and importlib.util.find_spec("dbos") is None:
        dbos = False
        notes.append("DBOS is not installed: DBOS columns skipped (uv sync --group bench).")
    if "durable" not in engines:
        raise SystemExit("durable must be among --engines")
    dbs = list(DATABASES) if args.db == "all" else [args.db]
    if size.name == "tiny" and dbos and "throughput" in scenarios:
        notes.append("tiny size: DBOS throughput skipped (its worker processes start slowly).")
    if args.db == "all" and args.size == "tiny":
        dbs = ["memory", "sqlite"]
    for db in list(dbs):
        reason = None
        if db != "memory":
            reason = sa_store_available()
        if reason is None and db == "postgres":
            reason = postgres_available()
        if reason is not None:
            dbs.remove(db)
            notes.append(f"{db} skipped: {reason}")
    results: Results = {}
    errors: list[str] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        for db in dbs:
            for rep in range(reps):
                plan = _plan(db, size, scenarios, dbos)
                if rep % 2 == 1:
                    plan = _swap_pairs(plan)
                for key, who, params in plan:
                    t0 = time.perf_counter()
                    profile = None
                    if args.profile is not None and key == "steps" and who == "durable":
                        args.profile.mkdir(parents=True, exist_ok=True)
                        profile = str(args.profile.resolve() / f"{db}-steps-rep{rep + 1}")
                    try:
                        result = _run_child(db, key, who, params, Path(tmp), profile)
                    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                        errors.append(str(exc))
                        if not args.quiet:
                            print(f"  ! {exc}", file=sys.stderr)
                        continue
                    results.setdefault(db, {}).setdefault(key, {}).setdefault(who, []).append(
                        result
                    )
                    if not args.quiet:
                        print(
                            f"  [{db} rep {rep + 1}/{reps}] {key:<14} {who:<8}"
                            f" {time.perf_counter() - t0:6.1f} s",
                            file=sys.stderr,
                        )
    summary = medians(results)
    notes += [f"error: {e}" for e in errors]
    print(render(summary, notes))
    elapsed = time.perf_counter() - t_start
    print(f"\n{args.size} size, {reps} repetition(s), {elapsed:.0f} s in all")
    if args.out is not None:
        payload = {
            "meta": {
                "size": args.size,
                "reps": reps,
                "databases": dbs,
                "dbos": dbos,
                "versions": _versions(),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "elapsed_s": elapsed,
            },
            "notes": notes,
            "summary": summary,
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2))
    return 1 if errors else 0


def _swap_pairs(
    plan: list[tuple[str, str, dict[str, Any]]],
) -> list[tuple[str, str, dict[str, Any]]]:
    """Within each scenario, run the contenders in reverse order (DBOS first)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    i = 0
    while i < len(plan):
        j = i
        while j < len(plan) and plan[j][0] == plan[i][0]:
            j += 1
        out += list(reversed(plan[i:j]))
        i = j
    return out
