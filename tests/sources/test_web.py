"""The HTTP push source on a real port, driven by a real HTTP client."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest
from multidict import CIMultiDict
from structlog.testing import capture_logs

from fnplane import App, HttpError, Response
from fnplane.config import Settings
from fnplane.runner import Platform
from fnplane.sources.web import HttpSource

StartPlatform = Callable[..., Awaitable[Platform]]


def build_app() -> App:
    app = App()

    @app.http("GET", "/items/{item_id}")
    def get_item(event, context):
        return {
            "item_id": event.path_params["item_id"],
            "query": event.query,
            "cookies": event.cookies,
            "raw": {k: event[k] for k in ("rawPath", "rawQueryString", "routeKey")},
            "payload_query": event.get("queryStringParameters"),
            "payload_cookies": event.get("cookies"),
            "version": event["version"],
        }

    @app.http("POST", "/echo")
    async def echo(event, context):
        return event.json()

    @app.http("POST", "/binary")
    def binary(event, context):
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "image/png", "X-Size": str(len(event.body))},
            "body": base64.b64encode(event.body[::-1]).decode(),
            "isBase64Encoded": True,
            "cookies": ["session=abc; HttpOnly", "theme=dark"],
        }

    @app.http("POST", "/payload")
    def payload(event, context):
        return {"isBase64Encoded": event["isBase64Encoded"], "body": event["body"]}

    @app.http("GET", "/text")
    def text(event, context):
        return "plain words"

    @app.http("GET", "/bytes")
    def raw_bytes(event, context):
        return b"\x00\x01\x02"

    @app.http("DELETE", "/nothing")
    def nothing(event, context):
        return None

    @app.http("GET", "/custom")
    def custom(event, context):
        return Response(
            {"created": True}, status=201, headers={"X-Custom": "yes", "X-Count": 3}
        )

    @app.http("GET", "/teapot")
    def teapot(event, context):
        raise HttpError("I am a teapot", status_code=418)

    @app.http("GET", "/crash")
    def crash(event, context):
        raise RuntimeError("secret internals")

    @app.http("GET", "/unserialisable")
    def unserialisable(event, context):
        return {"when": object()}

    @app.http("GET", "/exit")
    def exits(event, context):
        raise SystemExit(3)

    @app.http("GET", "/interrupt")
    async def interrupts(event, context):
        raise KeyboardInterrupt

    @app.http("GET", "/blocks-loop", timeout=0.1)
    async def blocks_loop(event, context):
        time.sleep(0.3)
        return "too late"

    @app.http("GET", "/header-injection")
    def header_injection(event, context):
        return {"statusCode": 200, "headers": {"X-Next": "a\r\nSet-Cookie: x=1"}}

    @app.http("GET", "/bad-header-name")
    def bad_header_name(event, context):
        return Response("hi", headers={"Bad Name": "x"})

    @app.http("GET", "/cookie-injection")
    def cookie_injection(event, context):
        return {"statusCode": 200, "cookies": ["a=1\nX-Evil: 1"]}

    @app.http("GET", "/nan")
    def not_a_number(event, context):
        return {"x": float("nan")}

    @app.http("GET", "/huge")
    def huge(event, context):
        return "x" * 2048

    @app.http("GET", "/huge-json")
    def huge_json(event, context):
        return {"padding": "x" * 2048}

    @app.http("GET", "/raw/{rest+}")
    def raw(event, context):
        return {
            "rawPath": event["rawPath"],
            "rawQueryString": event["rawQueryString"],
            "query": event.query,
            "rest": event.path_params["rest"],
        }

    @app.http("GET", "/slow", timeout=0.3)
    async def slow(event, context):
        await asyncio.sleep(5)

    @app.http("GET", "/gate", concurrency=1)
    async def gate(event, context):
        await asyncio.sleep(0.5)
        return "through"

    return app


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def base_url(start_platform: StartPlatform, settings: Settings) -> str:
    platform = await start_platform(build_app(), settings.replace(max_body_bytes=1024))
    return f"http://127.0.0.1:{platform.port}"


async def call(
    client: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.request(method, url, **kwargs) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


async def test_path_params_multi_value_query_and_cookies(client, base_url) -> None:
    status, headers, body = await call(
        client, "GET", f"{base_url}/items/42?tag=a&tag=b&empty=",
        headers={"Cookie": "session=xyz; theme=dark"},
    )  # fmt: skip
    data = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert data["item_id"] == "42"
    assert data["query"] == {"tag": ["a", "b"], "empty": [""]}
    assert data["cookies"] == {"session": "xyz", "theme": "dark"}
    assert data["payload_query"] == {"tag": "a,b", "empty": ""}
    assert data["payload_cookies"] == ["session=xyz", "theme=dark"]
    assert data["raw"] == {
        "rawPath": "/items/42",
        "rawQueryString": "tag=a&tag=b&empty=",
        "routeKey": "GET /items/{item_id}",
    }
    assert data["version"] == "2.0"


async def test_binary_body_round_trip_with_cookies(client, base_url) -> None:
    sent = bytes(range(256))
    async with client.post(f"{base_url}/binary", data=sent) as response:
        assert response.status == 201
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Size"] == "256"
        assert response.headers.getall("Set-Cookie") == [
            "session=abc; HttpOnly",
            "theme=dark",
        ]
        assert await response.read() == sent[::-1]


async def test_binary_request_is_base64_in_the_payload(client, base_url) -> None:
    _, _, body = await call(
        client, "POST", f"{base_url}/payload", data=b"\xff\xfe",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert json.loads(body) == {"isBase64Encoded": True, "body": "//4="}
    _, _, body = await call(
        client, "POST", f"{base_url}/payload", data="héllo",
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    assert json.loads(body) == {"isBase64Encoded": False, "body": "héllo"}


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body"),
    [
        ("/text", 200, "text/plain; charset=utf-8", b"plain words"),
        ("/bytes", 200, "application/octet-stream", b"\x00\x01\x02"),
        ("/custom", 201, "application/json", b'{"created": true}'),
    ],
)
async def test_result_types_map_to_responses(
    client, base_url, path, status, content_type, body
) -> None:
    got_status, headers, got_body = await call(client, "GET", base_url + path)
    assert (got_status, headers["Content-Type"], got_body) == (
        status,
        content_type,
        body,
    )


async def test_response_headers_are_sent_as_text(client, base_url) -> None:
    status, headers, _ = await call(client, "GET", f"{base_url}/custom")
    assert status == 201
    assert (headers["X-Custom"], headers["X-Count"]) == ("yes", "3")


async def test_none_is_204_and_json_body_is_echoed(client, base_url) -> None:
    status, _, body = await call(client, "DELETE", f"{base_url}/nothing")
    assert (status, body) == (204, b"")
    status, _, body = await call(client, "POST", f"{base_url}/echo", json=[1, "two"])
    assert (status, json.loads(body)) == (200, [1, "two"])


async def test_every_response_carries_the_request_id(client, base_url) -> None:
    for method, path in [("GET", "/text"), ("GET", "/nope"), ("GET", "/crash")]:
        _, headers, _ = await call(client, method, base_url + path)
        assert len(headers["X-Request-Id"]) == 36


async def test_unknown_route_404_and_wrong_method_405_with_allow(
    client, base_url
) -> None:
    status, _, body = await call(client, "GET", f"{base_url}/missing")
    assert status == 404 and "no route" in json.loads(body)["message"]
    status, headers, _ = await call(client, "PUT", f"{base_url}/echo")
    assert status == 405 and headers["Allow"] == "POST"


async def test_malformed_json_and_invalid_utf8_are_400(client, base_url) -> None:
    status, _, body = await call(client, "POST", f"{base_url}/echo", data=b'{"a": ')
    assert status == 400
    assert "not valid JSON" in json.loads(body)["message"]
    status, _, body = await call(client, "POST", f"{base_url}/echo", data=b"\xc3\x28")
    assert status == 400
    assert "not valid utf-8" in json.loads(body)["message"]


async def test_body_over_the_limit_is_413_before_the_handler(client, base_url) -> None:
    status, _, body = await call(client, "POST", f"{base_url}/echo", data=b"x" * 2048)
    assert status == 413 and "1024 byte limit" in json.loads(body)["message"]


async def test_platform_endpoints_answer_a_body_over_the_limit_in_json(
    client, start_platform, settings
) -> None:
    """The API key check and AWS JSON services read the body themselves; over
    the limit they answer 413 in the platform's JSON with the request id."""
    limited = settings.replace(max_body_bytes=1024, api_key="secret")
    platform = await start_platform(build_app(), limited)
    base = f"http://127.0.0.1:{platform.port}"
    oversized = b"x" * 2048
    for path, headers in (
        ("/2015-03-31/functions/echo/invocations", {}),
        ("/", {"X-Amz-Target": "AWSStepFunctions.ListStateMachines"}),
    ):
        status, reply_headers, body = await call(
            client, "POST", base + path, data=oversized, headers=headers
        )
        assert status == 413, path
        assert "1024 byte limit" in json.loads(body)["message"]
        assert reply_headers["X-Request-Id"]


