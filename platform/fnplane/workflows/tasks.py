"""The Task state, and the Retry/Catch loop Task, Map and Parallel share.

A Task invokes a function through the injected invoker. The journal is
flushed before the call (the steps that led to it are durable), and the
outcome is journaled under a replay-stable key before the state goes on, so a
Standard execution resumed after a crash replays a completed task instead of
running it again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fnplane.workflows import dataflow
from fnplane.workflows.errors import (
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    TIMEOUT,
    StatesError,
    error_name_of,
)
from fnplane.workflows.resources import (
    function_name_from,
    parse_resource,
    wrap_invoke_result,
)
from fnplane.workflows.retry import find_catcher, find_retrier
from fnplane.workflows.runner import StateRun
from fnplane.workflows.stateio import (
    catch_output,
    effective_input,
    field_value,
    finish,
    output_path,
)

Attempt = Callable[[StateRun], Awaitable[Any]]


async def run_task(run: StateRun) -> tuple[str | None, Any]:
    """Task: invoke the function, with the state's Retry and Catch."""
    return await guarded(run, _task_attempt)


async def guarded(run: StateRun, attempt: Attempt) -> tuple[str | None, Any]:
    """Run ``attempt`` under the state's retriers and catchers.

    ``attempt`` returns the output before ``OutputPath``, which is applied
    afterwards, outside the catchers: AWS fails the execution when it
    cannot be applied, whatever the Catch says.
    """
    retriers = run.state.get("Retry") or []
    counts = [0] * len(retriers)
    while True:
        try:
            output = await attempt(run)
            break
        except StatesError as exc:
            run.pending = None
            if await _retried(run, retriers, counts, exc):
                continue
            report_failure(run, exc)
            return _caught(run, exc)
    output = output_path(run, output)
    run.exit(output)
    return run.next(), output


async def _retried(
    run: StateRun, retriers: list[dict[str, Any]], counts: list[int], exc: StatesError
) -> bool:
    """Wait out the back-off of the retrier matching ``exc``, if it has attempts left.

    Under TestState nothing is retried: the probe reports the retrier instead.
    """
    found = find_retrier(retriers, exc.error or "")
    if found is None:
        return False
    index, policy = found
    if run.probe is not None:
        run.probe.retrier_matched(index, policy, exc)
        return False
    if counts[index] >= policy.max_attempts:
        return False
    delay_s = policy.delay_s(counts[index])
    counts[index] += 1
    run.retry_count += 1
    await run.runner.sleep_until(
        f"{run.key}/retry{run.retry_count}", run.runner.clock.now() + delay_s
    )
    return True


def _caught(run: StateRun, exc: StatesError) -> tuple[str | None, Any]:
    """Hand ``exc`` to the first matching catcher, or re-raise it."""
    catchers = run.state.get("Catch") or []
    catcher = find_catcher(catchers, exc.error or "")
    if catcher is None:
        raise exc
    if run.probe is not None:
        run.probe.caught(catchers.index(catcher), exc)
    # A caught error without a cause (a timeout, say) shows Cause "".
    cause = "" if exc.cause is None else exc.cause
    error_output = {"Error": exc.error, "Cause": cause}
    output = catch_output(run, catcher, error_output)
    run.exit(output)
    return catcher["Next"], output


def report_failure(run: StateRun, exc: StatesError) -> None:
    """Record the events of a state's final failure.

    A JSONata evaluation error gets its ``EvaluationFailed`` event; a Map or
    Parallel state that is not retried again gets ``MapStateFailed`` /
    ``ParallelStateFailed`` (AWS records none for a ``States.Runtime`` error).
    """
    report_evaluation(run, exc)
    kind = run.state["Type"]
    if kind in ("Map", "Parallel") and exc.error != RUNTIME:
        run.emit(f"{kind}StateFailed")


def report_evaluation(run: StateRun, exc: StatesError) -> None:
    """Record ``EvaluationFailed`` for a JSONata evaluation error, once."""
    if exc.error == QUERY_EVALUATION_ERROR and not getattr(exc, "reported", False):
        exc.reported = True  # type: ignore[attr-defined]
        run.emit("EvaluationFailed", _evaluation_details(run, exc))


def _evaluation_details(run: StateRun, exc: StatesError) -> dict[str, Any]:
    details: dict[str, Any] = {"error": exc.error, "state": run.name}
    if exc.cause is not None:
        details["cause"] = exc.cause
    return details


async def _task_attempt(run: StateRun) -> Any:
    resource = parse_resource(run.state["Resource"])
    payload = effective_input(run)
    timeout_s = _timeout_s(run)
    if run.probe is not None and run.probe.mock is not None:
        return finish(run, run.probe.mock.outcome(), apply_output_path=False)
    if resource.kind == "lambda_invoke":
        if not isinstance(payload, dict):
            raise StatesError(RUNTIME, "lambda:invoke needs an object of parameters")
        name = function_name_from(payload.get("FunctionName"))
        if name is None:
            raise StatesError(
                RUNTIME, "The lambda:invoke parameters need a FunctionName"
            )
        result = await _call(run, name, payload.get("Payload"), payload, timeout_s)
    else:
        assert resource.function_name is not None
        result = await _call(run, resource.function_name, payload, None, timeout_s)
    return finish(run, result, apply_output_path=False)


