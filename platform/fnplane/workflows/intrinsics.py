"""Intrinsic functions (``States.Format(...)`` and friends) for JSONPath states.

An intrinsic is parsed once into a call tree whose arguments are literals,
paths or nested calls, then evaluated against the state's input, the context
object and the variables. Results follow what AWS prints, including its
Java-isms: ``States.Format`` renders objects as ``{a=1, b=[]}`` and
``States.MathAdd`` rounds each operand half-up before adding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fnplane.workflows.errors import INTRINSIC_FAILURE, StatesError
from fnplane.workflows.paths import JsonPath, PathSyntaxError, parse_path

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_FUNCTION = re.compile(r"States\.[A-Za-z0-9]+")
_PATH_END = re.compile(r"[,)\s]")
_ESCAPABLE = "'{}\\"
_HASHES = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed intrinsic call: the function name and its argument trees."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal argument (string, number, boolean or null)."""

    value: Any


Resolver = Callable[[JsonPath], Any]


def is_intrinsic(text: str) -> bool:
    """Tell whether a ``.$`` value is an intrinsic call rather than a path."""
    return text.startswith("States.")


@lru_cache(maxsize=2048)
def parse_intrinsic(text: str) -> Call:
    """Parse an intrinsic call; cached.

    Raises:
        PathSyntaxError: the text is not a well-formed call to a known function.
    """
    parser = _Parser(text)
    call = parser.call()
    parser.skip_spaces()
    if parser.position != len(text):
        raise PathSyntaxError(f"unexpected text after the call in {text!r}")
    return call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, why: str) -> PathSyntaxError:
        return PathSyntaxError(f"invalid intrinsic function {self.text!r}: {why}")

    def skip_spaces(self) -> None:
        while self.position < len(self.text) and self.text[self.position] == " ":
            self.position += 1

    def call(self) -> Call:
        match = _FUNCTION.match(self.text, self.position)
        if not match or match.group() not in FUNCTIONS:
            raise self.fail("unknown function")
        self.position = match.end()
        if self.text[self.position : self.position + 1] != "(":
            raise self.fail("expected '('")
        self.position += 1
        args: list[Any] = []
        self.skip_spaces()
        if self.text[self.position : self.position + 1] == ")":
            self.position += 1
            return Call(match.group(), ())
        while True:
            self.skip_spaces()
            args.append(self.argument())
            self.skip_spaces()
            char = self.text[self.position : self.position + 1]
            self.position += 1
            if char == ")":
                return Call(match.group(), tuple(args))
            if char != ",":
                raise self.fail("expected ',' or ')'")

    def argument(self) -> Any:
        rest = self.text[self.position :]
        if rest.startswith("'"):
            return Literal(self.string())
        if rest.startswith("States."):
            return self.call()
        if rest.startswith("$"):
            end = _PATH_END.search(self.text, self.position)
            stop = end.start() if end else len(self.text)
            path = self.text[self.position : stop]
            self.position = stop
            return parse_path(path)
        for word, value in (("true", True), ("false", False), ("null", None)):
            if rest.startswith(word):
                self.position += len(word)
                return Literal(value)
        number = _NUMBER.match(self.text, self.position)
        if not number:
            raise self.fail(f"unexpected argument at position {self.position}")
        self.position = number.end()
        literal = number.group()
        is_float = number.group(1) or number.group(2)
        return Literal(float(literal) if is_float else int(literal))

    def string(self) -> str:
        # Only \' \{ \} \\ are escapes; \{ and \} stay escaped so States.Format
        # can tell a literal brace from a placeholder.
        chars: list[str] = []
        self.position += 1
        while self.position < len(self.text):
            char = self.text[self.position]
            if char == "\\":
                following = self.text[self.position + 1 : self.position + 2]
                if following not in _ESCAPABLE or not following:
                    raise self.fail(f"illegal escape '\\{following}'")
                chars.append(following if following in "'\\" else "\\" + following)
                self.position += 2
                continue
            if char == "'":
                self.position += 1
                return "".join(chars)
            chars.append(char)
            self.position += 1
        raise self.fail("unterminated string")


def evaluate_intrinsic(call: Call, resolve: Resolver) -> Any:
    """Evaluate a parsed call, resolving path arguments with ``resolve``.

    Raises:
        StatesError: ``States.IntrinsicFailure`` for bad arguments.
    """
    args = [_argument(arg, resolve) for arg in call.args]
    try:
        return FUNCTIONS[call.name](*args)
    except StatesError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, binascii.Error) as exc:
        raise StatesError(
            INTRINSIC_FAILURE, f"Invalid arguments in {call.name}: {exc}"
        ) from exc


def _argument(arg: Any, resolve: Resolver) -> Any:
    if isinstance(arg, Literal):
        return arg.value
    if isinstance(arg, Call):
        return evaluate_intrinsic(arg, resolve)
    return resolve(arg)


