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

ROOT = Path(__file__).resolve().parents[3]


def _sa_store_importable() -> bool:
    try:
        from durable.stores.sqlalchemy import SqlAlchemyStateStore  # noqa: F401
    except ImportError:
        return False
    return True


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", "tiny", "--quiet", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Per-step overhead" in done.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _check_durable(summary: dict[str, Any], *, real_db: bool) -> None:
    steps = summary["steps"]["durable"]
    assert steps["wf1_us"] > 0
    assert steps["wf10_us"] > 0
    assert steps["step_cpu_us"] > 0
    assert steps["completed"] > 0
    replay = summary["replay"]["durable"]
    assert replay["completed"] == 2
    for n in (10, 100):
        assert replay[f"n{n}_ms"] > 0
        assert replay[f"n{n}_checkpoint_reads"] >= 1
    signals = summary["signals"]["durable"]
    assert signals["completed"] == 2
    assert signals["burst_ms"] > 0
    assert signals["serial_ms"] > 0
    throughput = summary["throughput_w1"]["durable"]
    assert throughput["workflows_per_s"] > 0
    assert throughput["completed"] == 40
    if real_db:
        assert steps["step_statements"] > 0
        assert replay["n10_statements"] > 0
        floor = summary["floor"]["raw"]
        assert floor["sync_us"] > 0
        assert floor["async_us"] > 0
        memory = summary["memory"]["durable"]
        assert memory["rss_empty_mib"] > 0
        assert memory["rss_loaded_mib"] > 0
        assert memory["suspended_runs"] == 1000


def test_tiny_run_reports_every_durable_scenario(tmp_path: Path) -> None:
    data = _run(tmp_path, "--db", "all", "--engines", "durable")
    summary = data["summary"]
    assert data["meta"]["size"] == "tiny"
    assert data["meta"]["dbos"] is False
    _check_durable(summary["memory"], real_db=False)
    if _sa_store_importable():
        _check_durable(summary["sqlite"], real_db=True)
    else:
        assert "sqlite" not in summary
        assert any("sqlite skipped" in note for note in data["notes"])
