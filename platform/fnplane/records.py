"""The destination record: what an asynchronous event's outcome looks like.

It follows the record Lambda sends to its own destinations, so consumers
written for Lambda read it unchanged: ``requestContext`` (request id,
function ARN, condition, ``approximateInvokeCount``), ``requestPayload`` (the
original event), and after an attempt ``responseContext`` and
``responsePayload`` (the result, or ``errorMessage``/``errorType``/
``stackTrace``). fnplane adds its own timestamps and ids under ``fnplane``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fnplane.destinations import iso_ms
from fnplane.events.codec import request_payload
from fnplane.eventstore import QueuedEvent, now_ms
from fnplane.invoke import Outcome

if TYPE_CHECKING:
    from fnplane.function import Function
    from fnplane.invoke import InvocationResult

RECORD_VERSION = "1.0"
SUCCESS = "Success"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
EXECUTED_VERSION = "$LATEST"


def outcome_record(
    function: Function,
    event: QueuedEvent,
    condition: str,
    result: InvocationResult | None,
) -> dict[str, Any]:
    """The destination record of ``event`` ending with ``condition``."""
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "timestamp": iso_ms(now_ms()),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": f"{function.arn}:{EXECUTED_VERSION}",
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": request_payload(event.kind, event.payload),
    }
    if result is not None:
        record["responseContext"] = response_context(result)
        record["responsePayload"] = response_payload(result)
    record["fnplane"] = {
        "eventId": event.event_id,
        "function": function.name,
        "attempts": event.attempts,
        "acceptedAt": iso_ms(event.accepted_at_ms),
        "firstAttemptAt": _iso_or_none(event.first_attempt_at_ms),
        "lastAttemptAt": _iso_or_none(event.last_attempt_at_ms),
        "outcome": result.outcome.value if result is not None else None,
    }
    return record


def response_context(result: InvocationResult) -> dict[str, Any]:
    """``statusCode``, ``executedVersion`` and, on failure, ``functionError``."""
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": EXECUTED_VERSION}
    if not result.ok:
        handled = result.outcome is Outcome.HANDLED_ERROR
        context["functionError"] = "Handled" if handled else "Unhandled"
    return context


def response_payload(result: InvocationResult) -> Any:
    """The handler's value as JSON would carry it, or Lambda's error body."""
    if result.ok:
        return json.loads(json.dumps(result.value, default=str))
    assert result.error is not None
    return result.error.to_lambda()


def _iso_or_none(epoch_ms: int | None) -> str | None:
    return iso_ms(epoch_ms) if epoch_ms is not None else None
