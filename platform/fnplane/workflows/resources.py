"""Task ``Resource`` values: which function a Task state invokes, and how.

Three spellings reach a function: its registered name (``"resize"``), a
Lambda function ARN (``arn:aws:lambda:REGION:ACCOUNT:function:NAME``, matched
by NAME) and the optimised Lambda integration ``arn:aws:states:::lambda:invoke``
whose ``FunctionName`` parameter names it and whose result Step Functions
wraps in the Lambda Invoke response (``Payload``, ``StatusCode``, ...).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
_LAMBDA_ARN = re.compile(
    r"^arn:[\w-]+:lambda:[\w-]*:\d*:function:(?P<name>[\w-]+)(:[\w$-]+)?$"
)
_INTEGRATION = re.compile(r"^arn:[\w-]+:states:::(?P<service>[^:]+):(?P<action>.+)$")


@dataclass(frozen=True, slots=True)
class TaskResource:
    """A parsed Task resource.

    ``kind`` is ``function`` (a name or Lambda ARN, ``function_name`` set),
    ``lambda_invoke`` (the integration; the name comes from the parameters)
    or ``unsupported`` (another AWS service integration).
    """

    text: str
    kind: str
    function_name: str | None = None
    pattern: str | None = None  # .sync, .waitForTaskToken, ...


def parse_resource(text: str) -> TaskResource:
    """Classify a Task state's ``Resource`` string."""
    match = _LAMBDA_ARN.match(text)
    if match:
        return TaskResource(text, "function", match.group("name"))
    match = _INTEGRATION.match(text)
    if match:
        action, _, pattern = match.group("action").partition(".")
        if match.group("service") == "lambda" and action == "invoke":
            return TaskResource(text, "lambda_invoke", pattern=pattern or None)
        return TaskResource(text, "unsupported", pattern=pattern or None)
    if text.startswith("arn:"):
        return TaskResource(text, "unsupported")
    return TaskResource(text, "function", text)


def function_name_from(value: Any) -> str | None:
    """Turn a ``FunctionName`` parameter (name, ARN or partial ARN) into a name."""
    if not isinstance(value, str):
        return None
    match = _LAMBDA_ARN.match(value)
    if match:
        return match.group("name")
    if ":function:" in value:
        return value.split(":function:", 1)[1].split(":", 1)[0]
    return value


def wrap_invoke_result(
    payload: Any, payload_size: int, log_type: str | None = None
) -> dict[str, Any]:
    """Wrap a function's result as the ``lambda:invoke`` integration returns it.

    The shape is Step Functions' (Lambda Invoke response with the SDK's HTTP
    metadata), so definitions written for AWS that read ``$.Payload`` or
    ``$.StatusCode`` work unchanged.
    """
    wrapped = _wrap(payload, payload_size)
    if log_type == "Tail":
        # fnplane keeps logs in its own pipeline; the tail is reported empty.
        wrapped["LogResult"] = ""
        metadata = wrapped["SdkHttpMetadata"]
        metadata["AllHttpHeaders"]["X-Amz-Log-Result"] = [""]
        metadata["HttpHeaders"]["X-Amz-Log-Result"] = ""
    return wrapped


def _wrap(payload: Any, payload_size: int) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    trace_id = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
    date = formatdate(usegmt=True)
    length = str(payload_size)
    return {
        "ExecutedVersion": "$LATEST",
        "Payload": payload,
        "SdkHttpMetadata": {
            "AllHttpHeaders": {
                "X-Amz-Executed-Version": ["$LATEST"],
                "x-amzn-Remapped-Content-Length": ["0"],
                "Connection": ["keep-alive"],
                "x-amzn-RequestId": [request_id],
                "Content-Length": [length],
                "Date": [date],
                "X-Amzn-Trace-Id": [trace_id],
                "Content-Type": ["application/json"],
            },
            "HttpHeaders": {
                "Connection": "keep-alive",
                "Content-Length": length,
                "Content-Type": "application/json",
                "Date": date,
                "X-Amz-Executed-Version": "$LATEST",
                "x-amzn-Remapped-Content-Length": "0",
                "x-amzn-RequestId": request_id,
                "X-Amzn-Trace-Id": trace_id,
            },
            "HttpStatusCode": 200,
        },
        "SdkResponseMetadata": {"RequestId": request_id},
        "StatusCode": 200,
    }
