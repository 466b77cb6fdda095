"""Choice rules: the comparison operators, And/Or/Not and the type tests.

As in AWS, a comparison whose operand has the wrong type is simply false (a
string is never ``NumericEquals`` anything), and ``IsNull: false`` holds for
every value that is not null. A missing ``Variable`` fails with
``States.Runtime`` except under ``IsPresent``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from fnplane.workflows.dataflow import Scope, select
from fnplane.workflows.errors import StatesError

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}
_KINDS = ("String", "Numeric", "Boolean", "Timestamp")
TYPE_TESTS = (
    "IsNull",
    "IsPresent",
    "IsNumeric",
    "IsString",
    "IsBoolean",
    "IsTimestamp",
)


def comparison_operators() -> list[str]:
    """Return every comparison operator name, literal and ``...Path`` forms."""
    names = [kind + test for kind in _KINDS for test in _ORDER]
    names = [name for name in names if name not in _NOT_OPERATORS]
    names.append("StringMatches")
    return names + [name + "Path" for name in names if name != "StringMatches"]


_NOT_OPERATORS = {
    "BooleanLessThan",
    "BooleanGreaterThan",
    "BooleanLessThanEquals",
    "BooleanGreaterThanEquals",
}


def parse_timestamp(text: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp as Step Functions accepts it, or None."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        return None
    normalised = text.replace("Z", "+00:00")
    if "." in normalised:
        head, tail = normalised.split(".", 1)
        digits = re.match(r"\d+", tail)
        assert digits is not None
        fraction = digits.group()[:6].ljust(6, "0")
        normalised = f"{head}.{fraction}{tail[digits.end() :]}"
    try:
        return datetime.fromisoformat(normalised)
    except ValueError:
        return None


def evaluate_rule(rule: dict[str, Any], data: Any, scope: Scope) -> bool:
    """Tell whether a choice rule (or nested boolean rule) matches ``data``."""
    if "And" in rule:
        return all(evaluate_rule(inner, data, scope) for inner in rule["And"])
    if "Or" in rule:
        return any(evaluate_rule(inner, data, scope) for inner in rule["Or"])
    if "Not" in rule:
        return not evaluate_rule(rule["Not"], data, scope)
    name = _operator_of(rule)
    expected = rule[name]
    if name == "IsPresent":
        return bool(_is_present(rule["Variable"], data, scope) == expected)
    value = select(rule["Variable"], data, scope)
    if name in TYPE_TESTS:
        return bool(_type_test(name, value) == expected)
    if name.endswith("Path"):
        expected = select(expected, data, scope)
        name = name[: -len("Path")]
    return compare(name, value, expected)


def _operator_of(rule: dict[str, Any]) -> str:
    for key in rule:
        if key not in ("Variable", "Next", "Comment", "Assign", "Output"):
            return key
    raise KeyError("choice rule has no operator")


def _is_present(path_text: str, data: Any, scope: Scope) -> bool:
    try:
        found = select(path_text, data, scope)
    except StatesError:
        return False
    # An indefinite path that matches nothing selects [] and is not present.
    return found != [] or "[" not in path_text and ".." not in path_text


def _type_test(name: str, value: Any) -> bool:
    if name == "IsNull":
        return value is None
    if name == "IsNumeric":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "IsString":
        return isinstance(value, str)
    if name == "IsBoolean":
        return isinstance(value, bool)
    return parse_timestamp(value) is not None


def compare(name: str, value: Any, expected: Any) -> bool:
    """Apply a literal comparison operator such as ``NumericLessThan``."""
    if name == "StringMatches":
        return isinstance(value, str) and _wildcard(expected).match(value) is not None
    kind = next(kind for kind in _KINDS if name.startswith(kind))
    test = _ORDER[name[len(kind) :]]
    if kind == "Numeric":
        if not _is_number(value) or not _is_number(expected):
            return False
        return test(value, expected)
    if kind == "String":
        if not isinstance(value, str) or not isinstance(expected, str):
            return False
        return test(value, expected)
    if kind == "Boolean":
        return (
            isinstance(value, bool)
            and isinstance(expected, bool)
            and test(value, expected)
        )
    first, second = parse_timestamp(value), parse_timestamp(expected)
    if first is None or second is None:
        return False
    return test(first, second)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@lru_cache(maxsize=512)
def _wildcard(pattern: str) -> re.Pattern[str]:
    # '*' matches any run of characters; '\*' is a literal star and '\\' a
    # literal backslash, as the ASL specification defines StringMatches.
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts) + r"\Z", re.DOTALL)
