"""Workflows hosted by the platform: registration, triggers, the Step Functions
API through boto3, the example, and resuming after a kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from fnplane import App, RegistrationError
from fnplane.loader import load_app
from fnplane.runner import Platform

StartPlatform = Callable[..., Awaitable[Platform]]
REPO = Path(__file__).resolve().parents[2]
FNPLANE = str(Path(sys.executable).parent / "fnplane")

CHAIN = {
    "StartAt": "Double",
    "States": {
        "Double": {"Type": "Task", "Resource": "double", "Next": "Check"},
        "Check": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Big"}],
            "Default": "Small",
        },
        "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "End": True},
        "Small": {"Type": "Fail", "Error": "TooSmall", "Cause": "n was small"},
    },
}


def chain_app() -> App:
    app = App()

    @app.function()
    def double(event, context):
        return {"n": event["n"] * 2}

    standard = app.state_machine("Chain", CHAIN)
    express = app.state_machine("QuickChain", CHAIN, type="EXPRESS")
    app.http("POST", "/chain")(standard.handler)
    app.http("POST", "/quick")(express.handler)
    return app


@pytest.fixture
def sfn_clients() -> Iterator[list[Any]]:
    clients: list[Any] = []
    yield clients
    for client in clients:
        client.close()


def sfn(port: int, clients: list[Any]) -> Any:
    client = boto3.client(
        "stepfunctions", endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
        config=Config(inject_host_prefix=False, retries={"total_max_attempts": 1}),
    )  # fmt: skip
    clients.append(client)
    return client


async def post(port: int, path: str, body: Any) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}{path}", json=body) as reply:
            return reply.status, await reply.json()


def test_invalid_definition_fails_at_registration() -> None:
    app = App()
    with pytest.raises(RegistrationError, match="'Broken'"):
        app.state_machine("Broken", {"StartAt": "Nowhere", "States": {}})
    with pytest.raises(RegistrationError, match="type must be one of"):
        app.state_machine("Typed", CHAIN, type="FAST")


def test_definition_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "machine.asl.json"
    path.write_text(json.dumps(CHAIN))
    spec = App().state_machine("FromFile", path)
    assert spec.definition == CHAIN
    with pytest.raises(RegistrationError, match="does not exist"):
        App().state_machine("Missing", tmp_path / "nope.json")


async def test_unknown_task_function_fails_at_start(start_platform) -> None:
    app = App()
    app.state_machine("Orphan", CHAIN)
    with pytest.raises(RegistrationError, match="double"):
        await start_platform(app)


async def test_http_route_starts_standard_and_express_executions(
    start_platform,
) -> None:
    app = chain_app()
    platform = await start_platform(app)
    status, started = await post(platform.port, "/chain", {"n": 8})
    assert status == 200 and ":execution:Chain:" in started["executionArn"]
    record = await platform.workflows.service.wait(started["executionArn"], 5)
    assert record.status == "SUCCEEDED"

    status, output = await post(platform.port, "/quick", {"n": 6})
    assert (status, output) == (200, {"n": 12, "size": "big"})
    status, failed = await post(platform.port, "/quick", {"n": 1})
    assert status == 500, failed


async def test_file_drop_starts_an_execution(start_platform, tmp_path: Path) -> None:
    """A workflow's handler on a file trigger: the S3 event is the input."""
    inbox = tmp_path / "inbox"
    app = App()
    keys: list[str] = []

    @app.function()
    def note_key(event, context):
        keys.append(event["Records"][0]["s3"]["object"]["key"])
        return {"key": keys[-1]}

    note = {"Type": "Task", "Resource": "note_key", "End": True}
    machine = app.state_machine(
        "OnUpload", {"StartAt": "Note", "States": {"Note": note}}
    )
    app.on_file(inbox, name="start_on_upload")(machine.handler)
    platform = await start_platform(app)
    (inbox / "report 1.csv").write_text("a,b\n")
    deadline = time.monotonic() + 10
    while not (inbox / "processed" / "report 1.csv").exists():
        assert time.monotonic() < deadline, "the file was not handled"
        await asyncio.sleep(0.02)
    [execution] = platform.workflows.service.list_executions()
    record = await platform.workflows.service.wait(execution.arn, 5)
    assert (record.status, record.output) == ("SUCCEEDED", {"key": "report+1.csv"})
    assert keys == ["report+1.csv"]


async def test_start_execution_from_code(start_platform) -> None:
    app = chain_app()
    with pytest.raises(RuntimeError, match="no platform"):
        await app.start_execution("Chain", {"n": 1})
    await start_platform(app)
    assert await app.start_execution("QuickChain", {"n": 20}) == {
        "n": 40,
        "size": "big",
    }


