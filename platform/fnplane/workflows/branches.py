"""Parallel and Map: states that run nested programs.

Every branch and iteration runs on its own frame: a child variable scope
(assignments stay inside) and its own event thread. The first failure that is
not tolerated cancels the siblings still running and fails the state, which
the state's own Retry and Catch then handle.

A DISTRIBUTED Map runs its items the same way, in this process; its history
shows the Map Run (``MapRunStarted``/``MapRunSucceeded``) instead of the
iterations, as AWS records child executions apart from the parent's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fnplane.workflows import dataflow, query
from fnplane.workflows.dataflow import Scope
from fnplane.workflows.errors import (
    EXCEEDED_TOLERATED_FAILURE,
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    StatesError,
)
from fnplane.workflows.runner import IterationAborted, StateRun
from fnplane.workflows.stateio import (
    after_input_path,
    effective_input,
    field_value,
    finish,
    states_binding,
)
from fnplane.workflows.tasks import guarded


async def run_parallel(run: StateRun) -> tuple[str | None, Any]:
    """Parallel: run every branch on the same input; output their outputs."""
    return await guarded(run, _parallel_attempt)


async def _parallel_attempt(run: StateRun) -> Any:
    data = effective_input(run)
    run.emit("ParallelStateStarted")
    branches = run.state["Branches"]

    def branch(index: int) -> Awaitable[Any]:
        frame = run.frame.fork(f"{run.key}/branch{index}")
        return run.runner.run_program(branches[index], data, frame)

    if run.probe is not None and run.probe.mock is not None:
        results = run.probe.mock.outcome()
    else:
        results = await _all_or_nothing([branch(i) for i in range(len(branches))])
    return finish(run, results, apply_output_path=False)


async def _all_or_nothing(calls: list[Awaitable[Any]]) -> list[Any]:
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def run_map(run: StateRun) -> tuple[str | None, Any]:
    """Map: run the item processor on every item of the input array."""
    return await guarded(run, _map_attempt)


async def _map_attempt(run: StateRun) -> Any:
    data = after_input_path(run)
    items = _items(run, data)
    concurrency = _integer(run, "MaxConcurrency", data) or 0
    run.inspect("maxConcurrency", concurrency)
    run.emit("MapStateStarted", {"length": len(items)})
    limits = _Limits.of(run, data, len(items), concurrency)
    if run.probe is not None and run.probe.mock is not None:
        results = run.probe.map_outcome(limits.tolerated)
    else:
        results = await _iterate(run, data, items, limits)
    run.emit("MapStateSucceeded")
    return finish(run, results, apply_output_path=False)


async def _iterate(
    run: StateRun, data: Any, items: list[Any], limits: _Limits
) -> list[Any]:
    processor = run.state.get("ItemProcessor") or run.state["Iterator"]
    config = processor.get("ProcessorConfig") or {}
    distributed = config.get("Mode") == "DISTRIBUTED"
    if distributed:
        run.emit("MapRunStarted", {"mapRunArn": f"{run.runner.info.arn}/{run.name}"})
    mapper = _Iterations(run, processor, data, items, limits, distributed)
    try:
        results = await mapper.run_all()
    except StatesError as exc:
        if distributed:
            run.emit("MapRunFailed", {"error": exc.error, "cause": exc.cause})
        raise
    if distributed:
        run.emit("MapRunSucceeded")
    return results


def _items(run: StateRun, data: Any) -> list[Any]:
    state = run.state
    if run.probe is not None and run.probe.reader_items is not None:
        # TestState reads no ItemReader: the request supplies what it would read.
        items = run.probe.reader_items
    elif run.jsonata:
        items = data
        if "Items" in state:
            items = query.render(
                state["Items"], states_binding(run), run.frame.variables, "Items"
            )
            if not isinstance(items, list):
                text = query.expression_text(str(state["Items"]))
                raise StatesError(
                    QUERY_EVALUATION_ERROR,
                    f"The JSONata expression '{text}' specified for the field"
                    " 'Items' returned an unexpected result type. Expected"
                    f" 'array', but was '{_json_type(items)}' for value:"
                    f" {dataflow.compact_json(items)}",
                )
    else:
        path = state.get("ItemsPath", "$")
        items = dataflow.select(path, data, _scope(run))
        if not isinstance(items, list):
            # AWS names the path from its document's root: "$$.x" shows "$.x".
            shown = path[1:] if path.startswith("$$") else path
            raise StatesError(RUNTIME, f'Reference path "{shown}" must point to array.')
        run.inspect("afterItemsPath", items)
    if not isinstance(items, list):
        raise StatesError(
            QUERY_EVALUATION_ERROR if run.jsonata else RUNTIME,
            f"Map state input must be an array but was: {dataflow.compact_json(items)}",
        )
    return items


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _scope(run: StateRun, item: dict[str, Any] | None = None) -> Scope:
    def context() -> dict[str, Any]:
        built = run.context()
        if item is not None:
            built["Map"] = {"Item": item}
        return built

    return Scope(context, run.frame.variables)


class _Limits:
    """MaxConcurrency and the tolerated failures of one Map visit."""

    def __init__(self, concurrency: int, tolerated: float) -> None:
        self.concurrency = concurrency
        self.tolerated = tolerated

    @classmethod
    def of(cls, run: StateRun, data: Any, total: int, concurrency: int) -> _Limits:
        count = _integer(run, "ToleratedFailureCount", data)
        percentage = _percentage(run, data)
        if count is not None:
            run.inspect("toleratedFailureCount", count)
        if percentage is not None:
            run.inspect("toleratedFailurePercentage", percentage)
        tolerated = math.inf if count is None and percentage is None else 0.0
        if count is not None:
            if count < 0:
                raise StatesError(RUNTIME, "ToleratedFailureCount cannot be negative.")
            tolerated = float(count)
        if percentage is not None:
            tolerated = max(
                tolerated if count is not None else 0.0, total * percentage / 100
            )
        has_limit = count is not None or percentage is not None
        return cls(concurrency, tolerated if has_limit else -1.0)


def _integer(run: StateRun, field: str, data: Any) -> int | None:
    value = field_value(run, field, data)
    if value is None:
        return None
    if isinstance(value, str):
        # AWS reads numeric strings here ("1" is a valid MaxConcurrency).
        value = _number_from(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise StatesError(
            RUNTIME,
            f'The {field}Path field refers to value "{_shown(value)}" which is'
            " not a valid integer:"
            f" {run.state.get(field + 'Path', field)}",
        )
    return int(value)


def _percentage(run: StateRun, data: Any) -> float | None:
    field = "ToleratedFailurePercentage"
    value = field_value(run, field, data)
    if value is None:
        return None
    if isinstance(value, str):
        value = _number_from(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StatesError(
            RUNTIME,
            f'The {field}Path field refers to value "{_shown(value)}" which is not a'
            f" valid float: {run.state.get(field + 'Path', field)}",
        )
    if not 0 <= value <= 100:
        raise StatesError(RUNTIME, f"{field} must be between 0 and 100.")
    return float(value)


def _number_from(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else dataflow.compact_json(value)


class _Iterations:
    """Runs the item processor over the items, within the Map's limits."""

    def __init__(
        self,
        run: StateRun,
        processor: dict[str, Any],
        data: Any,
        items: list[Any],
        limits: _Limits,
        distributed: bool,
    ) -> None:
        self.run = run
        self.processor = processor
        self.data = data
        self.items = items
        self.limits = limits
        self.distributed = distributed
        self.failures = 0
        self.frame = run.frame.halted()
        self.selector = run.state.get("ItemSelector", run.state.get("Parameters"))

    async def run_all(self) -> list[Any]:
        """Run every item; return the outputs in item order."""
        if self.limits.concurrency == 1 or len(self.items) <= 1:
            return [await self.iterate(index) for index in range(len(self.items))]
        iterate: Callable[[int], Awaitable[Any]] = self.iterate
        if self.limits.concurrency > 1:
            gate = asyncio.Semaphore(self.limits.concurrency)

            async def gated(index: int) -> Any:
                async with gate:
                    return await self.iterate(index)

            iterate = gated
        try:
            return await _all_or_nothing([iterate(i) for i in range(len(self.items))])
        except StatesError:
            halt = self.frame.halt
            assert halt is not None
            for frame in halt.failed_tasks if halt.is_set else []:
                self.run.runner.emit(frame, "TaskStateAborted")
            raise

    def item_input(self, index: int) -> Any:
        """Build one iteration's input from ItemSelector (or the item itself)."""
        run, item = self.run, {"Index": index, "Value": self.items[index]}
        if self.selector is None:
            return self.items[index]
        if run.jsonata:
            binding = states_binding(run)
            binding["context"]["Map"] = {"Item": item}
            return query.render(
                self.selector, binding, run.frame.variables, "ItemSelector"
            )
        return dataflow.render(self.selector, self.data, _scope(run, item))

    async def iterate(self, index: int) -> Any:
        """Run one item through the processor, recording its events."""
        run = self.run
        frame = self.frame.fork(f"{run.key}/item{index}", quiet=self.distributed)
        details = {"index": index, "name": run.name}
        run.runner.emit(frame, "MapIterationStarted", details)
        try:
            item_input = self.item_input(index)
            output = await run.runner.run_program(self.processor, item_input, frame)
        except (asyncio.CancelledError, IterationAborted):
            run.runner.emit(frame, "MapIterationAborted", details)
            raise
        except StatesError as exc:
            run.runner.emit(frame, "MapIterationFailed", details)
            return self.tolerate(exc)
        run.runner.emit(frame, "MapIterationSucceeded", details)
        return output

    def tolerate(self, exc: StatesError) -> Any:
        """Count a failed item; re-raise once failures pass the tolerance."""
        self.failures += 1
        if self.limits.tolerated < 0:
            self.frame.halt.is_set = True  # type: ignore[union-attr]
            raise exc
        if self.failures > self.limits.tolerated:
            self.frame.halt.is_set = True  # type: ignore[union-attr]
            raise StatesError(
                EXCEEDED_TOLERATED_FAILURE,
                "The specified tolerated failure threshold was exceeded",
            ) from exc
        return {"Error": exc.error, "Cause": exc.cause}