async def test_chunked_body_over_the_limit_is_413(client, base_url) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    status, _, _ = await call(client, "POST", f"{base_url}/echo", data=chunks())
    assert status == 413


async def test_handler_error_is_500_without_internals(client, base_url) -> None:
    status, headers, body = await call(client, "GET", f"{base_url}/crash")
    data = json.loads(body)
    assert status == 500
    assert data == {"message": "Internal Server Error", "requestId": data["requestId"]}
    assert data["requestId"] == headers["X-Request-Id"]
    assert b"secret internals" not in body


async def test_debug_mode_adds_the_error_and_stack(
    client, start_platform, settings
) -> None:
    platform = await start_platform(build_app(), settings.replace(debug=True))
    _, _, body = await call(client, "GET", f"http://127.0.0.1:{platform.port}/crash")
    data = json.loads(body)
    assert data["errorType"] == "RuntimeError"
    assert data["errorMessage"] == "secret internals"
    assert data["stackTrace"]


async def test_unserialisable_result_is_a_500(client, base_url) -> None:
    status, _, _ = await call(client, "GET", f"{base_url}/unserialisable")
    assert status == 500


async def test_http_error_sets_its_status(client, base_url) -> None:
    status, _, body = await call(client, "GET", f"{base_url}/teapot")
    assert (status, json.loads(body)["message"]) == (418, "I am a teapot")