async def test_boto3_drives_executions_and_reads_history(
    start_platform, sfn_clients
) -> None:
    platform = await start_platform(chain_app())
    client = sfn(platform.port, sfn_clients)

    def scenario() -> dict[str, Any]:
        machines = client.list_state_machines()["stateMachines"]
        arn = next(m["stateMachineArn"] for m in machines if m["name"] == "Chain")
        failing = client.start_execution(stateMachineArn=arn, input='{"n": 2}')
        passing = client.start_execution(stateMachineArn=arn, input='{"n": 9}')
        for execution in (failing, passing):
            for _ in range(100):
                described = client.describe_execution(
                    executionArn=execution["executionArn"]
                )
                if described["status"] != "RUNNING":
                    break
                time.sleep(0.05)
        history = client.get_execution_history(executionArn=passing["executionArn"])
        return {
            "failed": client.describe_execution(executionArn=failing["executionArn"]),
            "passed": client.describe_execution(executionArn=passing["executionArn"]),
            "types": [event["type"] for event in history["events"]],
            "listed": client.list_executions(stateMachineArn=arn)["executions"],
            "sync": client.start_sync_execution(
                stateMachineArn=arn.replace(":Chain", ":QuickChain"), input='{"n": 7}'
            ),
        }

    seen = await asyncio.to_thread(scenario)
    assert seen["failed"]["status"] == "FAILED"
    assert (seen["failed"]["error"], seen["failed"]["cause"]) == (
        "TooSmall",
        "n was small",
    )
    assert json.loads(seen["passed"]["output"]) == {"n": 18, "size": "big"}
    assert seen["types"][:3] == [
        "ExecutionStarted",
        "TaskStateEntered",
        "LambdaFunctionScheduled",
    ]
    assert seen["types"][-1] == "ExecutionSucceeded"
    assert len(seen["listed"]) == 2
    assert json.loads(seen["sync"]["output"]) == {"n": 14, "size": "big"}


async def test_credit_line_example_approves_and_rejects(
    start_platform, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("FNPLANE_NOTICES", str(tmp_path / "notices"))
    app = load_app(str(REPO / "functions"))
    platform = await start_platform(app)
    service = platform.workflows.service
    outcomes = {}
    for customer, income in (("ada", 5200), ("bob", 900)):
        request = {"customer": customer, "monthly_income": income,
                   "requested_increase": 2000}  # fmt: skip
        record = await service.start_execution("CreditLineIncrease", request)
        finished = await service.wait(record.arn, 10)
        assert finished.status == "SUCCEEDED", finished.cause
        notice = json.loads(Path(finished.output["notice"]).read_text())
        outcomes[customer] = notice["decision"]["status"]
    assert outcomes == {"ada": "approved", "bob": "rejected"}


RESUMABLE_APP = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from fnplane import App

    app = App()
    LOG = Path(os.environ["TASK_LOG"])

    def record(step, event):
        with LOG.open("a") as log:
            log.write(step + "\\n")
        return {**event, step: True}

    @app.function()
    def first(event, context):
        return record("first", event)

    @app.function()
    def second(event, context):
        return record("second", event)

    @app.function()
    def third(event, context):
        return record("third", event)

    app.state_machine("Resumable", {
        "StartAt": "First",
        "States": {
            "First": {"Type": "Task", "Resource": "first", "Next": "Second"},
            "Second": {"Type": "Task", "Resource": "second", "Next": "Pause"},
            "Pause": {"Type": "Wait", "Seconds": 3, "Next": "Third"},
            "Third": {"Type": "Task", "Resource": "third", "End": True},
        },
    })
    """
)


def start_server(
    project: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [FNPLANE, "run", "app.py", "--port", str(port), "--state-dir", "state"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("fnplane run did not start")


def sfn_call(port: int, action: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=json.dumps(body).encode(),
        headers={"X-Amz-Target": f"AWSStepFunctions.{action}",
                 "Content-Type": "application/x-amz-json-1.0"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_standard_execution_resumes_after_kill_9(tmp_path: Path, unused_port) -> None:
    """Killed during its Wait, the execution finishes after a restart; each
    Task ran exactly once and the Wait kept its deadline."""
    (tmp_path / "app.py").write_text(RESUMABLE_APP)
    task_log = tmp_path / "tasks.log"
    env = {**os.environ, "TASK_LOG": str(task_log)}
    server = start_server(tmp_path, unused_port, env)
    started = sfn_call(unused_port, "StartExecution",
                       {"stateMachineArn": "Resumable", "input": "{}"})  # fmt: skip
    arn = started["executionArn"]
    deadline = time.monotonic() + 10
    while "second" not in task_log.read_text() if task_log.exists() else True:
        assert time.monotonic() < deadline, "the first two Tasks did not run"
        time.sleep(0.05)
    waiting_since = time.monotonic()
    os.kill(server.pid, signal.SIGKILL)
    server.wait()

    server = start_server(tmp_path, unused_port, env)
    try:
        while True:
            described = sfn_call(
                unused_port, "DescribeExecution", {"executionArn": arn}
            )
            if described["status"] != "RUNNING":
                break
            assert time.monotonic() < deadline + 10, "the execution did not resume"
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"first": True, "second": True,
                                               "third": True}  # fmt: skip
    assert task_log.read_text().split() == ["first", "second", "third"]
    assert time.monotonic() - waiting_since >= 2.5, "the Wait kept its deadline"


BUFFERED_APP = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path
    from fnplane import App

    app = App()
    LOG = Path(os.environ["TASK_LOG"])
    RELEASE = Path(os.environ["RELEASE"])

    def record(line):
        with LOG.open("a") as log:
            log.write(line + "\\n")

    @app.function()
    def first(event, context):
        record("first")
        return {"first": True}

    @app.function()
    def second(event, context):
        record("second-start " + event["tag"])
        deadline = time.monotonic() + 20
        while not RELEASE.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        record("second")
        return {**event, "second": True}

    @app.function()
    def third(event, context):
        record("third")
        return {**event, "third": True}

    app.state_machine("Buffered", {
        "StartAt": "First",
        "States": {
            "First": {"Type": "Task", "Resource": "first", "Next": "Tag"},
            "Tag": {"Type": "Pass", "Next": "Count",
                    "Parameters": {"first.$": "$.first", "tag.$": "States.UUID()"}},
            "Count": {"Type": "Pass", "Result": 3, "ResultPath": "$.count",
                      "Next": "Pick"},
            "Pick": {"Type": "Choice", "Default": "Wrong", "Choices": [
                {"Variable": "$.count", "NumericEquals": 3, "Next": "Second"}]},
            "Wrong": {"Type": "Fail", "Error": "WrongBranch"},
            "Second": {"Type": "Task", "Resource": "second", "Next": "Third"},
            "Third": {"Type": "Task", "Resource": "third", "End": True},
        },
    })
    """
)


