"""The rows a :class:`~durable.core.StateStore` keeps, as plain dataclasses.

Stores return fresh records; mutating one never changes stored state.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from durable.core._types import (
        AttributeValue,
        CheckpointKind,
        CheckpointStatus,
        JSONValue,
        RunStatus,
    )


class ErrorInfo(TypedDict, total=False):
    """A failure as stored: always ``type`` and ``message``; the rest when known."""

    type: str
    message: str
    code: str
    retryable: bool
    traceback: str


@dataclass(slots=True)
class RunRecord:
    """One workflow run (table ``durable_workflow_runs``).

    ``wake_requested`` is set when a signal or step result arrives while a worker holds the run;
    the holder's release then leaves the run ``pending`` instead of ``suspended``.
    """

    id: str
    workflow: str
    workflow_version: str
    status: RunStatus
    input: JSONValue
    created_at: datetime
    updated_at: datetime
    namespace: str = "default"
    output: JSONValue = None
    error: ErrorInfo | None = None
    wake_at: datetime | None = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    recovery_attempts: int = 0
    wake_requested: bool = False
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


class RunPatch(TypedDict, total=False):
    """The run columns a patch may set; a key that is absent is left unchanged.

    ``None`` clears a nullable column (``output``, ``error``, ``wake_at``).
    ``attributes`` replaces the whole attribute set.
    """

    status: RunStatus
    output: JSONValue
    error: ErrorInfo | None
    wake_at: datetime | None
    recovery_attempts: int
    tags: list[str]
    attributes: dict[str, AttributeValue]
    updated_at: datetime


@dataclass(slots=True)
class CheckpointRecord:
    """One ``ctx`` call's record (table ``durable_step_checkpoints``, key ``(run_id, seq)``)."""

    run_id: str
    seq: int
    name: str
    kind: CheckpointKind
    status: CheckpointStatus
    step_id: str
    started_at: datetime
    input: JSONValue = None
    output: JSONValue = None
    error: ErrorInfo | None = None
    attempts: int = 0
    wake_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(slots=True, frozen=True)
class SignalWaiter:
    """A run waiting on a signal token at a sequence (table ``durable_signal_waiters``)."""

    token: str
    run_id: str
    seq: int


@dataclass(slots=True, frozen=True)
class BufferedSignal:
    """A signal that arrived before anyone waited for it (table ``durable_buffered_signals``)."""

    id: int
    token: str
    payload: JSONValue
    created_at: datetime


@dataclass(slots=True, frozen=True)
class RunQuery:
    """A ``list_runs`` filter. Every given criterion must hold.

    Results are ordered newest first (``created_at`` then ``id``, both descending).
    ``cursor`` is the ``next_cursor`` of the previous page.
    """

    namespace: str | None = None
    statuses: frozenset[RunStatus] | None = None
    workflow: str | None = None
    tags: frozenset[str] = frozenset()
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    run_ids: frozenset[str] | None = None
    """Only these runs (any namespace unless ``namespace`` is given)."""
    limit: int = 100
    cursor: str | None = None


@dataclass(slots=True, frozen=True)
class RunPage:
    """One page of ``list_runs``; ``next_cursor`` is ``None`` on the last page."""

    runs: list[RunRecord]
    next_cursor: str | None


def encode_cursor(run: RunRecord) -> str:
    """The opaque cursor that continues a newest-first listing after ``run``."""
    raw = json.dumps([run.created_at.isoformat(), run.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Split a cursor made by :func:`encode_cursor` into ``(created_at, run_id)``.

    Raises:
        ValueError: The cursor was not made by :func:`encode_cursor`.
    """
    try:
        created, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(run_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid list_runs cursor {cursor!r}") from exc
