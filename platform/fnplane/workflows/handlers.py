"""The handler of each state type, by its ``Type`` name."""

from __future__ import annotations

from fnplane.workflows.branches import run_map, run_parallel
from fnplane.workflows.runner import StateHandler
from fnplane.workflows.states import (
    run_choice,
    run_fail,
    run_pass,
    run_succeed,
    run_wait,
)
from fnplane.workflows.tasks import run_task

HANDLERS: dict[str, StateHandler] = {
    "Pass": run_pass,
    "Task": run_task,
    "Choice": run_choice,
    "Wait": run_wait,
    "Succeed": run_succeed,
    "Fail": run_fail,
    "Parallel": run_parallel,
    "Map": run_map,
}
