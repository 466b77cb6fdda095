"""Engine behaviour beyond the recorded corpus: errors, retries, validation."""

from __future__ import annotations

from typing import Any

import pytest

from fnplane.workflows import (
    DefinitionError,
    FakeClock,
    TaskFailed,
    WorkflowService,
    parse_definition,
)

from .conftest import FunctionInvoker


def _task(resource: str, **extra: Any) -> dict[str, Any]:
    return {
        "StartAt": "Work",
        "States": {
            "Work": {"Type": "Task", "Resource": resource, "End": True, **extra}
        },
    }


async def _run(invoker: Any, definition: dict[str, Any], data: Any = None) -> Any:
    clock = FakeClock()
    service = WorkflowService(invoker, clock=clock)
    machine = service.create_state_machine("m", definition)
    record = await service.start_sync_execution(machine.arn, data or {})
    return record, clock, service


async def test_exception_class_name_is_the_error_name(invoker: FunctionInvoker) -> None:
    """A function raising ValueError fails the execution with error ValueError."""
    record, _, _ = await _run(invoker, _task("explode"))

    assert (record.status, record.error) == ("FAILED", "ValueError")
    assert '"errorMessage":"boom"' in record.cause


async def test_retry_defaults_back_off_one_two_four(invoker: FunctionInvoker) -> None:
    """Retry defaults: IntervalSeconds 1, MaxAttempts 3, BackoffRate 2.0."""
    definition = _task("explode", Retry=[{"ErrorEquals": ["States.ALL"]}])

    record, clock, _ = await _run(invoker, definition)

    assert record.error == "ValueError"
    assert clock.slept_s == [1.0, 2.0, 4.0]
    assert len(invoker.calls) == 4


async def test_max_delay_caps_the_back_off(invoker: FunctionInvoker) -> None:
    """MaxDelaySeconds caps each wait between attempts."""
    retry = {
        "ErrorEquals": ["ValueError"],
        "IntervalSeconds": 3,
        "MaxAttempts": 3,
        "BackoffRate": 3,
        "MaxDelaySeconds": 5,
    }

    _, clock, _ = await _run(invoker, _task("explode", Retry=[retry]))

    assert clock.slept_s == [3.0, 5.0, 5.0]


async def test_catch_puts_the_error_at_its_result_path(
    invoker: FunctionInvoker,
) -> None:
    """A catcher sends Error and Cause to its ResultPath and moves on."""
    definition = _task(
        "explode",
        Catch=[
            {
                "ErrorEquals": ["States.TaskFailed"],
                "ResultPath": "$.error",
                "Next": "Recover",
            }
        ],
    )
    definition["States"]["Recover"] = {"Type": "Pass", "End": True}

    record, _, _ = await _run(invoker, definition, {"keep": 1})

    assert record.status == "SUCCEEDED"
    assert record.output["keep"] == 1
    assert record.output["error"]["Error"] == "ValueError"


async def test_task_failed_from_an_invoker_keeps_its_name() -> None:
    """An invoker's TaskFailed(error, cause) reaches the execution unchanged."""

    async def failing(name: str, payload: Any, timeout_s: float | None) -> Any:
        raise TaskFailed("Custom.Error", "it broke")

    record, _, _ = await _run(failing, _task("anything"))

    assert (record.error, record.cause) == ("Custom.Error", "it broke")


async def test_lambda_arn_and_invoke_integration_reach_the_function(
    invoker: FunctionInvoker,
) -> None:
    """Lambda ARNs match by name; lambda:invoke wraps the result like AWS."""
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:double"
    invoke = _task(
        "arn:aws:states:::lambda:invoke",
        Parameters={"FunctionName": arn, "Payload.$": "$"},
        OutputPath="$.Payload",
    )

    by_arn, _, _ = await _run(invoker, _task(arn), {"value": 2})
    by_invoke, _, _ = await _run(invoker, invoke, {"value": 5})

    assert by_arn.output == {"value": 4}
    assert by_invoke.output == {"value": 10}


async def test_task_timeout_is_states_timeout() -> None:
    """TimeoutSeconds turns a slow function into States.Timeout."""
    import asyncio

    async def slow(name: str, payload: Any, timeout_s: float | None) -> Any:
        await asyncio.sleep(5)

    record, _, _ = await _run(slow, _task("slow", TimeoutSeconds=1))

    assert record.error == "States.Timeout"


async def test_express_executions_time_out_after_five_minutes() -> None:
    """An Express execution past its 5 minute limit ends TIMED_OUT."""
    service = WorkflowService(FunctionInvoker({}), clock=FakeClock())
    definition = {
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 400, "End": True}},
    }
    machine = service.create_state_machine("slow", definition, "EXPRESS")

    record = await service.start_sync_execution(machine.arn, {})

    assert (record.status, record.error) == ("TIMED_OUT", "States.Timeout")


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"States": {"A": {"Type": "Pass", "End": True}}}, "StartAt"),
        ({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}, "'B'"),
        (
            {
                "StartAt": "A",
                "States": {
                    "A": {"Type": "Pass", "End": True},
                    "B": {"Type": "Pass", "End": True},
                },
            },
            "cannot be reached",
        ),
        (
            {
                "StartAt": "A",
                "States": {"A": {"Type": "Pass", "End": True, "Next": "A"}},
            },
            "both Next and End",
        ),
        (
            {
                "StartAt": "A",
                "States": {"A": {"Type": "Pass", "End": True, "InputPath": "x"}},
            },
            "InputPath",
        ),
        (
            {
                "StartAt": "A",
                "States": {"A": {"Type": "Pass", "End": True, "Colour": 1}},
            },
            "Colour",
        ),
        (
            {
                "StartAt": "A",
                "States": {"A": {"Type": "Task", "Resource": "nope", "End": True}},
            },
            "'nope'",
        ),
    ],
)
def test_invalid_definitions_name_the_problem(
    definition: dict[str, Any], message: str, invoker: FunctionInvoker
) -> None:
    """Validation names the state and field at fault before any run."""
    with pytest.raises(DefinitionError, match=message):
        parse_definition(definition, invoker.exists)


async def test_string_matches_and_choice_paths(invoker: FunctionInvoker) -> None:
    """StringMatches supports '*' wildcards and escaped stars."""
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.file", "StringMatches": "*.log", "Next": "Log"},
                    {"Variable": "$.file", "StringMatches": "a\\*b", "Next": "Star"},
                ],
                "Default": "Other",
            },
            "Log": {"Type": "Pass", "Result": "log", "End": True},
            "Star": {"Type": "Pass", "Result": "star", "End": True},
            "Other": {"Type": "Pass", "Result": "other", "End": True},
        },
    }

    outputs = [
        (await _run(invoker, definition, {"file": name}))[0].output
        for name in ("app.log", "a*b", "axb")
    ]

    assert outputs == ["log", "star", "other"]
