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
- ``test_state(definition, input, ...)``: run one state on its own, as the
  TestState API does (mocked results with ``StateMock``, retry counts and Map
  failures with ``StateConfiguration``).
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
    InvalidRequestError,
    StateMachineNotFoundError,
    StatesError,
    TaskFailed,
    WorkflowError,
)
from fnplane.workflows.journal import Journal, MemoryJournal
from fnplane.workflows.probe import StateConfiguration, StateMock
from fnplane.workflows.records import ExecutionRecord, StateMachineRecord
from fnplane.workflows.runner import Invoker
from fnplane.workflows.service import WorkflowService
from fnplane.workflows.teststate import test_state

__all__ = [
    "EXPRESS",
    "STANDARD",
    "Clock",
    "DefinitionError",
    "ExecutionAlreadyExistsError",
    "ExecutionNotFoundError",
    "ExecutionRecord",
    "FakeClock",
    "InvalidRequestError",
    "Invoker",
    "Journal",
    "MemoryJournal",
    "StateConfiguration",
    "StateMachine",
    "StateMachineNotFoundError",
    "StateMachineRecord",
    "StateMock",
    "StatesError",
    "SystemClock",
    "TaskFailed",
    "WorkflowError",
    "WorkflowService",
    "parse_definition",
    "test_state",
]
