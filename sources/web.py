"""The HTTP push source: an aiohttp server that invokes functions per request.

It runs aiohttp's low-level server with fnplane's own route table rather
than ``web.Application``: the table already exists for registration checks,
and skipping the application's router and middleware chain keeps the
per-request cost close to bare aiohttp. The platform's API (invoke, health,
functions, metrics) is served on the same port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from fnplane.api import (
    EVENT_ID_HEADER,
    REQUEST_ID_HEADER,
    error_response,
    json_response,
)
from fnplane.errors import FnplaneError
from fnplane.events.http_request import HttpRequest
from fnplane.events.http_response import (
    JSON_TYPE,
    HttpReply,
    ResponseError,
    dump_json,
    to_reply,
)
from fnplane.invoke import InvocationResult, Outcome, new_request_id
from fnplane.routes import METHODS

if TYPE_CHECKING:
    from fnplane.api import PlatformApi
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)

INVOCATION_TYPE_HEADER = "X-Fnplane-Invocation-Type"
THROTTLE_RETRY_AFTER_S = "1"
# How long a request still running after the grace period gets to end once
# it is cancelled, before its connection is closed regardless.
ABANDON_AFTER_S = 0.1
# The payload's requestContext.http.protocol for the usual versions, built
# once rather than formatted for every request.
PROTOCOLS = {HttpVersion11: "HTTP/1.1", HttpVersion10: "HTTP/1.0"}
# A matched route: the function, its path parameters, the payload's routeKey.
Route = tuple[str, dict[str, str], str]


class HttpSource:
    """Serves the app's HTTP routes and the platform API on one port."""

    _loop: asyncio.AbstractEventLoop  # set by start(), before any request

    def __init__(
        self, invoker: Invoker, api: PlatformApi, reuse_port: bool = False
    ) -> None:
        self.invoker = invoker
        self.reuse_port = reuse_port
        self.api = api
        self.settings = invoker.settings
        self.routes = invoker.app.routes
        self.draining = False
        self.port: int | None = None
        # (method, path) of static routes already matched once -> the route:
        # one dict lookup instead of the API's and the table's matching
        # (0.9 µs a request). Forgotten when the API or the table changes.
        self._static_routes: dict[tuple[str, str], Route] = {}
        self._forget_routes()
        self._max_body_bytes = self.settings.max_body_bytes
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        """Bind the port and start serving."""
        self._loop = asyncio.get_running_loop()
        server = PlatformServer(self.handle, request_factory=self._make_request)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        listener = bind_socket(self.settings.host, self.settings.port, self.reuse_port)
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()
        logger.info("source.http_started", host=self.settings.host, port=self.port)

    def stop_intake(self) -> None:
        """Answer new requests with 503 from now on; in-flight ones finish."""
        self.draining = True

    async def stop(self, grace_s: float) -> None:
        """Close the listener and every connection, after ``grace_s`` at most:
        a request still running then is cancelled and its connection closed."""
        if self._runner is not None:
            server = self._runner.server
            if server is not None:
                # The connections first, within our grace: the runner's own
                # cleanup would wait up to its 60 s default for a running
                # handler, and aiohttp reads a timeout of 0 as no timeout.
                # Idle keep-alive connections close at once (pre_shutdown),
                # rather than holding the shutdown for its whole timeout.
                server.pre_shutdown()
                await server.shutdown(max(grace_s, ABANDON_AFTER_S))
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request to a function or to the platform API."""
        request_id = new_request_id()
        if self.draining:
            return error_response(
                503,
                "the platform is shutting down; retry on another node",
                request_id,
                Connection="close",
                **{"Retry-After": "1"},
            )
        method = request.method
        path = request.path
        if (
            self._api_generation != self.api.generation
            or self._routes_generation != self.routes.generation
        ):
            self._forget_routes()
        route = self._static_routes.get((method, path))
        if route is None:
            found = await self._route_or_answer(request, method, path, request_id)
            if isinstance(found, web.StreamResponse):
                return found
            route = found

        function, path_params, route_key = route
        try:
            body = await request.read()
        except HTTPRequestEntityTooLarge:
            return self._too_large(request_id)
        event = self._event(request, body, path_params, route_key, request_id)
        invocation_type = request.headers.get(INVOCATION_TYPE_HEADER)
        if invocation_type is None or invocation_type == "RequestResponse":
            result = await self.invoker.invoke(
                function, event, request_id=request_id, marshal=self._to_response
            )
            if result.outcome is Outcome.SUCCESS:
                response: web.Response = result.value
                response.headers[REQUEST_ID_HEADER] = request_id
                return response
            return self._failure_response(result)
        if invocation_type == "Event":
            await self.invoker.invoke_async(
                function,
                event,
                request_id=request_id,
                event_id=request.headers.get(EVENT_ID_HEADER),
            )
            return json_response(202, {"requestId": request_id}, request_id)
        return error_response(
            400,
            f"{INVOCATION_TYPE_HEADER} must be RequestResponse or Event, "
            f"got {invocation_type!r}",
            request_id,
        )

    def _forget_routes(self) -> None:
        self._static_routes.clear()
        self._api_generation = self.api.generation
        self._routes_generation = self.routes.generation

    async def _route_or_answer(
        self, request: web.BaseRequest, method: str, path: str, request_id: str
    ) -> Route | web.StreamResponse:
        """The route for a request the static route cache does not hold, or the
        answer when there is none (the platform API's, a 404, a 405)."""
        api_handler = self.api.match(request)
        if api_handler is not None:
            try:
                return await api_handler(request, request_id)
            except HTTPRequestEntityTooLarge:
                # An endpoint that reads the body without a limit answer of
                # its own (the API key check, AWS JSON services) answers as a
                # function route does, rather than with aiohttp's plain text.
                return self._too_large(request_id)

        match = self.routes.match(method, path)
        if match.function is None:
            if match.allowed:
                return error_response(
                    405,
                    f"method {method} is not allowed on {path}",
                    request_id,
                    Allow=", ".join(match.allowed),
                )
            return error_response(404, f"no route for {path}", request_id)

        route = (match.function, match.path_params, match.route_key)
        # A static route's answer depends on the method and path alone, except
        # on POST / where an X-Amz-Target header reaches the API instead.
        # Known methods only: an ANY route would let made-up methods grow it.
        cacheable = not match.path_params and method in METHODS
        if cacheable and not (method == "POST" and path == "/"):
            self._static_routes[(method, path)] = route
        return route

    def _to_response(self, value: Any) -> web.Response:
        """The handler's value as an HTTP response, within the size limit."""
        if type(value) is dict and "statusCode" not in value:
            # The usual result, a JSON object, goes to the response without
            # an HttpReply in between (0.5 µs a request).
            body = dump_json(value)
            self._check_size(body)
            return web.Response(body=body, content_type=JSON_TYPE)
        reply = to_reply(value)
        self._check_size(reply.body)
        return reply_response(reply)

    def _check_size(self, body: bytes) -> None:
        limit = self.settings.max_body_bytes
        if len(body) > limit:
            raise ResponseError(
                f"response body is {len(body)} bytes, over the {limit} byte "
                f"limit (Lambda's 6 MB by default)"
            )

    def _event(
        self,
        request: web.BaseRequest,
        body: bytes,
        path_params: dict[str, str],
        route_key: str,
        request_id: str,
    ) -> HttpRequest:
        # API Gateway hands over the path and query exactly as sent.
        raw_path, _, raw_query = request.raw_path.partition("?")
        version = request.version
        protocol = PROTOCOLS.get(version) or f"HTTP/{version.major}.{version.minor}"
        return HttpRequest(
            method=request.method,
            path=raw_path,
            query_string=raw_query,
            headers=request.headers,
            body=body,
            path_params=path_params,
            route_key=route_key,
            request_id=request_id,
            source_ip=request.remote or "",
            protocol=protocol,
            received_at_ms=int(time.time() * 1000),
        )

    def _failure_response(self, result: InvocationResult) -> web.Response:
        request_id = result.request_id
        error = result.error
        assert error is not None
        if result.outcome is Outcome.THROTTLED:
            return error_response(
                429,
                error.message,
                request_id,
                **{"Retry-After": THROTTLE_RETRY_AFTER_S},
            )
        if result.outcome is Outcome.TIMEOUT:
            return error_response(504, error.message, request_id)
        if error.status_code is not None:
            return error_response(error.status_code, error.message, request_id)
        return self._server_error(result)

    def _server_error(self, result: InvocationResult) -> web.Response:
        body: dict[str, Any] = {
            "message": "Internal Server Error",
            "requestId": result.request_id,
        }
        if self.settings.debug and result.error is not None:
            body.update(result.error.to_lambda())
        return json_response(500, body, result.request_id)

    def _too_large(self, request_id: str) -> web.Response:
        limit = self.settings.max_body_bytes
        return error_response(
            413,
            f"request body is over the {limit} byte limit",
            request_id,
            Connection="close",
        )

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        # The low-level server's default request factory caps bodies at 1 MB;
        # the platform's limit (6 MB by default, like Lambda's) applies instead.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            self._loop,
            client_max_size=self._max_body_bytes,
        )


