"""Map and Parallel run branches concurrently, within bounds, and stop together."""

from __future__ import annotations

import asyncio
from typing import Any

from fnplane.workflows import FakeClock, WorkflowService


class Tracker:
    """An invoker that records how many calls run at once."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.peak = 0
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def __call__(self, name: str, payload: Any, timeout_s: float | None) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if name == "fail_fast":
                await asyncio.sleep(0.01)
                raise RuntimeError("branch failed")
            await asyncio.sleep(self.delay_s if name != "slow" else 5)
            self.finished.append(name)
            return payload
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        finally:
            self.running -= 1


async def run(tracker: Tracker, definition: dict[str, Any], data: Any) -> Any:
    service = WorkflowService(tracker)
    machine = service.create_state_machine("m", definition)
    return await service.start_sync_execution(machine.arn, data)


async def test_map_respects_max_concurrency_and_keeps_item_order() -> None:
    tracker = Tracker()
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 3,
                "ItemProcessor": {
                    "StartAt": "Work",
                    "States": {
                        "Work": {"Type": "Task", "Resource": "work", "End": True}
                    },
                },
                "End": True,
            }
        },
    }
    record = await run(tracker, definition, {"items": list(range(12))})
    assert record.status == "SUCCEEDED"
    assert record.output == list(range(12))
    assert tracker.peak == 3


async def test_parallel_failure_cancels_the_other_branches() -> None:
    tracker = Tracker()
    definition = {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "A", "States": {
                        "A": {"Type": "Task", "Resource": "slow", "End": True}}},
                    {"StartAt": "B", "States": {
                        "B": {"Type": "Task", "Resource": "fail_fast", "End": True}}},
                ],
                "End": True,
            }
        },
    }  # fmt: skip
    started = asyncio.get_running_loop().time()
    record = await run(tracker, definition, {})
    assert (record.status, record.error) == ("FAILED", "RuntimeError")
    assert tracker.cancelled == ["slow"]
    assert asyncio.get_running_loop().time() - started < 2


async def test_machine_timeout_ends_the_execution_timed_out() -> None:
    service = WorkflowService(Tracker(), clock=FakeClock())
    definition = {
        "StartAt": "Nap",
        "TimeoutSeconds": 60,
        "States": {"Nap": {"Type": "Wait", "Seconds": 120, "End": True}},
    }
    machine = service.create_state_machine("timed", definition)
    record = await service.start_sync_execution(machine.arn, {})
    assert (record.status, record.error) == ("TIMED_OUT", "States.Timeout")
