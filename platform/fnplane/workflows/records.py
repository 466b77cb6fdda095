"""Records of state machines and executions, as the service keeps them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fnplane.workflows.definition import StateMachine

RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
ABORTED = "ABORTED"
FINISHED = frozenset({SUCCEEDED, FAILED, TIMED_OUT, ABORTED})


@dataclass
class StateMachineRecord:
    """A registered state machine."""

    arn: str
    name: str
    type: str
    definition: str
    role_arn: str
    created_at: float
    machine: StateMachine = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the journal form (without the parsed machine)."""
        return {
            "arn": self.arn,
            "name": self.name,
            "type": self.type,
            "definition": self.definition,
            "role_arn": self.role_arn,
            "created_at": self.created_at,
        }


@dataclass
class ExecutionRecord:
    """One execution: identity, status and outcome.

    ``output`` is set when the status is ``SUCCEEDED``; ``error`` and
    ``cause`` when it is ``FAILED``, ``TIMED_OUT`` or ``ABORTED``.
    """

    arn: str
    name: str
    state_machine_arn: str
    type: str
    input: Any
    start_time: float
    status: str = RUNNING
    output: Any = None
    error: str | None = None
    cause: str | None = None
    stop_time: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the journal form (without the events)."""
        record = asdict(self)
        record.pop("events")
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ExecutionRecord:
        """Rebuild a record from its journal form."""
        return cls(**{key: value for key, value in record.items() if key != "events"})