async def test_timeout_is_504(client, base_url) -> None:
    status, _, body = await call(client, "GET", f"{base_url}/slow")
    assert status == 504
    assert json.loads(body)["message"] == "Task timed out after 0.30 seconds"


async def test_throttled_request_is_429_with_retry_after(client, base_url) -> None:
    first = asyncio.create_task(call(client, "GET", f"{base_url}/gate"))
    await asyncio.sleep(0.2)
    status, headers, _ = await call(client, "GET", f"{base_url}/gate")
    assert status == 429 and headers["Retry-After"] == "1"
    assert (await first)[0] == 200


async def test_event_invocation_returns_202_then_runs(client, start_platform) -> None:
    app = App()
    ran = asyncio.Event()

    @app.http("POST", "/later")
    async def later(event, context):
        ran.set()

    platform = await start_platform(app)
    status, headers, body = await call(
        client, "POST", f"http://127.0.0.1:{platform.port}/later",
        headers={"X-Fnplane-Invocation-Type": "Event"},
    )  # fmt: skip
    assert status == 202
    assert json.loads(body)["requestId"] == headers["X-Request-Id"]
    await asyncio.wait_for(ran.wait(), 5)


async def test_draining_platform_answers_503(client, start_platform) -> None:
    app = App()
    started = asyncio.Event()

    @app.http("GET", "/work")
    async def work(event, context):
        started.set()
        await asyncio.sleep(0.5)
        return "finished"

    platform = await start_platform(app)
    url = f"http://127.0.0.1:{platform.port}/work"
    in_flight = asyncio.create_task(call(client, "GET", url))
    await started.wait()
    stopping = asyncio.create_task(platform.stop())
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as fresh:
        status, _, _ = await call(fresh, "GET", url)
    assert status == 503
    assert (await in_flight)[2] == b"finished"
    await stopping


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send bytes no HTTP client would; read the answer until the server
    closes the connection: status, headers (lower-case names), JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "8190 bytes"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", "8190 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "header"),
    ],
    ids=["long-request-line", "long-header", "malformed-header"],
)
async def test_requests_that_cannot_be_parsed_are_answered_in_json(
    start_platform, request_bytes: bytes, message: str
) -> None:
    """What never reaches a function gets the platform's JSON error with the
    request id, and a warning line without a traceback."""
    platform = await start_platform(build_app())
    with capture_logs() as logs:
        status, headers, body = await raw_exchange(platform.port, request_bytes)

    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["requestId"] == headers["x-request-id"]
    assert message in body["message"]
    (line,) = [entry for entry in logs if entry["event"] == "http.bad_request"]
    assert line["request_id"] == body["requestId"]
    assert line["log_level"] == "warning" and "exc_info" not in line


