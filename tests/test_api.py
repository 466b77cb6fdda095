"""The Lambda Invoke API, driven by boto3 against a real server."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fnplane import App, FunctionError
from fnplane.config import Settings
from fnplane.runner import Platform

StartPlatform = Callable[..., Awaitable[Platform]]


OPEN_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """boto3 keeps sockets open until its client is closed."""
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()
    # urllib3 drops a connection that answered 429 from its pool without
    # closing it; collect it here, where its ResourceWarning is boto3's, so
    # it does not surface in whichever test happens to run the collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def lambda_client(port: int, secret: str = "anything") -> Any:
    client = boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    OPEN_CLIENTS.append(client)
    return client


def build_app(events: list[Any]) -> App:
    app = App()

    @app.function()
    def add(event, context):
        return {"sum": event["a"] + event["b"]}

    @app.function()
    def record(event, context):
        events.append(event)

    @app.function()
    def fails(event, context):
        context.logger.info("about to fail", step=3)
        raise ValueError("bad input value")

    @app.function()
    def declines(event, context):
        raise FunctionError("declined", error_type="CardDeclined")

    @app.function()
    def empty(event, context):
        return event

    @app.function(concurrency=1)
    def busy(event, context):
        threading.Event().wait(event.get("hold_s", 0))
        return "done"

    return app


async def in_thread(call: Callable[[], Any]) -> Any:
    """boto3 blocks: run it off the loop that serves the platform."""
    return await asyncio.to_thread(call)


@pytest.fixture
async def client_and_events(start_platform: StartPlatform) -> tuple[Any, list[Any]]:
    events: list[Any] = []
    platform = await start_platform(build_app(events))
    return lambda_client(platform.port), events


async def test_request_response_returns_the_result(client_and_events) -> None:
    client, _ = client_and_events
    response = await in_thread(
        lambda: client.invoke(FunctionName="add", Payload=json.dumps({"a": 2, "b": 3}))
    )
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"sum": 5}
    assert response["ExecutedVersion"] == "$LATEST"


async def test_function_arn_is_accepted_as_the_name(client_and_events) -> None:
    client, _ = client_and_events
    arn = "arn:aws:lambda:us-east-1:123456789012:function:add"
    response = await in_thread(
        lambda: client.invoke(FunctionName=arn, Payload=b'{"a": 1, "b": 1}')
    )
    assert json.loads(response["Payload"].read()) == {"sum": 2}


async def test_empty_payload_is_an_empty_object(client_and_events) -> None:
    client, _ = client_and_events
    response = await in_thread(lambda: client.invoke(FunctionName="empty"))
    assert json.loads(response["Payload"].read()) == {}


async def test_event_invocation_is_accepted_with_202(client_and_events) -> None:
    client, events = client_and_events
    response = await in_thread(
        lambda: client.invoke(
            FunctionName="record", InvocationType="Event", Payload=b'{"n": 1}'
        )
    )
    assert response["StatusCode"] == 202
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.02)
    assert events == [{"n": 1}]


async def test_dry_run_is_204_and_runs_nothing(client_and_events) -> None:
    client, events = client_and_events
    response = await in_thread(
        lambda: client.invoke(FunctionName="record", InvocationType="DryRun")
    )
    assert response["StatusCode"] == 204
    await asyncio.sleep(0.1)
    assert events == []


async def test_unhandled_error_with_log_tail(client_and_events) -> None:
    from fnplane import logs

    logs.configure("console", "warning", cache_loggers=False)
    client, _ = client_and_events
    response = await in_thread(
        lambda: client.invoke(FunctionName="fails", LogType="Tail", Payload=b"{}")
    )
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input value"
    assert any("fails" in frame for frame in error["stackTrace"])
    log = base64.b64decode(response["LogResult"]).decode()
    assert "START RequestId" in log and "REPORT RequestId" in log


async def test_handled_error_is_reported_as_handled(client_and_events) -> None:
    client, _ = client_and_events
    response = await in_thread(lambda: client.invoke(FunctionName="declines"))
    assert response["FunctionError"] == "Handled"
    assert json.loads(response["Payload"].read())["errorType"] == "CardDeclined"


async def test_unknown_function_is_resource_not_found(client_and_events) -> None:
    client, _ = client_and_events
    with pytest.raises(ClientError) as raised:
        await in_thread(lambda: client.invoke(FunctionName="ghost"))
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_invalid_json_payload_is_rejected(client_and_events) -> None:
    client, _ = client_and_events
    with pytest.raises(ClientError) as raised:
        await in_thread(lambda: client.invoke(FunctionName="add", Payload=b"{nope"))
    assert raised.value.response["Error"]["Code"] == "InvalidRequestContentException"


async def test_throttled_invoke_is_too_many_requests(client_and_events) -> None:
    client, _ = client_and_events
    holding = asyncio.create_task(
        in_thread(lambda: client.invoke(FunctionName="busy", Payload=b'{"hold_s": 1}'))
    )
    await asyncio.sleep(0.4)
    with pytest.raises(ClientError) as raised:
        await in_thread(lambda: client.invoke(FunctionName="busy", Payload=b"{}"))
    assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert (await holding)["StatusCode"] == 200


async def test_api_key_accepts_sigv4_with_the_key_and_refuses_others(
    start_platform: StartPlatform, settings: Settings
) -> None:
    platform = await start_platform(
        build_app([]), settings.replace(api_key="s3cret-key")
    )
    good = lambda_client(platform.port, secret="s3cret-key")
    response = await in_thread(
        lambda: good.invoke(FunctionName="add", Payload=b'{"a": 1, "b": 2}')
    )
    assert json.loads(response["Payload"].read()) == {"sum": 3}

    bad = lambda_client(platform.port, secret="wrong")
    with pytest.raises(ClientError) as raised:
        await in_thread(lambda: bad.invoke(FunctionName="add", Payload=b"{}"))
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


async def test_api_key_as_bearer_token_and_health_stays_open(
    start_platform: StartPlatform, settings: Settings
) -> None:
    import aiohttp

    platform = await start_platform(build_app([]), settings.replace(api_key="k1"))
    base = f"http://127.0.0.1:{platform.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/health") as response:
            assert response.status == 200
        async with session.get(f"{base}/functions") as response:
            assert response.status == 403
        headers = {"Authorization": "Bearer k1"}
        async with session.get(f"{base}/functions", headers=headers) as response:
            assert response.status == 200
