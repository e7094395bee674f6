"""The benchmark harness runs end to end at ``tiny`` size and reports sane numbers.

Correctness only: every scenario produced positive numbers and its workflows completed.
No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _sa_store_importable() -> bool:
    try:
        from durable.stores.sqlalchemy import SqlAlchemyStateStore  # noqa: F401
    except ImportError:
        return False
    return True


def _run_all(tmp_path: Path, dbs: list[str]) -> dict[str, dict[str, Any]]:
    """Run the harness once per database, all at the same time (each takes ~10-15 s)."""
    procs = {}
    for db in dbs:
        out = tmp_path / f"{db}.json"
        cmd = [sys.executable, "-m", "benchmarks", "--size", "tiny", "--quiet", "--db", db]
        cmd += ["--engines", "durable", "--out", str(out)]
        procs[db] = (out, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    results = {}
    for db, (out, proc) in procs.items():
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout
        assert "Per-step overhead" in stdout or db != "memory"
        results[db] = json.loads(out.read_text())
    return results


def _check_durable(summary: dict[str, Any], *, real_db: bool) -> None:
    steps = summary["steps"]["durable"]
    assert steps["wf1_us"] > 0
    assert steps["wf10_us"] > 0
    assert steps["step_cpu_us"] > 0
    assert steps["completed"] > 0
    replay = summary["replay"]["durable"]
    assert replay["completed"] == 4  # two sizes, each counted in one pass and timed in another
    for n in (10, 100):
        assert replay[f"n{n}_ms"] > 0
        assert replay[f"n{n}_checkpoint_reads"] >= 1
    signals = summary["signals"]["durable"]
    assert signals["completed"] == 8  # N = 5 and 10, burst and one at a time, counted and timed
    for n in (5, 10):
        assert signals[f"burst{n}_ms"] > 0
        assert signals[f"serial{n}_ms"] > 0
        assert signals[f"burst{n}_store_calls"] > 0
    throughput = summary["throughput_w1"]["durable"]
    assert throughput["workflows_per_s"] > 0
    assert throughput["completed"] == 20
    if real_db:
        # One durable write per completed step (counted on an engine that does not poll).
        assert steps["step_statements"] == pytest.approx(1, abs=0.25)
        assert replay["n10_statements"] > 0
        floor = summary["floor"]["raw"]
        assert floor["sync_us"] > 0
        assert floor["async_us"] > 0
        assert floor["async_autocommit_us"] > 0
        memory = summary["memory"]["durable"]
        assert memory["rss_empty_mib"] > 0
        assert memory["rss_loaded_mib"] > 0
        assert memory["suspended_runs"] == 1000


def test_tiny_run_reports_every_durable_scenario(tmp_path: Path) -> None:
    results = _run_all(tmp_path, ["memory", "sqlite"])
    memory = results["memory"]
    assert memory["meta"]["size"] == "tiny"
    assert memory["meta"]["dbos"] is False
    _check_durable(memory["summary"]["memory"], real_db=False)
    sqlite = results["sqlite"]
    if _sa_store_importable():
        _check_durable(sqlite["summary"]["sqlite"], real_db=True)
    else:
        assert "sqlite" not in sqlite["summary"]
        assert any("sqlite skipped" in note for note in sqlite["notes"])