async def test_a_client_gone_halfway_through_its_body_is_not_a_server_error(
    start_platform,
) -> None:
    platform = await start_platform(build_app())
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", platform.port)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        await writer.drain()
        writer.close()
        for _ in range(100):
            if any(e["event"] == "http.client_disconnected" for e in logs):
                break
            await asyncio.sleep(0.02)

    events = [entry["event"] for entry in logs]
    assert "http.client_disconnected" in events
    assert "http.server_error" not in events


async def test_a_platform_fault_is_a_json_500_logged_with_its_traceback(
    start_platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = await start_platform(build_app())

    def broken_event(*args: Any) -> None:
        raise RuntimeError("a bug in the platform")

    monkeypatch.setattr(HttpSource, "_event", broken_event)
    with capture_logs() as logs:
        status, headers, body = await raw_exchange(
            platform.port, b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
        )

    assert status == 500
    assert body == {"message": "Internal Server Error", "requestId": ANY}
    assert body["requestId"] == headers["x-request-id"]
    (line,) = [entry for entry in logs if entry["event"] == "http.server_error"]
    assert isinstance(line["exc_info"], RuntimeError)


async def test_an_idle_keep_alive_connection_does_not_hold_the_stop(
    client, start_platform
) -> None:
    """Idle connections close at once; only running requests get the grace."""
    platform = await start_platform(build_app())
    status, _, _ = await call(client, "GET", f"http://127.0.0.1:{platform.port}/text")
    assert status == 200  # the client keeps this connection open

    started = time.monotonic()
    await platform.stop()

    assert time.monotonic() - started < 0.5


async def test_health_functions_and_metrics_endpoints(client, base_url) -> None:
    await call(client, "GET", f"{base_url}/text")
    await call(client, "GET", f"{base_url}/crash")
    status, _, body = await call(client, "GET", f"{base_url}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    _, _, body = await call(client, "GET", f"{base_url}/functions")
    listed = {f["name"]: f for f in json.loads(body)["functions"]}
    assert listed["get_item"]["triggers"] == [
        {"type": "http", "methods": ["GET"], "path": "/items/{item_id}"}
    ]
    _, headers, body = await call(client, "GET", f"{base_url}/metrics")
    text = body.decode()
    assert headers["Content-Type"].startswith("text/plain")
    assert 'fnplane_invocations_total{function="text",outcome="success"} 1.0' in text
    assert 'fnplane_errors_total{function="crash"} 1.0' in text
    assert 'fnplane_cold_starts_total{function="text"} 1.0' in text


async def test_system_exit_and_keyboard_interrupt_fail_only_their_invocation(
    client, base_url
) -> None:
    """A handler cannot take the platform down with it."""
    for path in ("/exit", "/interrupt"):
        status, _, _ = await call(client, "GET", base_url + path)
        assert status == 500
    status, _, body = await call(client, "GET", f"{base_url}/text")
    assert (status, body) == (200, b"plain words")


async def test_async_handler_that_blocks_past_its_timeout_is_a_timeout(
    client, base_url
) -> None:
    status, _, body = await call(client, "GET", f"{base_url}/blocks-loop")
    assert status == 504 and b"too late" not in body


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b"[" * 100_000,
        b"1" * 5000,
        b'{"a": Infinity}',
        b"[1e999]",
        b'{"a": -1.5e400}',
    ],
    ids=["nan", "deep", "long-int", "infinity", "overflow", "negative-overflow"],
)
async def test_json_that_python_accepts_but_is_not_json_is_400(
    client, start_platform, body
) -> None:
    platform = await start_platform(build_app())
    url = f"http://127.0.0.1:{platform.port}/echo"
    status, _, reply = await call(client, "POST", url, data=body)
    assert status == 400, reply
    assert "JSON" in json.loads(reply)["message"]


