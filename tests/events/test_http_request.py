"""The HTTP request event's JSON parsing: strict, and json.loads's encodings."""

from __future__ import annotations

import json

import pytest

from fnplane.errors import BadRequestError
from fnplane.events.http_request import HttpRequest, parse_json
from fnplane.events.http_response import ResponseError, dump_json


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, 2]}',
        '{"a": [1, 2]}'.encode("utf-16"),
        '{"a": [1, 2]}'.encode("utf-32-le"),
        b'\xef\xbb\xbf{"a": [1, 2]}',
        '{"a": [1, 2]}',
    ],
)
def test_bytes_and_text_parse_as_json_loads_would(raw: str | bytes) -> None:
    """The shared decoder keeps json.loads's encoding detection for bytes."""
    assert parse_json(raw, "body") == json.loads(raw) == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('\ufeff{"a": 1}', "Unexpected UTF-8 BOM"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b"[1, -Infinity]", "-Infinity is not valid JSON"),
        (b'{"a": 1} trailing', "Extra data"),
        (b"\xff\xfe\x00", "not valid"),
    ],
)
def test_what_is_not_json_is_a_bad_request(raw: str | bytes, reason: str) -> None:
    """A BOM in text, NaN, Infinity and trailing data are refused with the reason."""
    with pytest.raises(BadRequestError, match=reason):
        parse_json(raw, "body")


def test_request_json_reads_the_body_each_time() -> None:
    """Two calls give equal values, not one shared object."""
    request = HttpRequest(method="POST", path="/", body=b'{"a": [1]}')
    first, second = request.json(), request.json()
    assert first == second == {"a": [1]} and first is not second


def test_dump_json_keeps_unicode_and_refuses_nan() -> None:
    """The shared encoder writes UTF-8 as is and refuses what is not JSON."""
    assert dump_json({"name": "Zoë"}) == '{"name": "Zoë"}'.encode()
    with pytest.raises(ResponseError, match="cannot be sent as JSON"):
        dump_json({"x": float("nan")})
    with pytest.raises(ResponseError, match="set"):
        dump_json({1, 2})
