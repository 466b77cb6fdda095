"""Standard executions survive a restart: SQLite journal and resume."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fnplane.workflows import FakeClock, WorkflowService
from fnplane.workflows.sqlite_journal import SqliteJournal

from .conftest import FunctionInvoker

DEFINITION = {
    "StartAt": "First",
    "States": {
        "First": {"Type": "Task", "Resource": "first", "Next": "Pause"},
        "Pause": {"Type": "Wait", "Seconds": 60, "Next": "Second"},
        "Second": {"Type": "Task", "Resource": "second", "End": True},
    },
}


class GatedClock(FakeClock):
    """A fake clock whose sleeps block until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        """Block on the gate, then jump forward like a FakeClock."""
        self.sleeping.set()
        await self.gate.wait()
        await super().sleep(seconds)


def _invoker() -> FunctionInvoker:
    return FunctionInvoker(
        {"first": lambda e: {**e, "first": True}, "second": lambda e: {**e, "n": 2}}
    )


async def test_resume_after_restart_skips_completed_tasks(tmp_path: Path) -> None:
    """A restarted service resumes at the Wait; the first Task is not re-run."""
    clock = GatedClock()
    before = _invoker()
    service = WorkflowService(before, journal=SqliteJournal(tmp_path), clock=clock)
    machine = service.create_state_machine("two-steps", DEFINITION)
    record = await service.start_execution(machine.arn, {"id": 7})
    await asyncio.wait_for(clock.sleeping.wait(), 5)
    deadline = clock.now() + 60
    await service.close()

    after = _invoker()
    restarted_clock = FakeClock(clock.now() + 10)
    restarted = WorkflowService(
        after, journal=SqliteJournal(tmp_path), clock=restarted_clock
    )
    resumed = await restarted.resume()
    done = await restarted.wait(record.arn, timeout_s=5)

    assert [r.arn for r in resumed] == [record.arn]
    assert done.status == "SUCCEEDED"
    assert done.output == {"id": 7, "first": True, "n": 2}
    assert [name for name, _ in before.calls] == ["first"]
    assert [name for name, _ in after.calls] == ["second"]
    assert restarted_clock.slept_s == [deadline - (clock.now() + 10)]
    types = [event["type"] for event in restarted.history(record.arn)]
    assert types.count("ExecutionStarted") == 1
    assert types[-1] == "ExecutionSucceeded"


async def test_every_event_is_journaled_before_the_next_step(tmp_path: Path) -> None:
    """The journal holds the whole history and final status of an execution."""
    journal = SqliteJournal(tmp_path)
    service = WorkflowService(_invoker(), journal=journal, clock=FakeClock())
    machine = service.create_state_machine("two-steps", DEFINITION)

    record = await service.start_sync_execution(machine.arn, {"id": 1})

    stored = journal.events(record.arn)
    assert [e["id"] for e in stored] == list(range(1, len(stored) + 1))
    assert stored == service.history(record.arn)
    assert journal.executions("SUCCEEDED")[0]["output"] == record.output


async def test_stop_execution_aborts_it(tmp_path: Path) -> None:
    """StopExecution ends a running execution as ABORTED with the given error."""
    clock = GatedClock()
    service = WorkflowService(_invoker(), journal=SqliteJournal(tmp_path), clock=clock)
    machine = service.create_state_machine("two-steps", DEFINITION)
    record = await service.start_execution(machine.arn, {})
    await asyncio.wait_for(clock.sleeping.wait(), 5)

    stopped = await service.stop_execution(record.arn, "Manual", "operator")

    assert (stopped.status, stopped.error, stopped.cause) == (
        "ABORTED",
        "Manual",
        "operator",
    )
    types: list[Any] = [event["type"] for event in service.history(record.arn)]
    assert types[-2:] == ["WaitStateAborted", "ExecutionAborted"]
