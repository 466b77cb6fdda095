"""Buffered journal writes: what a crash loses is recomputed, nothing else.

A "crash" here is a service whose SQLite journal is abandoned without a
flush: a new journal on the same file sees only what was committed, as after
``kill -9`` (the subprocess version is in ``test_hosting``).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fnplane.workflows import FakeClock, WorkflowService
from fnplane.workflows.sqlite_journal import (
    FILE_NAME,
    MAX_BUFFERED_EVENTS,
    JournalDataError,
    SqliteJournal,
)

from .conftest import FunctionInvoker

PASSES_THEN_TASK = {
    "StartAt": "First",
    "States": {
        "First": {"Type": "Task", "Resource": "first", "Next": "Tag"},
        "Tag": {
            "Type": "Pass",
            "Parameters": {"first.$": "$.first", "tag.$": "States.UUID()"},
            "Next": "Count",
        },
        "Count": {"Type": "Pass", "Result": 3, "ResultPath": "$.count", "Next": "Pick"},
        "Pick": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.count", "NumericEquals": 3, "Next": "Second"}],
            "Default": "Wrong",
        },
        "Wrong": {"Type": "Fail", "Error": "WrongBranch"},
        "Second": {"Type": "Task", "Resource": "second", "Next": "Third"},
        "Third": {"Type": "Task", "Resource": "third", "End": True},
    },
}


def _functions(gate: asyncio.Event | None) -> FunctionInvoker:
    async def second(event: Any) -> Any:
        if gate is not None:
            await gate.wait()
        return {**event, "second": True}

    return FunctionInvoker(
        {
            "first": lambda e: {"first": True},
            "second": second,
            "third": lambda e: {**e, "third": True},
        }
    )


def assert_complete_history(events: list[dict[str, Any]]) -> None:
    """Ids 1..n with no gap or duplicate, each pointing back at an earlier one."""
    ids = [event["id"] for event in events]
    assert ids == list(range(1, len(events) + 1))
    assert all(0 <= e["previousEventId"] < e["id"] for e in events)
    types = [event["type"] for event in events]
    assert types.count("ExecutionStarted") == 1
    assert types[0] == "ExecutionStarted"


async def _crash_during_second(tmp_path: Path) -> tuple[str, FunctionInvoker]:
    # Run until the second Task is in flight, then drop the service without
    # flushing: only what was committed survives.
    gate = asyncio.Event()
    before = _functions(gate)
    service = WorkflowService(
        before, journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    machine = service.create_state_machine("passes", PASSES_THEN_TASK)
    record = await service.start_execution(machine.arn, {"id": 1})
    for _ in range(200):
        if [name for name, _ in before.calls] == ["first", "second"]:
            break
        await asyncio.sleep(0.01)
    await service.close()
    return record.arn, before


async def test_crash_after_buffered_passes_resumes_with_their_output(
    tmp_path: Path,
) -> None:
    """The Pass states before a Task were durable before it was called: the
    re-run of the interrupted Task gets the same input (same States.UUID),
    the completed Task is not run again, the output is right."""
    arn, before = await _crash_during_second(tmp_path)
    assert [name for name, _ in before.calls] == ["first", "second"]

    after = _functions(None)
    restarted = WorkflowService(
        after, journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    assert [r.arn for r in await restarted.resume()] == [arn]
    done = await restarted.wait(arn, timeout_s=5)

    assert done.status == "SUCCEEDED", done.cause
    assert [name for name, _ in after.calls] == ["second", "third"]
    assert after.calls[0][1] == before.calls[1][1], "the Task's input changed"
    tag = before.calls[1][1]["tag"]
    assert done.output == {
        "first": True,
        "tag": tag,
        "count": 3,
        "second": True,
        "third": True,
    }


async def test_resumed_history_has_no_gap_or_duplicate(tmp_path: Path) -> None:
    """The history of a resumed execution is complete and ordered."""
    arn, _ = await _crash_during_second(tmp_path)
    restarted = WorkflowService(
        _functions(None), journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    await restarted.resume()
    await restarted.wait(arn, timeout_s=5)

    events = restarted.history(arn)
    assert_complete_history(events)
    assert events == SqliteJournal(tmp_path).events(arn)
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "Entered" in e["type"]
    ]
    assert entered == ["First", "Tag", "Count", "Pick", "Second", "Third"]
    types = [e["type"] for e in events]
    assert types.count("LambdaFunctionScheduled") == 3
    assert types.count("LambdaFunctionSucceeded") == 3


async def test_crash_before_anything_committed_starts_over(tmp_path: Path) -> None:
    """An execution whose first events never committed gets ExecutionStarted
    as event 1 when it resumes, not a history starting at event 2."""
    service = WorkflowService(
        _functions(None), journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    machine = service.create_state_machine("passes", PASSES_THEN_TASK)
    record = await service.start_execution(machine.arn, {"id": 1})
    await service.close()  # before the execution's first step ran

    restarted = WorkflowService(
        _functions(None), journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    await restarted.resume()
    done = await restarted.wait(record.arn, timeout_s=5)

    assert done.status == "SUCCEEDED"
    assert_complete_history(restarted.history(record.arn))


async def test_reading_history_makes_it_durable(tmp_path: Path) -> None:
    """Events the API has shown survive a crash unchanged."""
    gate = asyncio.Event()
    service = WorkflowService(
        _functions(gate), journal=SqliteJournal(tmp_path), clock=FakeClock()
    )
    machine = service.create_state_machine("passes", PASSES_THEN_TASK)
    record = await service.start_execution(machine.arn, {"id": 1})
    for _ in range(200):
        if len(service.history(record.arn)) >= 12:
            break
        await asyncio.sleep(0.01)
    shown = service.history(record.arn)

    assert SqliteJournal(tmp_path).events(record.arn) == shown
    await service.close()


def test_a_long_run_of_buffered_steps_commits_on_its_own(tmp_path: Path) -> None:
    """Past MAX_BUFFERED_EVENTS, a checkpoint commits without a durable point."""
    journal = SqliteJournal(tmp_path)
    for event_id in range(1, MAX_BUFFERED_EVENTS + 1):
        journal.append_event("arn", {"id": event_id, "previousEventId": event_id - 1})
    journal.checkpoint("arn", {"state": "S", "last_event_id": MAX_BUFFERED_EVENTS})

    reader = SqliteJournal(tmp_path)
    assert len(reader.events("arn")) == MAX_BUFFERED_EVENTS
    assert reader.last_checkpoint("arn") == {
        "state": "S",
        "last_event_id": MAX_BUFFERED_EVENTS,
    }


def test_an_event_batch_that_refers_to_code_is_refused(tmp_path: Path) -> None:
    """Stored event batches load as plain data only, never as objects."""
    SqliteJournal(tmp_path)
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute(
            "INSERT INTO event_batches VALUES (?, ?, ?)",
            ("arn", 1, pickle.dumps([{"id": 1, "path": Path("x")}])),
        )

    with pytest.raises(JournalDataError, match="pathlib"):
        SqliteJournal(tmp_path).events("arn")


def test_one_executions_commit_leaves_the_others_buffer_alone(tmp_path: Path) -> None:
    """A commit carries its own execution's buffer only: another execution's
    value that cannot be encoded does not fail it, nor is it written."""
    journal = SqliteJournal(tmp_path)
    journal.append_event("broken", {"id": 1, "previousEventId": 0})
    journal.checkpoint("broken", {"state": "S", "data": object()})
    journal.append_event("fine", {"id": 1, "previousEventId": 0})

    journal.record_step("fine", "/Task#1/task0", {"result": 1})

    reader = SqliteJournal(tmp_path)
    assert reader.steps("fine") == {"/Task#1/task0": {"result": 1}}
    assert reader.events("fine") == [{"id": 1, "previousEventId": 0}]
    assert reader.events("broken") == []
    with pytest.raises(TypeError):
        journal.flush("broken")


def test_a_journal_with_one_row_per_event_is_migrated(tmp_path: Path) -> None:
    """A journal written before event batches keeps its histories."""
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute(
            "CREATE TABLE events (arn TEXT NOT NULL, id INTEGER NOT NULL,"
            " event TEXT NOT NULL, PRIMARY KEY (arn, id))"
        )
        for arn, event_id in (("a", 2), ("b", 1), ("a", 1)):
            event = {"id": event_id, "type": f"T{event_id}"}
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?)",
                (arn, event_id, json.dumps(event)),
            )
    db.close()

    journal = SqliteJournal(tmp_path)

    assert journal.events("a") == [{"id": 1, "type": "T1"}, {"id": 2, "type": "T2"}]
    assert journal.events("b") == [{"id": 1, "type": "T1"}]
    assert SqliteJournal(tmp_path).events("a") == journal.events("a")
