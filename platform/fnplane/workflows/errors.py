"""Errors of the workflows package, under fnplane's root ``FnplaneError``.

::

    FnplaneError
    └── WorkflowError
        ├── DefinitionError (ValueError)      a state machine definition is invalid
        ├── StateMachineNotFoundError (LookupError)
        ├── ExecutionNotFoundError (LookupError)
        ├── ExecutionAlreadyExistsError (ValueError)
        ├── InvalidRequestError (ValueError)  a TestState request cannot run
        ├── StatesError                       a state failed with a named error
        │   └── TaskFailed                    raised by a task invoker
        └── ExecutionStoppedError             an execution was stopped on request

``StatesError`` carries the Step Functions error name (``States.Runtime``,
``States.TaskFailed``, a function's exception class name, ...) and the cause
text; Retry and Catch match on that name.
"""

from __future__ import annotations

from fnplane.errors import FnplaneError

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
RUNTIME = "States.Runtime"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
BRANCH_FAILED = "States.BranchFailed"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
EXCEEDED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"
ITEM_READER_FAILED = "States.ItemReaderFailed"
QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
PERMISSIONS = "States.Permissions"

# Errors that ``States.ALL`` does not match in a Retry or Catch: AWS documents
# States.Runtime as terminal; it escapes every catch-all.
UNCATCHABLE_BY_ALL = frozenset({RUNTIME})


class WorkflowError(FnplaneError):
    """Root of every error raised by ``fnplane.workflows``."""


class DefinitionError(WorkflowError, ValueError):
    """A state machine definition failed validation.

    ``location`` is the JSON pointer-like place of the problem (for example
    ``/States/Wait/Timestamp``); the message names the state and the fix.
    """

    def __init__(self, message: str, location: str = "/") -> None:
        location = location or "/"
        super().__init__(f"{message} at {location}")
        self.location = location
        self.reason = message


class StateMachineNotFoundError(WorkflowError, LookupError):
    """No state machine is registered under the given name or ARN."""


class ExecutionNotFoundError(WorkflowError, LookupError):
    """No execution exists with the given ARN."""


class ExecutionAlreadyExistsError(WorkflowError, ValueError):
    """An execution with this name already exists with a different input."""


class InvalidRequestError(WorkflowError, ValueError):
    """A TestState request is inconsistent: an unknown state name, a mock on
    a state that calls nothing, a missing mock for a resource fnplane cannot
    call, ... The message names the offending field and value.
    """


class StatesError(WorkflowError):
    """A state failed with a Step Functions error name and a cause.

    Args:
        error: the error name Retry and Catch match on, e.g. ``States.Runtime``.
        cause: a human readable explanation, or ``None`` when there is none.
    """

    def __init__(self, error: str | None, cause: str | None = None) -> None:
        super().__init__(f"{error}: {cause}" if cause else str(error))
        self.error = error
        self.cause = cause


class TaskFailed(StatesError):
    """Raised by a task invoker when the function failed.

    ``error`` is the function's error name (its exception class name, e.g.
    ``ValueError``, or ``States.Timeout`` when it outlived its timeout) and
    ``cause`` the error payload, usually the JSON text Lambda reports.
    """


class ExecutionStoppedError(WorkflowError):
    """The execution was stopped by ``StopExecution`` while it was running."""


def error_name_of(exc: BaseException) -> str:
    """Return the Step Functions error name for an exception raised by a task.

    A ``StatesError`` keeps its name; any other exception is named by its class,
    as Lambda names a Python function's unhandled exception.
    """
    if isinstance(exc, StatesError) and exc.error:
        return exc.error
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    return getattr(exc, "error_type", None) or type(exc).__name__
