"""The Step Functions JSON API, mounted on a tiny aiohttp app, driven by boto3."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

from fnplane.workflows import WorkflowService
from fnplane.workflows.api import CONTENT_TYPE, StepFunctionsApi
from fnplane.workflows.definition import EXPRESS

from .conftest import FunctionInvoker

DEFINITION = {
    "StartAt": "Double",
    "States": {"Double": {"Type": "Task", "Resource": "double", "End": True}},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def endpoint(invoker: FunctionInvoker) -> AsyncIterator[str]:
    """Serve the API on a free port; yield its URL."""
    api = StepFunctionsApi(WorkflowService(invoker, function_exists=invoker.exists))

    async def dispatch(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        status, payload = await api.handle(request.headers["X-Amz-Target"], body)
        return web.Response(
            status=status, text=json.dumps(payload), content_type=CONTENT_TYPE
        )

    app = web.Application()
    app.router.add_post("/", dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _client(url: str) -> Any:
    return boto3.client(
        "stepfunctions",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="fnplane",
        aws_secret_access_key="fnplane",
        # StartSyncExecution targets "sync-<host>" on AWS; a local endpoint
        # serves every action on one host.
        config=Config(inject_host_prefix=False),
    )


def _drive(url: str) -> dict[str, Any]:
    client = _client(url)
    created = client.create_state_machine(
        name="doubler",
        definition=json.dumps(DEFINITION),
        roleArn="arn:aws:iam::1:r",
        type="EXPRESS",
    )
    arn = created["stateMachineArn"]
    synced = client.start_sync_execution(stateMachineArn=arn, input='{"value": 21}')
    described = client.describe_execution(executionArn=synced["executionArn"])
    history = client.get_execution_history(executionArn=synced["executionArn"])
    listed = client.list_executions(stateMachineArn=arn)
    machines = client.list_state_machines()
    with pytest.raises(ClientError) as missing:
        client.describe_execution(executionArn=arn.replace("stateMachine", "execution"))
    with pytest.raises(ClientError) as invalid:
        client.create_state_machine(
            name="bad",
            definition='{"StartAt": "Nowhere", "States": {}}',
            roleArn="arn:aws:iam::1:r",
        )
    return {
        "synced": synced,
        "described": described,
        "history": history,
        "listed": listed,
        "machines": machines,
        "missing": missing.value.response["Error"]["Code"],
        "invalid": invalid.value.response["Error"]["Code"],
    }


async def test_boto3_runs_an_execution_end_to_end(endpoint: str) -> None:
    """boto3's stepfunctions client creates, runs and inspects an execution."""
    seen = await asyncio.to_thread(_drive, endpoint)

    assert seen["synced"]["status"] == "SUCCEEDED"
    assert json.loads(seen["synced"]["output"]) == {"value": 42}
    assert seen["described"]["status"] == "SUCCEEDED"
    assert [m["name"] for m in seen["machines"]["stateMachines"]] == ["doubler"]
    assert len(seen["listed"]["executions"]) == 1
    assert seen["missing"] == "ExecutionDoesNotExist"
    assert seen["invalid"] == "InvalidDefinition"


async def test_standard_execution_and_history_over_boto3(endpoint: str) -> None:
    """StartExecution returns at once; the history lists Step Functions events."""

    def drive() -> tuple[dict[str, Any], list[str]]:
        client = _client(endpoint)
        arn = client.create_state_machine(
            name="std", definition=json.dumps(DEFINITION), roleArn="arn:aws:iam::1:r"
        )["stateMachineArn"]
        started = client.start_execution(stateMachineArn=arn, input='{"value": 1}')
        for _ in range(200):
            described = client.describe_execution(executionArn=started["executionArn"])
            if described["status"] != "RUNNING":
                break
        events = client.get_execution_history(executionArn=started["executionArn"])
        return described, [event["type"] for event in events["events"]]

    described, types = await asyncio.to_thread(drive)

    assert described["status"] == "SUCCEEDED"
    assert types == [
        "ExecutionStarted",
        "TaskStateEntered",
        "LambdaFunctionScheduled",
        "LambdaFunctionStarted",
        "LambdaFunctionSucceeded",
        "TaskStateExited",
        "ExecutionSucceeded",
    ]


async def test_unknown_action_and_sync_on_standard_are_client_errors(
    invoker: FunctionInvoker,
) -> None:
    """Errors come back in AWS's shape with a 400 status."""
    api = StepFunctionsApi(WorkflowService(invoker))
    machine = api.service.create_state_machine("std", DEFINITION)

    status, body = await api.handle("AWSStepFunctions.Nope", {})
    sync_status, sync_body = await api.handle(
        "StartSyncExecution", {"stateMachineArn": machine.arn}
    )

    assert (status, body["__type"]) == (400, "UnknownOperationException")
    assert (sync_status, sync_body["__type"]) == (400, "StateMachineTypeNotSupported")


async def test_boto3_test_state_runs_one_state(endpoint: str) -> None:
    """boto3's test_state runs a Task on its function and on a mocked error."""

    def drive() -> tuple[dict[str, Any], dict[str, Any]]:
        client = _client(endpoint)
        state = {
            "Type": "Task",
            "Resource": "double",
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Recover"}],
            "Next": "Done",
        }
        called = client.test_state(
            definition=json.dumps(state),
            input='{"value": 5}',
            inspectionLevel="DEBUG",
        )
        mocked = client.test_state(
            definition=json.dumps(state),
            input='{"value": 5}',
            mock={"errorOutput": {"error": "Broken", "cause": "mocked"}},
        )
        return called, mocked

    called, mocked = await asyncio.to_thread(drive)

    assert called["status"] == "SUCCEEDED"
    assert called["nextState"] == "Done"
    assert json.loads(called["output"]) == {"value": 10}
    assert json.loads(called["inspectionData"]["result"]) == {"value": 10}
    assert mocked["status"] == "CAUGHT_ERROR"
    assert mocked["nextState"] == "Recover"
    assert json.loads(mocked["output"]) == {"Error": "Broken", "Cause": "mocked"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"value": NaN}', "NaN is not valid JSON"),
        ('{"value": 1e999}', "out of a float's range"),
        (42, "must be a string holding JSON"),
    ],
)
async def test_execution_input_that_is_not_strict_json_is_refused(
    invoker: FunctionInvoker, text: Any, says: str
) -> None:
    """NaN and 1e999 parse in Python but no JSON reader takes them back:
    refused with InvalidExecutionInput, like text that is not JSON at all."""
    api = StepFunctionsApi(WorkflowService(invoker))
    machine = api.service.create_state_machine("express", DEFINITION, EXPRESS)

    status, body = await api.handle(
        "StartSyncExecution", {"stateMachineArn": machine.arn, "input": text}
    )

    assert (status, body["__type"]) == (400, "InvalidExecutionInput")
    assert says in body["message"]