def _wait_for_line(log: Path, prefix: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and any(
        line.startswith(prefix) for line in log.read_text().splitlines()
    )):  # fmt: skip
        assert time.monotonic() < deadline, f"no {prefix!r} in the task log"
        time.sleep(0.05)


def test_kill_9_after_buffered_passes_resumes_them_unchanged(
    tmp_path: Path, unused_port
) -> None:
    """Killed while the Task after several Pass states runs: after a restart
    each Task completes once, the interrupted one is called again with the
    same input (the Pass states were durable before it was first called),
    and the history has no gap or duplicate event id."""
    (tmp_path / "app.py").write_text(BUFFERED_APP)
    task_log, release = tmp_path / "tasks.log", tmp_path / "release"
    env = {**os.environ, "TASK_LOG": str(task_log), "RELEASE": str(release)}
    server = start_server(tmp_path, unused_port, env)
    started = sfn_call(unused_port, "StartExecution",
                       {"stateMachineArn": "Buffered", "input": "{}"})  # fmt: skip
    arn = started["executionArn"]
    _wait_for_line(task_log, "second-start", 10)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    release.touch()

    server = start_server(tmp_path, unused_port, env)
    try:
        deadline = time.monotonic() + 20
        while True:
            described = sfn_call(
                unused_port, "DescribeExecution", {"executionArn": arn}
            )
            if described["status"] != "RUNNING":
                break
            assert time.monotonic() < deadline, "the execution did not resume"
            time.sleep(0.1)
        history = sfn_call(unused_port, "GetExecutionHistory", {"executionArn": arn})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)

    lines = task_log.read_text().splitlines()
    starts = [line for line in lines if line.startswith("second-start")]
    assert len(starts) == 2 and starts[0] == starts[1], lines
    assert [line for line in lines if line not in starts] == [
        "first", "second", "third"]  # fmt: skip
    assert described["status"] == "SUCCEEDED"
    tag = starts[0].split()[1]
    expected = {"first": True, "tag": tag, "count": 3, "second": True}
    assert json.loads(described["output"]) == {**expected, "third": True}
    ids = [event["id"] for event in history["events"]]
    assert ids == list(range(1, len(ids) + 1))
    types = [event["type"] for event in history["events"]]
    assert types.count("ExecutionStarted") == 1
    assert types.count("LambdaFunctionSucceeded") == 3