async def test_results_that_cannot_be_sent_are_500_and_count_as_errors(
    client, start_platform, settings
) -> None:
    platform = await start_platform(build_app(), settings.replace(max_body_bytes=1024))
    base = f"http://127.0.0.1:{platform.port}"
    unsendable = {
        "/nan": "not_a_number",
        "/huge": "huge",
        "/huge-json": "huge_json",
        "/unserialisable": "unserialisable",
        "/header-injection": "header_injection",
        "/bad-header-name": "bad_header_name",
        "/cookie-injection": "cookie_injection",
    }
    for path in unsendable:
        status, headers, body = await call(client, "GET", base + path)
        assert status == 500, path
        assert json.loads(body)["requestId"] == headers["X-Request-Id"], path
        assert "X-Evil" not in headers and "Set-Cookie" not in headers, path
    registry = platform.invoker.metrics.registry
    for name in unsendable.values():
        labels = {"function": name, "outcome": "unhandled_error"}
        assert registry.get_sample_value("fnplane_invocations_total", labels) == 1


async def test_raw_path_and_query_are_passed_as_sent(client, base_url) -> None:
    _, _, body = await call(
        client, "GET", f"{base_url}/raw/a%20b/c%2Fd?x=%20y&plus=a+b&s=%25&t=%26"
    )
    data = json.loads(body)
    assert data["rawPath"] == "/raw/a%20b/c%2Fd"
    assert data["rawQueryString"] == "x=%20y&plus=a+b&s=%25&t=%26"
    assert data["query"] == {"x": [" y"], "plus": ["a b"], "s": ["%"], "t": ["&"]}


async def test_unknown_invocation_type_is_400(client, base_url) -> None:
    status, _, body = await call(
        client, "GET", f"{base_url}/text",
        headers={"X-Fnplane-Invocation-Type": "Bogus"},
    )  # fmt: skip
    assert status == 400 and "Bogus" in json.loads(body)["message"]


def test_http_error_status_must_be_a_real_status() -> None:
    with pytest.raises(ValueError, match="100 to 599"):
        HttpError("nope", status_code=999)


async def test_a_cached_route_gives_way_to_an_api_endpoint_added_later(
    client, start_platform
) -> None:
    """Static routes are remembered after their first match; an endpoint the
    API gains afterwards on that path still takes precedence, as before."""
    from aiohttp import web

    from fnplane.api import json_response

    app = App()

    @app.http("GET", "/report")
    def report(event, context):
        return "from the app"

    platform = await start_platform(app)
    url = f"http://127.0.0.1:{platform.port}/report"
    for _ in range(2):
        assert (await call(client, "GET", url))[2] == b"from the app"

    async def platform_report(request: web.BaseRequest, request_id: str):
        return json_response(200, {"from": "the platform"}, request_id)

    platform.api.add("GET", "/report", platform_report)
    status, _, body = await call(client, "GET", url)
    assert status == 200 and json.loads(body) == {"from": "the platform"}


