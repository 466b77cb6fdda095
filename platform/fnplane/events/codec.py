"""How queued events are stored: one JSON document and a kind.

The async queue persists every event before it is accepted, so it must be
JSON. Three kinds keep their type across the store:

- ``http``: an ``HttpRequest`` is stored as its API Gateway payload 2.0
  (``dict(event)``) and rebuilt as an ``HttpRequest``;
- ``s3``: an ``S3Event`` is stored as its file version (path, key, size,
  inode, mtime) and rebuilt as one; the notification is derived on demand;
- ``json``: anything else JSON can hold; the handler gets what ``json.loads``
  returns (tuples become lists, dict keys strings).

The handler receives the decoded document on every attempt, the first one
included, so an event looks the same whether or not the platform restarted
in between, and a handler that mutates its event cannot change a retry's.
The one exception, ``reusable_event``, is invisible to the handler: a file
event's first attempt gets the ``S3Event`` as submitted, equal to its
decoded form, sparing a decode (about 6 µs) a file.
"""

from __future__ import annotations

import json
from typing import Any

from fnplane.errors import FnplaneError
from fnplane.events.http_request import HttpRequest, decode_body
from fnplane.events.s3 import S3Event

JSON_KIND = "json"
HTTP_KIND = "http"
S3_KIND = "s3"
# Made once: json.dumps given any option builds a new encoder at every call.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
COMPACT_ASCII_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


class EventEncodingError(FnplaneError, TypeError):
    """An asynchronous event cannot be stored as JSON."""


def encode_event(event: Any) -> tuple[str, str]:
    """Return ``(kind, json_text)`` for ``event``; raise ``EventEncodingError``."""
    if isinstance(event, HttpRequest):
        kind, document = HTTP_KIND, dict(event)
    elif isinstance(event, S3Event):
        kind, document = S3_KIND, event.to_payload()
    else:
        kind, document = JSON_KIND, event
    # A file path may hold surrogates (a name that is not UTF-8): escape
    # them, as the store keeps UTF-8 text.
    encoder = COMPACT_ASCII_JSON if kind == S3_KIND else COMPACT_JSON
    try:
        text = encoder.encode(document)
    except (TypeError, ValueError) as exc:
        raise EventEncodingError(
            f"an asynchronous event must be JSON-serialisable to be stored "
            f"durably: {exc}; pass dicts, lists, strings, numbers, booleans or None"
        ) from exc
    return kind, text


def reusable_event(event: Any) -> Any | None:
    """``event`` itself if its first attempt may receive it as submitted,
    without decoding the stored document: an ``S3Event``, which decodes to
    an equal event and which its submitter (the file source) keeps no hold
    on. Other events may be changed by their submitter after ``submit``
    returns: None, and they are decoded."""
    return event if isinstance(event, S3Event) else None


def decode_event(kind: str, text: str) -> Any:
    """The event a handler receives for a stored ``(kind, json_text)``."""
    document = json.loads(text)
    if kind == HTTP_KIND:
        return http_request_from_payload(document)
    if kind == S3_KIND:
        return S3Event.from_payload(document)
    return document


def request_payload(kind: str, text: str) -> Any:
    """The event as a destination record's ``requestPayload`` holds it."""
    document = json.loads(text)
    if kind == S3_KIND:
        return S3Event.from_payload(document).notification
    return document


def http_request_from_payload(payload: dict[str, Any]) -> HttpRequest:
    """Rebuild an ``HttpRequest`` from its API Gateway payload 2.0."""
    context = payload.get("requestContext", {})
    http = context.get("http", {})
    headers = list(payload.get("headers", {}).items())
    if payload.get("cookies"):
        headers.append(("cookie", "; ".join(payload["cookies"])))
    return HttpRequest(
        method=http.get("method", "GET"),
        path=payload.get("rawPath", "/"),
        query_string=payload.get("rawQueryString", ""),
        headers=headers,
        body=decode_body(payload.get("body"), payload.get("isBase64Encoded", False)),
        path_params=payload.get("pathParameters") or {},
        route_key=payload.get("routeKey", "$default"),
        request_id=context.get("requestId", ""),
        source_ip=http.get("sourceIp", ""),
        protocol=http.get("protocol", "HTTP/1.1"),
        received_at_ms=context.get("timeEpoch"),
    )
