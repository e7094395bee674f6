"""Records to statement parameters and rows back to records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from durable.core import CheckpointRecord, RunRecord
from durable.stores.sqlalchemy._statements import attribute_columns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TypeAlias

    from sqlalchemy.engine import Row

    from durable.core import (
        AttributeValue,
        CheckpointKind,
        CheckpointStatus,
        ErrorInfo,
        RunPatch,
        RunStatus,
    )

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]
    """A result row of any width."""


def utcnow() -> datetime:
    """The wall clock, as stores stamp ``updated_at``."""
    return datetime.now(UTC)


def run_params(run: RunRecord) -> dict[str, Any]:
    """``INSERT`` parameters of a run row (column keys)."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "workflow_version": run.workflow_version,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": dict(run.error) if run.error is not None else None,
        "wake_at": run.wake_at,
        "locked_by": run.locked_by,
        "locked_until": run.locked_until,
        "recovery_attempts": run.recovery_attempts,
        "wake_requested": run.wake_requested,
        "tags": list(run.tags),
        "attributes": dict(run.attributes),
        "namespace": run.namespace,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def patch_params(patch: RunPatch) -> dict[str, Any]:
    """``v_<column>`` parameters of a run patch, ``updated_at`` defaulting to now."""
    params: dict[str, Any] = {}
    for key, value in patch.items():
        if key == "tags":
            value = list(cast("list[str]", value))
        elif key == "attributes":
            value = dict(cast("dict[str, AttributeValue]", value))
        elif key == "error" and value is not None:
            value = dict(cast("ErrorInfo", value))
        params[f"v_{key}"] = value
    params.setdefault("v_updated_at", utcnow())
    return params


def checkpoint_params(cp: CheckpointRecord) -> dict[str, Any]:
    """``c_<column>`` parameters of a checkpoint row."""
    return {
        "c_run_id": cp.run_id,
        "c_seq": cp.seq,
        "c_name": cp.name,
        "c_kind": cp.kind,
        "c_step_id": cp.step_id,
        "c_status": cp.status,
        "c_input": cp.input,
        "c_output": cp.output,
        "c_error": dict(cp.error) if cp.error is not None else None,
        "c_attempts": cp.attempts,
        "c_wake_at": cp.wake_at,
        "c_started_at": cp.started_at,
        "c_finished_at": cp.finished_at,
    }


def attribute_rows(run_id: str, attributes: Mapping[str, AttributeValue]) -> list[dict[str, Any]]:
    """The ``durable_run_attributes`` rows of a run's attributes."""
    rows: list[dict[str, Any]] = []
    for key, value in attributes.items():
        str_value, num_value = attribute_columns(value)
        rows.append({"run_id": run_id, "key": key, "str_value": str_value, "num_value": num_value})
    return rows


def run_record(row: Sequence[Any]) -> RunRecord:
    """A run row (the columns of ``durable_workflow_runs`` in table order) as a record."""
    (
        run_id,
        workflow,
        version,
        status,
        input_,
        output,
        error,
        wake_at,
        locked_by,
        locked_until,
        recovery_attempts,
        wake_requested,
        tags,
        attributes,
        namespace,
        created_at,
        updated_at,
    ) = cast("tuple[Any, ...]", row)
    return RunRecord(
        id=run_id,
        workflow=workflow,
        workflow_version=version,
        status=cast("RunStatus", status),
        input=input_,
        created_at=created_at,
        updated_at=updated_at,
        namespace=namespace,
        output=output,
        error=cast("ErrorInfo | None", error),
        wake_at=wake_at,
        locked_by=locked_by,
        locked_until=locked_until,
        recovery_attempts=recovery_attempts,
        wake_requested=bool(wake_requested),
        tags=list(tags) if tags else [],
        attributes=dict(attributes) if attributes else {},
    )


def checkpoint_record(row: Sequence[Any]) -> CheckpointRecord:
    """A checkpoint row (the columns of ``durable_step_checkpoints`` in table order)."""
    (
        run_id,
        seq,
        name,
        kind,
        step_id,
        status,
        input_,
        output,
        error,
        attempts,
        wake_at,
        started_at,
        finished_at,
    ) = cast("tuple[Any, ...]", row)
    return CheckpointRecord(
        run_id=run_id,
        seq=seq,
        name=name,
        kind=cast("CheckpointKind", kind),
        status=cast("CheckpointStatus", status),
        step_id=step_id,
        started_at=started_at,
        input=input_,
        output=output,
        error=cast("ErrorInfo | None", error),
        attempts=attempts,
        wake_at=wake_at,
        finished_at=finished_at,
    )
