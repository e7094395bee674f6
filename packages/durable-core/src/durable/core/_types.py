"""The shared vocabulary: JSON payloads and the status and kind literals."""

from __future__ import annotations

from typing import Literal, TypeAlias

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that survives a JSON round trip; every stored payload is one."""

RunStatus = Literal["pending", "running", "suspended", "completed", "failed", "cancelled", "dead"]
CheckpointKind = Literal["local", "remote", "sleep", "signal"]
CheckpointStatus = Literal["pending", "running", "completed", "failed"]
AttributeValue: TypeAlias = "str | int | float | bool"

TERMINAL_STATUSES: frozenset[RunStatus] = frozenset({"completed", "failed", "cancelled", "dead"})
"""Statuses a run never leaves."""

RUN_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "dead",
)