class PlatformServer(web.Server):
    """aiohttp's low-level server, its connections handled by
    ``PlatformRequestHandler``."""

    def __call__(self) -> RequestHandler:
        # As web.Server.__call__ does, with our class: aiohttp has no option
        # for it (tests/sources/test_web.py fails if these names change).
        return PlatformRequestHandler(self, loop=self._loop, **self._kwargs)


class PlatformRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what never reaches
    ``HttpSource.handle`` (a request line or header over 8,190 bytes, a
    malformed header) as the platform answers every error: a JSON body and
    the ``X-Request-Id`` header, not aiohttp's plain text."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The error response; the connection is closed after it."""
        if request.writer.output_size > 0:
            # Part of a response went out already: only closing is left.
            return super().handle_error(request, status, exc, message)
        request_id = new_request_id()
        client_gone = self.transport is None or self.transport.is_closing()
        if client_gone and (status < 500 or isinstance(exc, ConnectionError)):
            # The client closed the connection (say, halfway through its
            # body): nobody is left to answer, and nothing failed here.
            logger.info(
                "http.client_disconnected", request_id=request_id,
                remote=request.remote, error=str(exc),
            )  # fmt: skip
            status, detail = 400, "the client closed the connection"
        elif status >= 500:
            logger.error(
                "http.server_error", status=status, request_id=request_id,
                exc_info=exc,
            )  # fmt: skip
            detail = HTTPStatus(status).phrase
        else:
            # The client's mistake: worth a line, not a traceback.
            detail = message or HTTPStatus(status).phrase
            logger.warning(
                "http.bad_request", status=status, request_id=request_id,
                error=detail, remote=request.remote,
            )  # fmt: skip
        response = error_response(status, detail, request_id)
        response.force_close()
        return response


def reply_response(reply: HttpReply) -> web.Response:
    """An aiohttp response from a handler's reply."""
    headers: CIMultiDict[str] | dict[str, str] = reply.headers
    if reply.cookies:
        headers = CIMultiDict(reply.headers)
        for cookie in reply.cookies:
            headers.add("Set-Cookie", cookie)
    return web.Response(status=reply.status, body=reply.body, headers=headers)


class ListenError(FnplaneError, OSError):
    """The HTTP server cannot bind its address (in use, or not this host's)."""


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets worker processes share it.

    Off by default: two platforms started on one port by mistake should fail
    loudly, not split the traffic between them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror}; another process "
            f"(another fnplane run?) may hold it: choose one with --port"
        ) from exc
    listener.listen(1024)
    listener.setblocking(False)
    return listener
