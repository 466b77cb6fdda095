"""Journals: where Standard executions make every step durable.

A journal keeps state machines, executions (status, input, output, error),
their history events, the outcome of each completed step (task results, Wait
deadlines) and the last top-level checkpoint. A journal may buffer events and
checkpoints until the next durable write or ``flush`` (``sqlite_journal``
says which writes those are). ``WorkflowService.resume()``
reads them back after a restart. ``MemoryJournal`` is the test double;
``SqliteJournal`` is the embedded store (stdlib ``sqlite3``, WAL mode).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol


class Journal(Protocol):
    """What the workflow service needs from durable storage."""

    def save_state_machine(self, record: dict[str, Any]) -> None:
        """Insert or replace a state machine record (keyed by ``arn``)."""
        ...

    def state_machines(self) -> list[dict[str, Any]]:
        """Return every saved state machine record."""
        ...

    def create_execution(self, record: dict[str, Any]) -> None:
        """Save a new execution record (keyed by ``arn``)."""
        ...

    def update_execution(self, arn: str, fields: dict[str, Any]) -> None:
        """Change fields of an execution record (status, output, ...)."""
        ...

    def executions(self, status: str | None = None) -> list[dict[str, Any]]:
        """Return execution records, optionally only those with ``status``."""
        ...

    def append_event(self, arn: str, event: dict[str, Any]) -> None:
        """Durably append one history event of an execution."""
        ...

    def events(self, arn: str) -> list[dict[str, Any]]:
        """Return an execution's history events in id order."""
        ...

    def drop_events_after(self, arn: str, event_id: int) -> None:
        """Forget events after ``event_id`` (they are replayed on resume)."""
        ...

    def record_step(self, arn: str, key: str, value: dict[str, Any]) -> None:
        """Durably record a completed step's outcome under a replay key."""
        ...

    def steps(self, arn: str) -> dict[str, dict[str, Any]]:
        """Return every step outcome recorded for an execution."""
        ...

    def checkpoint(self, arn: str, position: dict[str, Any]) -> None:
        """Durably record the execution's top-level position."""
        ...

    def last_checkpoint(self, arn: str) -> dict[str, Any] | None:
        """Return the latest checkpoint, or None before the first transition."""
        ...

    def flush(self, arn: str) -> None:
        """Make an execution's buffered events and checkpoint durable now."""
        ...


class MemoryJournal:
    """A journal in memory: the same contract, nothing survives the process."""

    def __init__(self) -> None:
        self._machines: dict[str, dict[str, Any]] = {}
        self._executions: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._steps: dict[str, dict[str, dict[str, Any]]] = {}
        self._checkpoints: dict[str, dict[str, Any]] = {}

    def save_state_machine(self, record: dict[str, Any]) -> None:
        """Insert or replace a state machine record."""
        self._machines[record["arn"]] = copy.deepcopy(record)

    def state_machines(self) -> list[dict[str, Any]]:
        """Return every state machine record."""
        return [copy.deepcopy(record) for record in self._machines.values()]

    def create_execution(self, record: dict[str, Any]) -> None:
        """Save a new execution record."""
        self._executions[record["arn"]] = copy.deepcopy(record)
        self._events[record["arn"]] = []
        self._steps[record["arn"]] = {}

    def update_execution(self, arn: str, fields: dict[str, Any]) -> None:
        """Change fields of an execution record."""
        self._executions[arn].update(copy.deepcopy(fields))

    def executions(self, status: str | None = None) -> list[dict[str, Any]]:
        """Return execution records, optionally filtered by status."""
        return [
            copy.deepcopy(record)
            for record in self._executions.values()
            if status is None or record["status"] == status
        ]

    def append_event(self, arn: str, event: dict[str, Any]) -> None:
        """Append one history event."""
        self._events[arn].append(event)

    def events(self, arn: str) -> list[dict[str, Any]]:
        """Return the history events in id order."""
        return list(self._events.get(arn, []))

    def drop_events_after(self, arn: str, event_id: int) -> None:
        """Forget events after ``event_id``."""
        self._events[arn] = [e for e in self._events[arn] if e["id"] <= event_id]

    def record_step(self, arn: str, key: str, value: dict[str, Any]) -> None:
        """Record a completed step's outcome."""
        self._steps[arn][key] = value

    def steps(self, arn: str) -> dict[str, dict[str, Any]]:
        """Return the recorded step outcomes."""
        return dict(self._steps.get(arn, {}))

    def checkpoint(self, arn: str, position: dict[str, Any]) -> None:
        """Record the top-level position."""
        self._checkpoints[arn] = copy.deepcopy(position)

    def last_checkpoint(self, arn: str) -> dict[str, Any] | None:
        """Return the latest checkpoint."""
        found = self._checkpoints.get(arn)
        return copy.deepcopy(found) if found is not None else None

    def flush(self, arn: str) -> None:
        """Nothing is buffered in memory."""
