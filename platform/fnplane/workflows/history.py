"""Execution history: the event list ``GetExecutionHistory`` returns.

Events are numbered from 1 in the order they happen. ``previousEventId``
points at the event before it *on the same thread*: a Map iteration or
Parallel branch continues from the event that started it, as AWS records it.
Every event goes through the ``sink`` before ``emit`` returns: a Standard
execution's journal, which keeps it until its next commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fnplane.workflows.clock import Clock

# Where each event type keeps its details, as botocore's HistoryEvent names them.
_DETAIL_KEYS = {
    "ExecutionStarted": "executionStartedEventDetails",
    "ExecutionSucceeded": "executionSucceededEventDetails",
    "ExecutionFailed": "executionFailedEventDetails",
    "ExecutionAborted": "executionAbortedEventDetails",
    "ExecutionTimedOut": "executionTimedOutEventDetails",
    "TaskScheduled": "taskScheduledEventDetails",
    "TaskStarted": "taskStartedEventDetails",
    "TaskSucceeded": "taskSucceededEventDetails",
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
    "LambdaFunctionScheduled": "lambdaFunctionScheduledEventDetails",
    "LambdaFunctionSucceeded": "lambdaFunctionSucceededEventDetails",
    "LambdaFunctionFailed": "lambdaFunctionFailedEventDetails",
    "LambdaFunctionTimedOut": "lambdaFunctionTimedOutEventDetails",
    "MapStateStarted": "mapStateStartedEventDetails",
    "MapIterationStarted": "mapIterationStartedEventDetails",
    "MapIterationSucceeded": "mapIterationSucceededEventDetails",
    "MapIterationFailed": "mapIterationFailedEventDetails",
    "MapIterationAborted": "mapIterationAbortedEventDetails",
    "MapRunStarted": "mapRunStartedEventDetails",
    "MapRunFailed": "mapRunFailedEventDetails",
    "EvaluationFailed": "evaluationFailedEventDetails",
}

EventSink = Callable[[dict[str, Any]], None]


def detail_key(event_type: str) -> str | None:
    """Return the details field of an event type (``...StateEntered`` too)."""
    try:
        return _KNOWN_KEYS[event_type]
    except KeyError:
        pass
    key = _DETAIL_KEYS.get(event_type)
    if event_type.endswith("StateEntered"):
        key = "stateEnteredEventDetails"
    elif event_type.endswith("StateExited"):
        key = "stateExitedEventDetails"
    _KNOWN_KEYS[event_type] = key
    return key


# detail_key's answers so far: a handful of event types, asked twice a state.
_KNOWN_KEYS: dict[str, str | None] = {}


@dataclass(slots=True)
class Cursor:
    """The last event id on one thread (the execution, a branch, an iteration)."""

    last_id: int = 0

    def fork(self) -> Cursor:
        """Start a nested thread that continues from this one's last event."""
        return Cursor(self.last_id)


class History:
    """Records the events of one execution.

    Args:
        clock: gives each event its timestamp.
        sink: called with every event before ``emit`` returns (a journal).
        keep: keep the events in memory for ``events`` (an Express execution
            run for speed may skip this).
        start_id: the id of the last event already recorded (after a resume).
    """

    def __init__(
        self,
        clock: Clock,
        sink: EventSink | None = None,
        keep: bool = True,
        start_id: int = 0,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._keep = keep
        self.events: list[dict[str, Any]] = []
        self.last_id = start_id

    @property
    def recording(self) -> bool:
        """Whether events are kept or journaled (else details need not be built)."""
        return self._keep or self._sink is not None

    def emit(
        self, cursor: Cursor, event_type: str, details: dict[str, Any] | None = None
    ) -> int:
        """Record an event after the cursor's last one; return its id."""
        if not self._keep and self._sink is None:
            self.last_id += 1
            cursor.last_id = self.last_id
            return self.last_id
        self.last_id += 1
        event: dict[str, Any] = {
            "timestamp": self._clock.now(),
            "type": event_type,
            "id": self.last_id,
            "previousEventId": cursor.last_id,
        }
        key = detail_key(event_type)
        if key is not None and details is not None:
            event[key] = details
        cursor.last_id = self.last_id
        if self._sink is not None:
            self._sink(event)
        if self._keep:
            self.events.append(event)
        return self.last_id


def payload_details(field: str, value: Any) -> dict[str, Any]:
    """Details carrying a JSON payload as text, as the API returns it."""
    return {
        field: json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        f"{field}Details": {"truncated": False},
    }