def _format(template: str, *values: Any) -> str:
    pieces = re.split(r"(\\[{}]|\{\})", template)
    if sum(piece == "{}" for piece in pieces) != len(values):
        raise StatesError(
            INTRINSIC_FAILURE,
            "The number of arguments does not match the number of placeholders",
        )
    remaining = iter(values)
    out = [
        java_text(next(remaining)) if piece == "{}" else piece.lstrip("\\")
        for piece in pieces
    ]
    return "".join(out)


def java_text(value: Any) -> str:
    """Render a value as AWS's Java runtime prints it inside ``States.Format``."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{key}={java_text(item)}" for key, item in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(java_text(item) for item in value) + "]"
    return json.dumps(value)


def _string_to_json(text: str) -> Any:
    if not isinstance(text, str):
        raise TypeError("argument must be a string")
    return json.loads(text) if text.strip() else None


def _json_to_string(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _array_partition(array: list[Any], size: int) -> list[list[Any]]:
    _need_array(array)
    if not _is_int(size) or size <= 0:
        raise ValueError("chunk size must be a positive integer")
    size = int(size)
    return [array[start : start + size] for start in range(0, len(array), size)]


def _array_range(start: int, end: int, step: int) -> list[int]:
    if not all(_is_int(value) for value in (start, end, step)) or step == 0:
        raise ValueError("start, end and step must be integers, step non-zero")
    stop = int(end) + (1 if step > 0 else -1)
    values = list(range(int(start), stop, int(step)))
    if len(values) > 1000:
        raise ValueError("the range has more than 1000 items")
    return values


def _array_get_item(array: list[Any], index: int) -> Any:
    _need_array(array)
    if not _is_int(index) or index < 0:
        raise ValueError("index must be a non-negative integer")
    return array[int(index)]


def _array_unique(array: list[Any]) -> list[Any]:
    _need_array(array)
    unique: list[Any] = []
    for item in array:
        if not any(_same(item, seen) for seen in unique):
            unique.append(item)
    return unique


def _same(first: Any, second: Any) -> bool:
    return type(first) is type(second) and first == second


def _array_contains(array: list[Any], value: Any) -> bool:
    _need_array(array)
    return any(_same(item, value) for item in array)


def _need_array(value: Any) -> None:
    if not isinstance(value, list):
        raise TypeError(f"expected an array but got {_json_to_string(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _base64_encode(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("argument must be a string")
    return base64.b64encode(text.encode()).decode()


def _base64_decode(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("argument must be a string")
    return base64.b64decode(text.encode(), validate=True).decode()


def _hash(data: Any, algorithm: str) -> str:
    if algorithm not in _HASHES:
        choices = ", ".join(_HASHES)
        raise ValueError(f"unknown algorithm {algorithm!r}; use one of {choices}")
    text = data if isinstance(data, str) else _json_to_string(data)
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _json_merge(first: Any, second: Any, deep: Any) -> dict[str, Any]:
    if not isinstance(first, dict) or not isinstance(second, dict):
        raise TypeError("both arguments must be JSON objects")
    if deep is not False:
        raise ValueError("only a shallow merge (false) is supported by AWS")
    return {**first, **second}


def _math_random(start: Any, end: Any, seed: Any = None) -> int:
    if not all(_is_number(value) for value in (start, end)):
        raise ValueError("start and end must be numbers")
    generator = random.Random(seed) if seed is not None else random
    return generator.randrange(int(start), int(end))


def random_fraction(seed: Any = None) -> float:
    """Return a random float in [0, 1), seeded when a seed is given."""
    generator = random.Random(seed) if seed is not None else random
    return generator.random()


def _java_round(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("arguments must be numbers")
    return math.floor(value + 0.5)


def _math_add(first: Any, second: Any) -> int:
    return _java_round(first) + _java_round(second)


def _string_split(text: str, delimiters: str) -> list[str]:
    if not isinstance(text, str) or not isinstance(delimiters, str):
        raise TypeError("arguments must be strings")
    pattern = "[" + re.escape(delimiters) + "]+" if delimiters else None
    parts = re.split(pattern, text) if pattern else [text]
    return [part for part in parts if part]


def _array(*values: Any) -> list[Any]:
    return list(values)


def _array_length(array: list[Any]) -> int:
    _need_array(array)
    return len(array)


def _uuid() -> str:
    return str(uuid.uuid4())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "States.Format": _format,
    "States.StringToJson": _string_to_json,
    "States.JsonToString": _json_to_string,
    "States.Array": _array,
    "States.ArrayPartition": _array_partition,
    "States.ArrayContains": _array_contains,
    "States.ArrayRange": _array_range,
    "States.ArrayGetItem": _array_get_item,
    "States.ArrayLength": _array_length,
    "States.ArrayUnique": _array_unique,
    "States.Base64Encode": _base64_encode,
    "States.Base64Decode": _base64_decode,
    "States.Hash": _hash,
    "States.JsonMerge": _json_merge,
    "States.MathRandom": _math_random,
    "States.MathAdd": _math_add,
    "States.StringSplit": _string_split,
    "States.UUID": _uuid,
}
