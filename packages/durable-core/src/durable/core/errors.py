"""Errors raised by durable. Every public error derives from :class:`DurableError`.

::

    DurableError
     +-- WorkflowNotRegistered        no workflow (or version) of that name is registered
     +-- StepNotRegistered            no handler serves a remote step of that name
     +-- RunNotFound                  no run has that id
     +-- RunConflictError             a run id is taken by a run of another workflow
     +-- EngineNotRunningError        the engine was used outside ``async with``
     +-- InputValidationError         a workflow/step/signal payload failed validation
     |    +-- SignalPayloadError      a signal payload does not match the waiter's type
     +-- SerializationError           a value could not be encoded as JSON
     +-- ResultTypeError              a step or workflow returned a value of the wrong type
     +-- NonDeterminismError          replay met a different call than the one recorded
     +-- SignalTimeoutError           wait_for_signal reached its timeout
     +-- StepFailedError              a step failed for good (retries exhausted or fatal)
     |    +-- RemoteStepError         a remote step failed for good
     +-- FatalError                   raised by step code: do not retry
     +-- ProtocolError                a malformed wire message (durable.core.transport)
     +-- StoreError                   a store could not do what was asked
          +-- StoreUnavailableError   the database could not be reached
          +-- SchemaMissingError      the durable tables do not exist (auto_schema=False)
          +-- PayloadTooLargeError    a value is larger than the database takes in one write
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


class DurableError(Exception):
    """Base class of every error durable raises."""


class WorkflowNotRegistered(DurableError):
    """No workflow of that name (or that version) is registered with the engine."""


class StepNotRegistered(DurableError):
    """No handler is registered for a remote step of that name."""


class RunNotFound(DurableError):
    """No run has that id."""


class RunConflictError(DurableError):
    """``start`` was given a run id that a run of another workflow already has.

    Attributes:
        run_id: The contested id.
        workflow: The workflow of the existing run.
        requested: The workflow the caller asked for.
    """

    def __init__(self, run_id: str, workflow: str, requested: str) -> None:
        super().__init__(
            f"run id {run_id!r} is taken by a run of workflow {workflow!r};"
            f" cannot start workflow {requested!r} under it"
        )
        self.run_id = run_id
        self.workflow = workflow
        self.requested = requested


class EngineNotRunningError(DurableError):
    """The engine was asked to start or signal a run outside ``async with engine``."""


class InputValidationError(DurableError):
    """A payload failed validation; names what was validated and wraps pydantic's error.

    Attributes:
        subject: What was validated, e.g. ``workflow 'checkout' input``.
        validation_error: The underlying pydantic error, when there is one.
    """

    def __init__(
        self, subject: str, detail: str, validation_error: pydantic.ValidationError | None = None
    ) -> None:
        super().__init__(f"{subject}: {detail}")
        self.subject = subject
        self.validation_error = validation_error


class SignalPayloadError(InputValidationError):
    """A signal's payload does not match the type the waiter declared."""

    def __init__(
        self, token: str, detail: str, validation_error: pydantic.ValidationError | None = None
    ) -> None:
        super().__init__(f"signal {token!r} payload", detail, validation_error)
        self.token = token


class SerializationError(DurableError):
    """A value could not be encoded as JSON (names the step or workflow and the type)."""


class ResultTypeError(DurableError):
    """A step or workflow returned a value that does not match its declared return type.

    Checked on the first execution, before the value is recorded, so a replay can never meet a
    value the first execution would not have returned.

    Attributes:
        subject: What returned the value, e.g. ``step 'charge' result``.
    """

    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"{subject}: {detail}")
        self.subject = subject


class NonDeterminismError(DurableError):
    """Replay met a call that differs from the checkpoint recorded at that sequence."""

    def __init__(self, run_id: str, seq: int, expected: str, found: str) -> None:
        super().__init__(
            f"run {run_id}: non-deterministic replay at seq {seq}: "
            f"the history has {expected}, the code now calls {found}"
        )
        self.run_id = run_id
        self.seq = seq
        self.expected = expected
        self.found = found


class SignalTimeoutError(DurableError):
    """``wait_for_signal`` reached its timeout before a signal arrived."""

    def __init__(self, token: str) -> None:
        super().__init__(f"no signal {token!r} arrived before the timeout")
        self.token = token


class StepFailedError(DurableError):
    """A step failed for good; raised the same way on the first run and on replay.

    Attributes:
        step: The step's name.
        error_type: The qualified name of the exception the step raised.
        error_message: Its message.
        attempts: How many attempts were made.
    """

    def __init__(self, step: str, error_type: str, error_message: str, attempts: int) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error_type}: {error_message}"
        )
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


class RemoteStepError(StepFailedError):
    """A remote step failed for good (the handler failed, or its output was invalid)."""


class FatalError(DurableError):
    """Raise from step code to fail the step at once, without further retries."""


class StoreError(DurableError):
    """A store could not do what was asked."""


class StoreUnavailableError(StoreError):
    """The database could not be reached."""


class SchemaMissingError(StoreError):
    """The durable tables do not exist and the engine was told not to create them."""


class PayloadTooLargeError(StoreError):
    """A write is larger than the database accepts; nothing of it was written.

    Retrying the same value cannot succeed. The message names the call (its run, and the
    sequence for a checkpoint), the size and the limit it exceeded, e.g. MySQL/MariaDB's
    ``max_allowed_packet``.
    """
