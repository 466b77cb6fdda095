"""TestState: one state run on its own, against AWS's recorded responses.

Every case of the corpus's ``test_state_api/`` is sent, with its recorded
request fields, through the ``TestState`` action of the Step Functions API;
status, output, next state, error, cause and inspection data must match what
AWS answered. The behaviour tests below call ``test_state`` directly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fnplane.workflows import (
    DefinitionError,
    InvalidRequestError,
    StateConfiguration,
    StateMock,
    WorkflowService,
    teststate,
)
from fnplane.workflows.api import StepFunctionsApi

from .corpus import CORPUS, case_names, cause_matches, load, loosely_equal

ACCOUNT = "111111111111"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/fnplane-test-state"
# LocalStack's tests made these calls without a roleArn (AWS then shows
# $$.Execution.RoleArn as null); they passed one in every other call.
_CALLS_WITHOUT_ROLE = (
    "test_state_machine_scenarios__",
    "test_state_scenarios__localstack_blogpost_scenario",
    "test_state_scenarios__state_with_variables__",
)
# Inspection data fields that are numbers or objects on the wire; the others
# are JSON text, which the recording decoded only when it held an object.
_INSPECTION_VALUES = {
    "errorDetails",
    "maxConcurrency",
    "toleratedFailureCount",
    "toleratedFailurePercentage",
}

PASS_STATE = {"Type": "Pass", "End": True}
TASK_STATE = {"Type": "Task", "Resource": "double", "Next": "After"}


class LambdaDouble:
    """The two functions the recorded unmocked calls invoked on AWS."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def __call__(
        self, function_name: str, payload: Any, timeout_s: float | None
    ) -> Any:
        """Answer as LocalStack's test handlers did."""
        self.calls.append((function_name, payload))
        if function_name == "return_bytes_str":
            return "HelloWorld!"
        if function_name == "double":
            return {"value": payload["value"] * 2}
        if function_name.startswith("lambda_func_"):
            # An identity function; Lambda hands a function invoked without a
            # payload the event {}.
            return {} if payload is None else payload
        raise AssertionError(f"unexpected call of {function_name!r}")


def _request(name: str, case_args: dict[str, Any]) -> dict[str, Any]:
    case = CORPUS / "test_state_api" / name
    body = {
        "definition": json.dumps(load(case, "definition.json")),
        "input": json.dumps(load(case, "input.json")),
        **case_args,
    }
    if not name.startswith(_CALLS_WITHOUT_ROLE):
        body["roleArn"] = ROLE_ARN
    return body


