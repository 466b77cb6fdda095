"""Driving one execution from start (or a checkpoint) to its final status.

``drive`` wires a ``Runner`` to the execution's history and journal, runs
the machine, and settles the record: SUCCEEDED with the output, FAILED with
error and cause, TIMED_OUT, or ABORTED when stopped. A cancellation that is
not a stop (the service shutting down) leaves the execution RUNNING in the
journal so ``resume`` can continue it.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fnplane.workflows.clock import Clock
from fnplane.workflows.dataflow import compact_json
from fnplane.workflows.definition import STANDARD
from fnplane.workflows.errors import TIMEOUT, StatesError
from fnplane.workflows.history import Cursor, History
from fnplane.workflows.journal import Journal
from fnplane.workflows.records import (
    ABORTED,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionRecord,
    StateMachineRecord,
)
from fnplane.workflows.runner import (
    ExecutionInfo,
    ExecutionTimedOut,
    Frame,
    Invoker,
    Runner,
)
from fnplane.workflows.variables import Variables


class JournalSteps:
    """Adapts a ``Journal`` to the runner's per-execution ``StepJournal``."""

    def __init__(self, journal: Journal, arn: str, recorded: dict[str, Any]) -> None:
        self._journal = journal
        self._arn = arn
        self._recorded = recorded

    def recorded(self, key: str) -> dict[str, Any] | None:
        """Return the outcome recorded under ``key`` before a restart."""
        return self._recorded.get(key)

    def record(self, key: str, value: dict[str, Any]) -> None:
        """Durably record a step outcome."""
        self._recorded[key] = value
        self._journal.record_step(self._arn, key, value)

    def checkpoint(self, position: dict[str, Any]) -> None:
        """Record the top-level position (buffered until the next flush)."""
        self._journal.checkpoint(self._arn, position)

    def flush(self) -> None:
        """Make the buffered position and events durable."""
        self._journal.flush(self._arn)


async def drive(
    record: ExecutionRecord,
    machine: StateMachineRecord,
    invoker: Invoker,
    clock: Clock,
    journal: Journal | None,
    timeout_s: float | None,
    checkpoint: dict[str, Any] | None,
    stopping: dict[str, tuple[str | None, str | None]],
    keep_history: bool = True,
) -> None:
    """Run an execution to its end and settle its record.

    ``checkpoint`` is None for a new execution, else the journal's last
    top-level position (``{}`` when the crash came before the first one).
    """
    arn = record.arn
    steps = None
    last_id = 0
    if journal is not None:
        recorded = journal.steps(arn) if checkpoint is not None else {}
        steps = JournalSteps(journal, arn, recorded)
        if checkpoint is not None:
            # No durable checkpoint means no durable event either (the first
            # one commits with ExecutionStarted): the execution starts over.
            last_id = checkpoint.get("last_event_id", 0)
            journal.drop_events_after(arn, last_id)
    sink = partial(journal.append_event, arn) if journal is not None else None
    history = History(clock, sink, keep=keep_history, start_id=last_id)
    if journal is not None and checkpoint is not None and keep_history:
        history.events.extend(journal.events(arn))
    record.events = history.events
    info = ExecutionInfo(
        arn,
        record.name,
        machine.arn,
        machine.name,
        record.input,
        record.start_time,
        machine.role_arn,
        redrivable=machine.type == STANDARD,
    )
    deadline = None if timeout_s is None else record.start_time + timeout_s
    runner = Runner(machine.machine, info, invoker, clock, history, steps, deadline)
    frame = _top_frame(checkpoint, last_id)
    if last_id == 0:
        _start(record, machine, history, frame, steps)
    position = checkpoint or {}
    data = position.get("data", record.input)
    await _settle(
        record, runner, frame, data, position.get("state", ""), journal, stopping
    )


def _top_frame(checkpoint: dict[str, Any] | None, last_id: int) -> Frame:
    position = checkpoint or {}
    return Frame(
        Variables(position.get("variables")),
        Cursor(last_id),
        steps=position.get("steps", 0),
        top_level=True,
    )


def _start(
    record: ExecutionRecord,
    machine: StateMachineRecord,
    history: History,
    frame: Frame,
    steps: JournalSteps | None,
) -> None:
    details = {
        "input": compact_json(record.input),
        "inputDetails": {"truncated": False},
        "roleArn": machine.role_arn,
        "stateMachineArn": machine.arn,
    }
    history.emit(frame.cursor, "ExecutionStarted", details)
    if steps is not None:
        # Buffered with ExecutionStarted: whatever commits that event commits
        # this position too, so a resume never finds one without the other.
        steps.checkpoint(
            {"state": "", "data": record.input, "variables": {}, "steps": 0,
             "last_event_id": history.last_id}
        )  # fmt: skip


async def _settle(
    record: ExecutionRecord,
    runner: Runner,
    frame: Frame,
    data: Any,
    start: str,
    journal: Journal | None,
    stopping: dict[str, tuple[str | None, str | None]],
) -> None:
    history, definition = runner.history, runner.machine.definition
    try:
        output = await runner.run_program(definition, data, frame, start)
    except StatesError as exc:
        details = {
            key: value
            for key, value in (("error", exc.error), ("cause", exc.cause))
            if value is not None
        }
        history.emit(frame.cursor, "ExecutionFailed", details)
        _finish(record, journal, runner, FAILED, error=exc.error, cause=exc.cause)
    except ExecutionTimedOut:
        history.emit(frame.cursor, "ExecutionTimedOut", {"error": TIMEOUT})
        _finish(record, journal, runner, TIMED_OUT, error=TIMEOUT)
    except asyncio.CancelledError:
        if record.arn not in stopping:
            raise
        error, cause = stopping.pop(record.arn)
        details = {
            key: value
            for key, value in (("error", error), ("cause", cause))
            if value is not None
        }
        history.emit(frame.cursor, "ExecutionAborted", details)
        _finish(record, journal, runner, ABORTED, error=error, cause=cause)
    else:
        history.emit(
            frame.cursor,
            "ExecutionSucceeded",
            {"output": compact_json(output), "outputDetails": {"truncated": False}},
        )
        _finish(record, journal, runner, SUCCEEDED, output=output)


def _finish(
    record: ExecutionRecord,
    journal: Journal | None,
    runner: Runner,
    status: str,
    **fields: Any,
) -> None:
    changes = {"status": status, "stop_time": runner.clock.now(), **fields}
    for key, value in changes.items():
        setattr(record, key, value)
    if journal is not None:
        journal.update_execution(record.arn, changes)
