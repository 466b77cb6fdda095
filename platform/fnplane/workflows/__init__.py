"""The Amazon States Language interpreter: fnplane's workflows.

Entry points:

- ``WorkflowService(invoker, journal=..., clock=...)``: register state
  machines, start, wait for, describe, stop and resume executions.
- ``parse_definition(definition, function_exists)``: validate ASL alone.
- ``SqliteJournal(state_dir)`` / ``MemoryJournal()``: durable storage of
  Standard executions.
- ``StepFunctionsApi(service)``: the Step Functions JSON 1.0 actions, for an
  HTTP server to mount.
- ``TaskFailed(error, cause)``: what an invoker raises for a failed function.
"""

from __future__ import annotations

from fnplane.workflows.clock import Clock, FakeClock, SystemClock
from fnplane.workflows.definition import (
    EXPRESS,
    STANDARD,
    StateMachine,
    parse_definition,
)
from fnplane.workflows.errors import (
    DefinitionError,
    ExecutionAlreadyExistsError,
    ExecutionNotFoundError,
    StateMachineNotFoundError,
    StatesError,
    TaskFailed,
    WorkflowError,
)
from fnplane.workflows.journal import Journal, MemoryJournal
from fnplane.workflows.records import ExecutionRecord, StateMachineRecord
from fnplane.workflows.runner import Invoker
from fnplane.workflows.service import WorkflowService

__all__ = [
    "EXPRESS",
    "STANDARD",
    "Clock",
    "DefinitionError",
    "ExecutionAlreadyExistsError",
    "ExecutionNotFoundError",
    "ExecutionRecord",
    "FakeClock",
    "Invoker",
    "Journal",
    "MemoryJournal",
    "StateMachine",
    "StateMachineNotFoundError",
    "StateMachineRecord",
    "StatesError",
    "SystemClock",
    "TaskFailed",
    "WorkflowError",
    "WorkflowService",
    "parse_definition",
]