async def test_post_root_with_a_target_reaches_the_api_even_after_the_app_route(
    client, start_platform
) -> None:
    """POST / is the app's until a request carries X-Amz-Target for a service
    the platform serves: that one never comes from the route cache."""
    app = App()

    @app.http("POST", "/")
    def root(event, context):
        return "app root"

    platform = await start_platform(app)

    async def service(target: str, payload: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"target": target}

    platform.api.add_target("Test.", service)
    url = f"http://127.0.0.1:{platform.port}/"
    for _ in range(2):
        assert (await call(client, "POST", url, data=b"{}"))[2] == b"app root"
    headers = {"X-Amz-Target": "Test.Do"}
    status, _, body = await call(client, "POST", url, data=b"{}", headers=headers)
    assert status == 200 and json.loads(body) == {"target": "Test.Do"}
    assert (await call(client, "POST", url, data=b"{}"))[2] == b"app root"


async def test_a_target_with_no_service_is_told_why_unless_the_app_has_post_root(
    client, start_platform
) -> None:
    """An AWS JSON call (boto3, ``fnplane executions``) to an app without state
    machines gets a 400 saying so rather than a 404 for ``/``; an app that
    serves POST / itself still receives such requests."""
    headers = {"X-Amz-Target": "AWSStepFunctions.ListStateMachines"}
    bare = await start_platform(App())
    status, _, body = await call(
        client, "POST", f"http://127.0.0.1:{bare.port}/", data=b"{}", headers=headers
    )
    assert status == 400
    assert json.loads(body)["__type"] == "UnknownOperationException"
    assert "defines no state machines" in json.loads(body)["message"]

    app = App()

    @app.http("POST", "/")
    def root(event, context):
        return "app root"

    served = await start_platform(app)
    reply = await call(
        client, "POST", f"http://127.0.0.1:{served.port}/", data=b"{}", headers=headers
    )
    assert reply[0] == 200 and reply[2] == b"app root"


async def test_extension_methods_on_an_any_route_are_not_remembered(
    client, start_platform
) -> None:
    """An ANY route answers every method, but only the standard ones enter the
    route cache, so clients cannot grow it without bound."""
    from fnplane.sources.web import HttpSource

    app = App()

    @app.http("ANY", "/any")
    def anything(event, context):
        return event.method

    platform = await start_platform(app)
    url = f"http://127.0.0.1:{platform.port}/any"
    for method in ("GET", "PURGE", "PROPFIND"):
        status, _, body = await call(client, method, url)
        assert status == 200 and body == method.encode()
    source = next(s for s in platform.sources if isinstance(s, HttpSource))
    assert set(source._static_routes) == {("GET", "/any")}


async def test_templated_routes_are_matched_every_time(client, base_url) -> None:
    """Routes with parameters are not cached: each request gets its own values."""
    for item in ("a", "b"):
        status, _, body = await call(client, "GET", f"{base_url}/items/{item}")
        assert status == 200 and json.loads(body)["item_id"] == item


async def test_a_route_added_after_start_wins_over_a_cached_any_route(
    client, start_platform
) -> None:
    """The route cache forgets what it knew when the table gains a route, so a
    GET route added later takes GET requests from the ANY route, as matching
    does."""
    app = App()

    @app.http("ANY", "/thing")
    def any_method(event, context):
        return "any"

    platform = await start_platform(app)
    url = f"http://127.0.0.1:{platform.port}/thing"
    assert (await call(client, "GET", url))[2] == b"any"

    @app.http("GET", "/thing")
    def get_only(event, context):
        return "get"

    assert (await call(client, "GET", url))[2] == b"get"
    assert (await call(client, "POST", url))[2] == b"any"
