"""What the engine reports: :class:`RunHandle`, :class:`Run` and :class:`RunList`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from durable.core._types import TERMINAL_STATUSES
from durable.core.errors import InputValidationError, WorkflowNotRegistered

if TYPE_CHECKING:
    from datetime import datetime

    from durable.core._types import AttributeValue, JSONValue, RunStatus
    from durable.core.records import ErrorInfo, RunRecord
    from durable.core.workflow import WorkflowRegistry


@dataclass(frozen=True, slots=True)
class RunHandle:
    """What ``start`` returns: the run and its status when ``start`` returned.

    ``created`` is False when the id existed already and this is that run.
    """

    run_id: str
    status: RunStatus
    created: bool
    workflow: str
    version: str


@dataclass(frozen=True, slots=True)
class Run:
    """A run as the engine reports it.

    ``output`` is decoded into the workflow's output type when the workflow is registered
    with this engine, and left as JSON otherwise.
    """

    id: str
    workflow: str
    version: str
    status: RunStatus
    input: JSONValue
    output: object
    error: ErrorInfo | None
    namespace: str
    tags: list[str]
    attributes: dict[str, AttributeValue]
    wake_at: datetime | None
    recovery_attempts: int
    created_at: datetime
    updated_at: datetime

    @property
    def done(self) -> bool:
        """Whether the run reached a terminal status."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RunList:
    """One page of ``list_runs``."""

    runs: list[Run]
    next_cursor: str | None = None


def run_view(record: RunRecord, workflows: WorkflowRegistry) -> Run:
    """The :class:`Run` of a stored record (its output decoded when ``workflows`` has it)."""
    output: object = record.output
    if record.status == "completed":
        try:
            wf = workflows.get(record.workflow, record.workflow_version)
            output = wf.output_codec.decode(record.output, f"workflow {wf.name!r} output")
        except (WorkflowNotRegistered, InputValidationError):
            output = record.output
    return Run(
        id=record.id,
        workflow=record.workflow,
        version=record.workflow_version,
        status=record.status,
        input=record.input,
        output=output,
        error=record.error,
        namespace=record.namespace,
        tags=record.tags,
        attributes=record.attributes,
        wake_at=record.wake_at,
        recovery_attempts=record.recovery_attempts,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
