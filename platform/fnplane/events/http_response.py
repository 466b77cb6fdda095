"""What an HTTP handler returns, turned into status, headers and body.

The rules follow API Gateway's HTTP API (payload 2.0): a dict with
``statusCode`` is taken as the response itself (``headers``, ``cookies``,
``body``, ``isBase64Encoded``; a string body defaults to JSON); any other
JSON value is a 200 with that JSON.
fnplane adds plain Python shapes: ``str`` is text, ``bytes`` is binary,
``None`` is 204, and ``Response`` says everything explicitly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fnplane.events.http_request import decode_body

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"
# RFC 9110: a field name is a token; a field value holds no control
# character but the tab. A line break in either would end the header early
# (aiohttp refuses it at send time, when the connection can only be dropped).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ResponseError(TypeError):
    """A handler returned something that cannot become an HTTP response."""


@dataclass(slots=True)
class Response:
    """An explicit HTTP response: status, headers, cookies and body.

    ``body`` may be ``bytes``, ``str`` (sent as UTF-8) or any JSON value
    (serialised, with ``content_type`` defaulting to JSON). ``cookies`` are
    ``Set-Cookie`` header values.
    """

    body: Any = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    content_type: str | None = None


@dataclass(slots=True)
class HttpReply:
    """A handler's result reduced to what goes on the wire."""

    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str] = field(default_factory=list)


def to_reply(result: Any) -> HttpReply:
    """Turn a handler's return value into an ``HttpReply``; ``ResponseError`` if
    it has no HTTP form."""
    if type(result) is dict and "statusCode" not in result:
        # The common case first: isinstance against the Mapping ABC costs
        # more than everything else here.
        return HttpReply(200, {"Content-Type": JSON_TYPE}, dump_json(result))
    if result is None:
        return HttpReply(204, {}, b"")
    if isinstance(result, str):
        return HttpReply(200, {"Content-Type": TEXT_TYPE}, result.encode("utf-8"))
    if isinstance(result, bytes | bytearray | memoryview):
        return HttpReply(200, {"Content-Type": BINARY_TYPE}, bytes(result))
    if isinstance(result, Response):
        return _from_response(result)
    if isinstance(result, Mapping) and "statusCode" in result:
        return _from_proxy_dict(result)
    return HttpReply(200, {"Content-Type": JSON_TYPE}, dump_json(result))


# allow_nan=False: NaN and Infinity are not JSON, and clients reject them. One
# shared encoder (it keeps no state between calls): json.dumps with keyword
# arguments builds a new JSONEncoder per call, 0.75 µs of a 2.8 µs small dump.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def dump_json(value: Any) -> bytes:
    """Serialise a result as JSON bytes, or explain which value cannot be."""
    try:
        return _JSON_ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ResponseError(
            f"the handler returned a {type(value).__name__} that cannot be sent "
            f"as JSON: {exc}"
        ) from exc


def _from_response(response: Response) -> HttpReply:
    headers = {str(name): str(value) for name, value in response.headers.items()}
    body, default_type = _body_bytes(response.body)
    content_type = response.content_type or default_type
    if content_type and "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = content_type
    return _checked(
        HttpReply(_status(response.status), headers, body, list(response.cookies))
    )


def _from_proxy_dict(result: Mapping[str, Any]) -> HttpReply:
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ",".join(str(v) for v in values)
    raw_body = result.get("body")
    default_type: str | None
    if result.get("isBase64Encoded"):
        try:
            body = decode_body(raw_body, True)
        except ValueError as exc:
            raise ResponseError(str(exc)) from exc
        default_type = BINARY_TYPE
    else:
        body, default_type = _body_bytes(raw_body)
        if isinstance(raw_body, str):
            # Lambda handlers put json.dumps(...) in "body" far more often
            # than prose; JSON is the default API Gateway users rely on.
            default_type = JSON_TYPE
    if body and "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = default_type or JSON_TYPE
    cookies = [str(cookie) for cookie in result.get("cookies") or []]
    return _checked(HttpReply(_status(result["statusCode"]), headers, body, cookies))


def _checked(reply: HttpReply) -> HttpReply:
    """``reply`` if HTTP can carry its headers and cookies; else ResponseError."""
    for name, value in reply.headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise ResponseError(f"{name!r} is not a valid HTTP header name")
        if FORBIDDEN_IN_VALUE.search(value):
            raise ResponseError(
                f"header {name!r} holds a line break or control character"
            )
    for cookie in reply.cookies:
        if FORBIDDEN_IN_VALUE.search(cookie):
            raise ResponseError(
                f"cookie {cookie[:40]!r} holds a line break or control character"
            )
    return reply


def _body_bytes(body: Any) -> tuple[bytes, str | None]:
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode("utf-8"), TEXT_TYPE
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), BINARY_TYPE
    return dump_json(body), JSON_TYPE


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ResponseError(
            f"statusCode must be an integer from 100 to 599, got {value!r}"
        )
    return value