def _timeout_s(run: StateRun) -> float | None:
    field_value(run, "HeartbeatSeconds", run.input)
    value = field_value(run, "TimeoutSeconds", run.input)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise StatesError(
            RUNTIME,
            f"The TimeoutSeconds value must be a positive integer, got"
            f" {dataflow.compact_json(value)}",
        )
    return float(value)


async def _call(
    run: StateRun,
    function_name: str,
    payload: Any,
    parameters: dict[str, Any] | None,
    timeout_s: float | None,
) -> Any:
    events = _TaskEvents(run, parameters is not None)
    events.scheduled(payload if parameters is None else parameters, timeout_s)
    journal = run.runner.journal
    key = f"{run.key}/task{run.retry_count}"
    recorded = journal.recorded(key) if journal is not None else None
    if recorded is None:
        if journal is not None:
            # The function is the outside world: the states that led to this
            # call (a States.UUID, an EnteredTime they put in the data) must
            # not be recomputed, with other values, after a crash.
            journal.flush()
        recorded = await _invoke(run, function_name, payload, timeout_s)
        if journal is not None:
            journal.record(key, recorded)
    if "error" in recorded:
        cause = recorded["cause"]
        if parameters is not None:
            cause = _compact_cause(cause)
        events.failed(recorded["error"], cause)
        raise StatesError(recorded["error"], cause)
    result = recorded["result"]
    if parameters is not None:
        size = len(json.dumps(result).encode())
        result = wrap_invoke_result(result, size, parameters.get("LogType"))
    events.succeeded(result)
    return result


def _compact_cause(cause: str | None) -> str | None:
    # The lambda:invoke integration re-serialises Lambda's error payload
    # compactly, where a plain Lambda Task passes Lambda's text through.
    try:
        parsed = json.loads(cause or "")
    except json.JSONDecodeError:
        return cause
    return dataflow.compact_json(parsed) if isinstance(parsed, dict) else cause


async def _invoke(
    run: StateRun, function_name: str, payload: Any, timeout_s: float | None
) -> dict[str, Any]:
    runner = run.runner
    limit_s = timeout_s
    remaining_s = runner.remaining_s()
    if remaining_s is not None:
        limit_s = remaining_s if limit_s is None else min(limit_s, remaining_s)
    try:
        call = runner.invoker(function_name, payload, timeout_s)
        if limit_s is None:
            result = await call
        else:
            result = await asyncio.wait_for(call, limit_s)
    except StatesError as exc:
        return {"error": exc.error, "cause": exc.cause}
    except TimeoutError:
        return {"error": TIMEOUT, "cause": None}
    except Exception as exc:  # noqa: BLE001 - a function's failure is data here
        cause = {"errorMessage": str(exc), "errorType": error_name_of(exc)}
        return {"error": error_name_of(exc), "cause": dataflow.compact_json(cause)}
    return {"result": result}


class _TaskEvents:
    """The Scheduled/Started/Succeeded/Failed events of one task call."""

    def __init__(self, run: StateRun, service: bool) -> None:
        self.run = run
        self.service = service
        self.prefix = "Task" if service else "LambdaFunction"

    def scheduled(self, payload: Any, timeout_s: float | None) -> None:
        recording = self.run.recording
        details: dict[str, Any] | None = None
        if recording and self.service:
            details = {
                "resource": "invoke",
                "resourceType": "lambda",
                "region": "us-east-1",
                "parameters": dataflow.compact_json(payload),
            }
        elif recording:
            details = {
                "resource": self.run.state["Resource"],
                "input": dataflow.compact_json(payload),
                "inputDetails": {"truncated": False},
            }
        if details is not None and timeout_s is not None:
            details["timeoutInSeconds"] = int(timeout_s)
        self.run.emit(f"{self.prefix}Scheduled", details)
        started = self._service_details() if recording and self.service else None
        self.run.emit(f"{self.prefix}Started", started)

    def _service_details(self) -> dict[str, Any]:
        return {"resource": "invoke", "resourceType": "lambda"}

    def succeeded(self, result: Any) -> None:
        details = None
        if self.run.recording:
            details = {
                "output": dataflow.compact_json(result),
                "outputDetails": {"truncated": False},
            }
            if self.service:
                details.update(self._service_details())
        self.run.emit(f"{self.prefix}Succeeded", details)

    def failed(self, error: str | None, cause: str | None) -> None:
        kind = "TimedOut" if error == TIMEOUT else "Failed"
        details: dict[str, Any] = {}
        if error is not None:
            details["error"] = error
        if cause is not None:
            details["cause"] = cause
        if self.service:
            details.update(self._service_details())
        self.run.emit(f"{self.prefix}{kind}", details)