def _assert_inspection(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert set(actual) == set(expected), actual
    for key, value in expected.items():
        if key in _INSPECTION_VALUES:
            assert actual[key] == value, (key, actual[key])
            continue
        if isinstance(value, str):
            value = json.loads(value)
        assert loosely_equal(value, json.loads(actual[key])), (key, actual[key])


@pytest.mark.parametrize("name", case_names("test_state_api"))
async def test_recorded_test_state_call(name: str) -> None:
    """The TestState action answers this recorded request as AWS did."""
    case = CORPUS / "test_state_api" / name
    expected = load(case, "expected.json")
    service = WorkflowService(LambdaDouble(), account_id=ACCOUNT)
    body = _request(name, load(case, "meta.json")["request_args"])

    status, response = await StepFunctionsApi(service).handle("TestState", body)

    assert status == 200, response
    assert set(response) == set(expected), response
    assert response["status"] == expected["status"]
    assert response.get("error") == expected.get("error")
    assert cause_matches(expected.get("cause"), response.get("cause"), loose=True)
    assert response.get("nextState") == expected.get("nextState")
    if "output" in expected:
        output = json.loads(response["output"])
        assert loosely_equal(expected["output"], output), output
    if "inspectionData" in expected:
        _assert_inspection(expected["inspectionData"], response["inspectionData"])


def test_test_state_corpus_is_present() -> None:
    """The TestState cases are where the tests expect them (else they vanish)."""
    assert len(case_names("test_state_api")) == 144


async def test_info_level_reports_no_inspection_data() -> None:
    """INFO answers with the outcome only; DEBUG adds the inspection data."""
    info = await teststate.test_state(PASS_STATE, {"a": 1})
    debug = await teststate.test_state(
        PASS_STATE, {"a": 1}, inspection_level=teststate.DEBUG
    )

    assert info == {"status": "SUCCEEDED", "output": {"a": 1}}
    assert debug["inspectionData"]["afterResultPath"] == {"a": 1}


async def test_unmocked_task_calls_the_invoker() -> None:
    """Without a mock a Task invokes its function, once, and reports Next."""
    invoker = LambdaDouble()

    response = await teststate.test_state(TASK_STATE, {"value": 4}, invoker=invoker)

    assert response == {
        "status": "SUCCEEDED",
        "output": {"value": 8},
        "nextState": "After",
    }
    assert invoker.calls == [("double", {"value": 4})]


async def test_retrier_with_attempts_left_makes_the_error_retriable() -> None:
    """A matching retrier is reported, with its back-off, instead of retrying."""
    state = {
        **TASK_STATE,
        "Retry": [{"ErrorEquals": ["Boom"], "IntervalSeconds": 2, "MaxAttempts": 2}],
        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Handle"}],
    }

    retriable = await teststate.test_state(
        state,
        mock=StateMock.failing("Boom", "it broke"),
        configuration=StateConfiguration(retrier_retry_count=1),
        inspection_level=teststate.DEBUG,
    )
    caught = await teststate.test_state(
        state,
        mock=StateMock.failing("Boom", "it broke"),
        configuration=StateConfiguration(retrier_retry_count=2),
        inspection_level=teststate.DEBUG,
    )

    assert retriable["status"] == "RETRIABLE"
    assert retriable["inspectionData"]["errorDetails"] == {
        "retryIndex": 0,
        "retryBackoffIntervalSeconds": 4,
    }
    assert caught["status"] == "CAUGHT_ERROR"
    assert caught["nextState"] == "Handle"
    assert caught["output"] == {"Error": "Boom", "Cause": "it broke"}
    assert caught["inspectionData"]["errorDetails"] == {
        "retryIndex": 0,
        "catchIndex": 0,
    }


async def test_variables_after_the_state_are_inspected() -> None:
    """The inspected variables include those the state assigns."""
    state = {"Type": "Pass", "Assign": {"b.$": "$.b"}, "End": True}

    response = await teststate.test_state(
        state, {"b": 2}, variables={"a": 1}, inspection_level=teststate.TRACE
    )

    assert response["inspectionData"]["variables"] == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("definition", "options", "message"),
    [
        (PASS_STATE, {"mock": StateMock.returning(1)}, "a mock applies to"),
        (
            {"StartAt": "A", "States": {"A": PASS_STATE}},
            {"state_name": "B"},
            "'B' is not a state",
        ),
        ({"StartAt": "A", "States": {"A": PASS_STATE}}, {}, "needs stateName"),
        (PASS_STATE, {"inspection_level": "LOUD"}, "inspectionLevel"),
        (TASK_STATE, {}, "pass an invoker or a mock"),
        (
            {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "End": True,
            },
            {"invoker": LambdaDouble()},
            "mock its result or error",
        ),
    ],
    ids=[
        "mock-on-pass",
        "unknown-state",
        "no-state-name",
        "level",
        "no-invoker",
        "sqs",
    ],
)
async def test_inconsistent_requests_are_rejected(
    definition: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    """A request that cannot run raises InvalidRequestError saying why."""
    with pytest.raises(InvalidRequestError, match=message):
        await teststate.test_state(definition, {}, **options)


async def test_invalid_state_is_a_definition_error() -> None:
    """A state that fails validation raises DefinitionError, as CreateStateMachine."""
    with pytest.raises(DefinitionError, match="Next or"):
        await teststate.test_state({"Type": "Pass"}, {})


async def test_api_reports_request_errors_as_validation_exceptions() -> None:
    """The TestState action answers a bad request with ValidationException."""
    api = StepFunctionsApi(WorkflowService(LambdaDouble()))
    body = {"definition": json.dumps(PASS_STATE), "mock": {"result": "{"}}

    status, response = await api.handle("TestState", body)

    assert status == 400
    assert response["__type"] == "ValidationException"
