"""The platform's own HTTP API, served beside the app's routes.

- ``POST /2015-03-31/functions/{name}/invocations``: the Lambda Invoke API,
  wire-compatible so ``boto3.client("lambda", endpoint_url=...)`` works.
- ``GET /health``, ``GET /functions``, ``GET /metrics`` (Prometheus text).

With ``api_key`` set, every endpoint but ``/health`` asks for the key as
``Authorization: Bearer KEY``, ``X-Api-Key: KEY``, or AWS SigV4 signed with
the key as the secret access key (any access key id), which is how boto3
and the AWS CLI sign.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog
from aiohttp import web

from fnplane.errors import BadRequestError
from fnplane.events.http_request import parse_json
from fnplane.events.http_response import ResponseError, dump_json
from fnplane.function import FUNCTION_ARN_PREFIX
from fnplane.invoke import InvocationResult, Outcome
from fnplane.logs import tail
from fnplane.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fnplane.sigv4 import SignatureError, verify_sigv4

if TYPE_CHECKING:
    from fnplane.invoke import Invoker

ApiHandler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]
# An AWS JSON 1.0 service: (X-Amz-Target action, JSON body) -> (status, body).
TargetHandler = Callable[[str, Any], Awaitable[tuple[int, dict[str, Any]]]]

logger = structlog.get_logger(__name__)

INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
LAMBDA_ARN_MARKER = ":function:"
REQUEST_ID_HEADER = "X-Request-Id"
# An asynchronous invocation carrying this header is accepted once per id
# within the dedup window, so a client may resend after a timeout.
EVENT_ID_HEADER = "X-Fnplane-Event-Id"
JSON_TYPE = "application/json"
AWS_JSON_TYPE = "application/x-amz-json-1.0"


def json_response(
    status: int, body: dict[str, Any], request_id: str, **headers: str
) -> web.Response:
    """A JSON response carrying the request id header."""
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": JSON_TYPE, REQUEST_ID_HEADER: request_id, **headers},
    )


def error_response(
    status: int, message: str, request_id: str, **headers: str
) -> web.Response:
    """A JSON error body with the message and request id."""
    return json_response(
        status, {"message": message, "requestId": request_id}, request_id, **headers
    )


def aws_error(
    status: int, error_type: str, message: str, request_id: str, **extra: Any
) -> web.Response:
    """An error the AWS SDKs parse: the type in a header and in the body."""
    return json_response(
        status,
        {"Type": "User", "message": message, **extra},
        request_id,
        **{"X-Amzn-ErrorType": error_type, "X-Amzn-RequestId": request_id},
    )


def function_name_from(raw: str) -> str:
    """The function name from a name, a full ARN or a partial ARN."""
    name = unquote(raw)
    if LAMBDA_ARN_MARKER in name:
        name = name.split(LAMBDA_ARN_MARKER, 1)[1]
    return name.split(":", 1)[0]


class PlatformApi:
    """Dispatches the platform's endpoints; ``match`` is None for app routes."""

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker
        self.api_key = invoker.settings.api_key
        self._static: dict[tuple[str, str], ApiHandler] = {
            ("GET", "/health"): self.health,
            ("GET", "/functions"): self._guarded(self.functions),
            ("GET", "/metrics"): self._guarded(self.metrics),
        }
        self._invoke = self._guarded(self.invoke)
        self._targets: dict[str, TargetHandler] = {}
        self._aws_json = self._guarded(self.aws_json)
        self._static_paths = {path for _, path in self._static}
        # Bumped by every endpoint or service added, so callers that cache
        # what ``match`` said (the HTTP source) know to forget it.
        self.generation = 0

    def reserves(self, path: str) -> bool:
        """True for paths the platform serves itself, closed to app routes."""
        return path in self._static_paths or path.startswith(INVOKE_PREFIX)

    async def _method_not_allowed(
        self, request: web.BaseRequest, request_id: str
    ) -> web.Response:
        allowed = [m for m, path in self._static if path == request.path]
        return error_response(
            405,
            f"method {request.method} is not allowed on {request.path}",
            request_id,
            Allow=", ".join(allowed),
        )

    def match(self, request: web.BaseRequest) -> ApiHandler | None:
        """The handler for a platform endpoint, or None to try the app's routes."""
        path = request.path
        found = self._static.get((request.method, path))
        if found is not None:
            return found
        if path in self._static_paths:
            return self._method_not_allowed
        if request.method != "POST":
            return None
        if path.startswith(INVOKE_PREFIX):
            return self._invoke
        if path == "/" and "X-Amz-Target" in request.headers:
            # With no service to answer, an app's own POST / route still
            # wins; without one, the caller learns why no service answers.
            if self._targets or not self.invoker.app.routes.match("POST", "/").function:
                return self._aws_json
        return None

    def add_target(self, prefix: str, handler: TargetHandler) -> None:
        """Serve an AWS JSON 1.0 service whose ``X-Amz-Target`` starts with
        ``prefix`` (``POST /``, as boto3 sends it)."""
        self._targets[prefix] = handler
        self.generation += 1

    async def aws_json(self, request: web.BaseRequest, request_id: str) -> web.Response:
        """Dispatch an AWS JSON 1.0 request to the service its target names."""
        target = request.headers["X-Amz-Target"]
        handler = next(
            (h for prefix, h in self._targets.items() if target.startswith(prefix)),
            None,
        )
        why = "" if self._targets else " (the app defines no state machines)"
        message = f"no service answers {target!r}{why}"
        status, body = 400, {"__type": "UnknownOperationException", "message": message}
        if handler is not None:
            try:
                payload = parse_payload(await request.read())
            except ValueError as exc:
                status, body = 400, {"__type": "SerializationException",
                                     "message": str(exc)}  # fmt: skip
            else:
                status, body = await handler(target, payload)
        return web.Response(
            status=status,
            body=json.dumps(body).encode(),
            headers={
                "Content-Type": AWS_JSON_TYPE,
                "X-Amzn-RequestId": request_id,
                REQUEST_ID_HEADER: request_id,
            },
        )

    def add(self, method: str, path: str, handler: ApiHandler) -> None:
        """Serve another platform endpoint (workflows add theirs)."""
        self._static[(method, path)] = self._guarded(handler)
        self._static_paths.add(path)
        self.generation += 1

    async def health(self, request: web.BaseRequest, request_id: str) -> web.Response:
        """Liveness: 200 with the number of functions and invocations in flight."""
        body = {
            "status": "ok",
            "functions": len(self.invoker.app.functions),
            "in_flight": self.invoker.in_flight,
        }
        return json_response(200, body, request_id)

    async def functions(
        self, request: web.BaseRequest, request_id: str
    ) -> web.Response:
        """Every function with its options and triggers."""
        listed = [f.describe() for f in self.invoker.app.functions.values()]
        return json_response(200, {"functions": listed}, request_id)

    async def metrics(self, request: web.BaseRequest, request_id: str) -> web.Response:
        """The Prometheus text exposition of the platform's metrics."""
        return web.Response(
            body=self.invoker.metrics.render(),
            headers={
                "Content-Type": METRICS_CONTENT_TYPE,
                REQUEST_ID_HEADER: request_id,
            },
        )

    async def invoke(self, request: web.BaseRequest, request_id: str) -> web.Response:
        """The Lambda Invoke API: RequestResponse, Event or DryRun."""
        path = request.path
        if not path.endswith(INVOKE_SUFFIX):
            return aws_error(
                404, "UnknownOperationException", f"no API at {path}", request_id
            )
        name = function_name_from(path[len(INVOKE_PREFIX) : -len(INVOKE_SUFFIX)])
        if name not in self.invoker.app.functions:
            return aws_error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {FUNCTION_ARN_PREFIX}{name}",
                request_id,
            )
        invocation_type = request.headers.get(
            "X-Amz-Invocation-Type", "RequestResponse"
        )
        if invocation_type not in INVOCATION_TYPES:
            return aws_error(
                400,
                "InvalidParameterValueException",
                f"X-Amz-Invocation-Type must be one of {INVOCATION_TYPES}, "
                f"got {invocation_type!r}",
                request_id,
            )
        try:
            payload = parse_payload(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return aws_error(
                413,
                "RequestTooLargeException",
                "Request must be smaller than "
                f"{self.invoker.settings.max_body_bytes} bytes for the InvokeFunction "
                "operation",
                request_id,
            )
        except ValueError as exc:
            return aws_error(
                400, "InvalidRequestContentException", str(exc), request_id
            )

        headers = {"X-Amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
        if invocation_type == "DryRun":
            return web.Response(
                status=204, headers={REQUEST_ID_HEADER: request_id, **headers}
            )
        if invocation_type == "Event":
            await self.invoker.invoke_async(
                name,
                payload,
                request_id=request_id,
                event_id=request.headers.get(EVENT_ID_HEADER),
            )
            return web.Response(
                status=202, headers={REQUEST_ID_HEADER: request_id, **headers}
            )
        capture = request.headers.get("X-Amz-Log-Type") == "Tail"
        result = await self.invoker.invoke(
            name, payload, request_id=request_id, capture_log=capture,
            marshal=self._result_json,
        )  # fmt: skip
        return invoke_response(result, headers)

    def _result_json(self, value: Any) -> bytes:
        """A result as the Invoke API's JSON body, within the payload limit."""
        body = dump_json(value)
        limit = self.invoker.settings.max_body_bytes
        if len(body) > limit:
            raise ResponseError(
                f"Response payload size ({len(body)} bytes) exceeded maximum "
                f"allowed payload size ({limit} bytes)."
            )
        return body

    def _guarded(self, handler: ApiHandler) -> ApiHandler:
        if self.api_key is None:
            return handler
        key = self.api_key

        async def guarded(
            request: web.BaseRequest, request_id: str
        ) -> web.StreamResponse:
            body = await request.read()
            problem = authorization_problem(request, body, key)
            if problem is not None:
                return aws_error(403, "AccessDeniedException", problem, request_id)
            return await handler(request, request_id)

        return guarded


def authorization_problem(
    request: web.BaseRequest, body: bytes, key: str
) -> str | None:
    """Why the request is refused, or None when it carries the shared key (or a
    SigV4 signature made with it)."""
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("AWS4-HMAC-SHA256"):
        try:
            verify_sigv4(
                request.method, request.raw_path, dict(request.headers), body, key
            )
        except SignatureError as exc:
            logger.warning("api.bad_signature", reason=str(exc))
            return f"SigV4 signature refused: {exc}"
        return None
    offered = request.headers.get("X-Api-Key") or authorization.removeprefix("Bearer ")
    if offered and hmac.compare_digest(offered.encode(), key.encode()):
        return None
    return (
        "missing or wrong API key: send Authorization: Bearer KEY, X-Api-Key: KEY, "
        "or sign with the key as the secret access key"
    )


def parse_payload(body: bytes) -> Any:
    """The Invoke API payload: JSON, or ``{}`` when empty (as Lambda passes it)."""
    if not body.strip():
        return {}
    try:
        return parse_json(body, "the payload")
    except BadRequestError as exc:
        raise ValueError(f"Could not parse request body into json: {exc}") from exc


def invoke_response(result: InvocationResult, headers: dict[str, str]) -> web.Response:
    """The Invoke API's answer: 200 with the result or the function error."""
    headers = {REQUEST_ID_HEADER: result.request_id, **headers}
    if result.outcome is Outcome.THROTTLED:
        assert result.error is not None
        return aws_error(
            429,
            "TooManyRequestsException",
            result.error.message,
            result.request_id,
            Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
        )
    if result.log is not None:
        headers["X-Amz-Log-Result"] = base64.b64encode(
            tail(result.log).encode()
        ).decode()
    if result.ok:
        headers["Content-Type"] = "application/json"
        return web.Response(status=200, body=result.value, headers=headers)
    assert result.error is not None
    handled = result.outcome is Outcome.HANDLED_ERROR
    headers["X-Amz-Function-Error"] = "Handled" if handled else "Unhandled"
    headers["Content-Type"] = "application/json"
    body = json.dumps(result.error.to_lambda()).encode()
    return web.Response(status=200, body=body, headers=headers)
