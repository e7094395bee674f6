"""Medians over repetitions, ratios, and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

Results = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # db -> scenario -> who -> reps
Summary = dict[str, dict[str, dict[str, dict[str, float]]]]


def medians(results: Results) -> Summary:
    """Median of every numeric metric over the repetitions that succeeded."""
    out: Summary = {}
    for db, scenarios in results.items():
        for scenario, contenders in scenarios.items():
            for who, reps in contenders.items():
                keys = {k for r in reps for k, v in r.items() if isinstance(v, int | float)}
                cell = {
                    k: statistics.median(
                        float(r[k]) for r in reps if isinstance(r.get(k), int | float)
                    )
                    for k in sorted(keys)
                }
                out.setdefault(db, {}).setdefault(scenario, {})[who] = cell
    return out


def _sizes(results: dict[str, Any], prefix: str) -> list[int]:
    """The sizes N found in keys like ``<prefix><N>_ms``, in order."""
    return sorted(
        {int(k.removeprefix(prefix).split("_")[0]) for k in results if k.startswith(prefix)}
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  " + "  ".join(padded)

    lines = [title, line(header), *(line(row) for row in rows)]
    return "\n".join(lines)


def render(summary: Summary, notes: list[str]) -> str:
    """Readable tables, one block per database."""
    blocks: list[str] = []
    for db, sc in summary.items():
        blocks.append(f"=== {db} ===")
        d = sc.get("steps", {}).get("durable", {})
        x = sc.get("steps", {}).get("dbos", {})
        floor = sc.get("floor", {}).get("raw", {})
        if d or x:
            rows = []
            for label, key in (
                ("workflow, 1 step (us)", "wf1_us"),
                ("workflow, 10 steps (us)", "wf10_us"),
                ("per step, marginal (us)", "step_us"),
                ("client CPU per step (us)", "step_cpu_us"),
                ("SQL statements per step", "step_statements"),
                ("SQL statements per 1-step workflow", "wf1_statements"),
            ):
                digits = 1 if "statements" in key else 0
                rows.append(
                    [
                        label,
                        _fmt(d.get(key), digits),
                        _fmt(x.get(key), digits),
                        _fmt(x.get(f"start_{key}"), digits),
                        _ratio(d.get(key), x.get(key)),
                    ]
                )
            blocks.append(
                _table(
                    "Per-step overhead (start -> terminal, workflows one after another)",
                    ["", "durable", "DBOS direct", "DBOS start_workflow", "durable/DBOS"],
                    rows,
                )
            )
        if floor:
            rows = [
                ["raw INSERT+COMMIT, DBOS's driver (us)", _fmt(floor.get("sync_us")), "", ""],
                ["raw INSERT+COMMIT, durable's driver (us)", _fmt(floor.get("async_us")), "", ""],
                [
                    "raw autocommit INSERT, durable's driver (us)",
                    _fmt(floor.get("async_autocommit_us")),
                    "",
                    "",
                ],
                [
                    "per step / raw commit (own driver)",
                    "",
                    _ratio(d.get("step_us"), floor.get("async_us")),
                    _ratio(x.get("step_us"), floor.get("sync_us")),
                ],
                [
                    "per step / raw autocommit INSERT",
                    "",
                    _ratio(d.get("step_us"), floor.get("async_autocommit_us")),
                    "",
                ],
                [
                    "1-step workflow / raw commit",
                    "",
                    _ratio(d.get("wf1_us"), floor.get("async_us")),
                    _ratio(x.get("wf1_us"), floor.get("sync_us")),
                ],
            ]
            blocks.append(_table("Raw floor", ["", "us", "durable", "DBOS"], rows))
        rp = sc.get("replay", {}).get("durable", {})
        if rp:
            ns = _sizes(rp, "n")
            rows = [
                [
                    str(n),
                    _fmt(rp.get(f"n{n}_ms"), 1),
                    _fmt(rp.get(f"n{n}_store_calls")),
                    _fmt(rp.get(f"n{n}_checkpoint_reads")),
                    _fmt(rp.get(f"n{n}_statements")),
                ]
                for n in ns
            ]
            blocks.append(
                _table(
                    "Replay: resume a run with n completed steps (signal -> terminal), durable",
                    ["n", "ms", "store calls", "checkpoint reads", "SQL statements"],
                    rows,
                )
            )
        sd = sc.get("signals", {}).get("durable", {})
        sx = sc.get("signals", {}).get("dbos", {})
        if sd or sx:
            ns = _sizes({**sd, **sx}, "burst")
            rows = [
                [
                    str(n),
                    _fmt(sd.get(f"burst{n}_ms"), 1),
                    _fmt(sx.get(f"burst{n}_ms"), 1),
                    _ratio(sd.get(f"burst{n}_ms"), sx.get(f"burst{n}_ms")),
                    _fmt(sd.get(f"burst{n}_statements")),
                    _fmt(sx.get(f"burst{n}_statements")),
                    _fmt(sd.get(f"serial{n}_ms"), 1),
                    _fmt(sd.get(f"serial{n}_statements")),
                ]
                for n in ns
            ]
            blocks.append(
                _table(
                    "Signals: a run waits on N signals in a row. Burst: start, send all, wait;"
                    " one at a time: each signal wakes the parked run (durable only)",
                    [
                        "N",
                        "burst ms",
                        "DBOS ms",
                        "durable/DBOS",
                        "statements",
                        "DBOS statements",
                        "one at a time ms",
                        "statements",
                    ],
                    rows,
                )
            )
        tp = sorted(k for k in sc if k.startswith("throughput_w"))
        if tp:
            rows = []
            for key in tp:
                td, tx = sc[key].get("durable", {}), sc[key].get("dbos", {})
                rows.append(
                    [
                        key.removeprefix("throughput_w"),
                        _fmt(td.get("workflows_per_s"), 1),
                        _fmt(tx.get("workflows_per_s"), 1),
                        _ratio(td.get("workflows_per_s"), tx.get("workflows_per_s")),
                    ]
                )
            blocks.append(
                _table(
                    "Throughput (concurrent workflows, worker processes)",
                    ["workers", "durable wf/s", "DBOS wf/s", "durable/DBOS"],
                    rows,
                )
            )
        mem = sc.get("memory", {}).get("durable", {})
        if mem:
            rows = [
                [
                    _fmt(mem.get("suspended_runs")),
                    _fmt(mem.get("rss_empty_mib"), 1),
                    _fmt(mem.get("rss_loaded_mib"), 1),
                    _fmt(mem.get("rss_growth_mib"), 1),
                ]
            ]
            blocks.append(
                _table(
                    "Worker RSS with suspended runs in the database, durable (MiB)",
                    ["suspended runs", "RSS, none", "RSS, loaded", "growth"],
                    rows,
                )
            )
        blocks.append("")
    if notes:
        blocks.append("Notes:\n" + "\n".join(f"  - {n}" for n in notes))
    return "\n\n".join(blocks)
