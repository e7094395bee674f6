"""How much work each ``--size`` does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    reps: int
    warmup: int
    workflows: int  # workflows one after another, per step count, in the per-step scenario
    replay_steps: tuple[int, ...]
    signals: tuple[int, ...]  # N signals in a row, one run per N
    throughput_runs: int
    throughput_steps: int
    throughput_workers: tuple[int, ...]
    suspended_runs: int


SIZES: dict[str, Size] = {
    "tiny": Size("tiny", 1, 2, 10, (10, 100), (5, 10), 20, 5, (1,), 1_000),
    "small": Size("small", 3, 10, 100, (10, 100, 1000), (10, 100), 200, 5, (1, 4), 10_000),
    "full": Size("full", 5, 30, 300, (10, 100, 1000), (10, 100, 300), 1000, 5, (1, 4), 100_000),
}
