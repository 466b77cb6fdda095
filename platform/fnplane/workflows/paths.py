"""JSONPath as Step Functions evaluates it (the Jayway dialect).

Step Functions distinguishes *definite* paths (``$.a.b[0]``), which select one
value and fail when it is missing, from *indefinite* ones (``$[*]``, ``$..x``,
slices, unions, filters), which always select a list, empty when nothing
matches. Reference paths (``ResultPath``) are definite paths that may create
the objects they walk through.

Paths are parsed once and cached; evaluation walks plain dicts and lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fnplane.workflows.errors import WorkflowError

_NAME = re.compile(r"[^.\[\]()\s]+")
_FILTER_COMPARE = re.compile(
    r"^\s*@((?:\.[\w$-]+|\[\d+\]|\['[^']*'\])*)\s*"
    r"(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$"
)


class PathError(WorkflowError):
    """A path selected nothing, or could not be applied to the value."""


class PathSyntaxError(WorkflowError, ValueError):
    """A path is not valid JSONPath."""


@dataclass(frozen=True, slots=True)
class Step:
    """One segment of a parsed path: its kind and argument."""

    kind: str  # field, index, wild, slice, union, descend, filter
    arg: Any = None


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed JSONPath: where it starts (``$``, a variable) and its steps."""

    text: str
    root: str  # "$" for the input, "$$" for the context, or a variable name
    steps: tuple[Step, ...]
    definite: bool

    def select(self, value: Any) -> Any:
        """Apply the path to ``value``; raise ``PathError`` when a definite path
        finds nothing."""
        if self.definite:
            return _select_definite(self, value)
        return _select_all(self.steps, value)


def _select_definite(path: JsonPath, value: Any) -> Any:
    current = value
    last = len(path.steps) - 1
    shown = "$"
    for position, step in enumerate(path.steps):
        if step.kind == "field":
            if not isinstance(current, dict) or step.arg not in current:
                _raise_missing(path, shown, step.arg, position == last, current)
            current = current[step.arg]
            shown += f"['{step.arg}']"
        else:
            index = step.arg
            if not isinstance(current, list) or not -len(current) <= index < len(
                current
            ):
                raise PathError(f"Index out of bounds when evaluating path {shown}")
            current = current[index]
            shown += f"[{index}]"

    return current


def _raise_missing(
    path: JsonPath, shown: str, name: str, is_leaf: bool, current: Any
) -> None:
    if not isinstance(current, dict) and current is not None:
        raise PathError(
            f"Expected to find an object with property ['{name}'] in path {shown}"
            f" but found '{_java_type(current)}'"
        )
    if is_leaf:
        raise PathError(f"No results for path: {shown}['{name}']")
    raise PathError(f"Missing property in path {shown}['{name}']")


def _java_type(value: Any) -> str:
    if isinstance(value, list):
        return "net.minidev.json.JSONArray"
    if isinstance(value, str):
        return "java.lang.String"
    if isinstance(value, bool):
        return "java.lang.Boolean"
    if isinstance(value, int | float):
        return "java.lang.Number"
    return "null"


def _select_all(steps: tuple[Step, ...], value: Any) -> list[Any]:
    matches = [value]
    for step in steps:
        matches = [found for item in matches for found in _apply(step, item)]
    return matches


def _apply(step: Step, item: Any) -> list[Any]:
    kind, arg = step.kind, step.arg
    if kind == "field":
        return [item[arg]] if isinstance(item, dict) and arg in item else []
    if kind == "index":
        if isinstance(item, list) and -len(item) <= arg < len(item):
            return [item[arg]]
        return []
    if kind == "wild":
        return _children(item)
    if kind == "slice":
        return item[slice(*arg)] if isinstance(item, list) else []
    if kind == "union":
        return [found for part in arg for found in _apply(part, item)]
    if kind == "descend":
        return [found for node in _descendants(item) for found in _apply(arg, node)]
    return [child for child in _children(item) if arg(child)]


def _children(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return list(item.values())
    if isinstance(item, list):
        return list(item)
    return []


def _descendants(item: Any) -> list[Any]:
    found = [item]
    for child in _children(item):
        if isinstance(child, dict | list):
            found.extend(_descendants(child))
    return found


@lru_cache(maxsize=4096)
def parse_path(text: str) -> JsonPath:
    """Parse a JSONPath (``$...``, ``$$...`` or ``$variable...``); cached.

    Raises:
        PathSyntaxError: the text is not a path Step Functions accepts.
    """
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathSyntaxError(f"path {text!r} must start with '$'")
    if text.startswith("$$"):
        root, rest = "$$", text[2:]
    else:
        match = re.match(r"\$([A-Za-z_][\w]*)?", text)
        assert match is not None
        root, rest = (match.group(1) or "$"), text[match.end() :]
    steps = _parse_steps(text, rest)
    definite = all(step.kind in ("field", "index") for step in steps)

    return JsonPath(text, root, tuple(steps), definite)


def _parse_steps(text: str, rest: str) -> list[Step]:
    steps: list[Step] = []
    position = 0
    while position < len(rest):
        step, position = _parse_step(text, rest, position)
        steps.append(step)
    return steps


def _parse_step(text: str, rest: str, position: int) -> tuple[Step, int]:
    if rest.startswith("..", position):
        inner, end = _parse_step(text, rest, position + 1)
        if inner.kind not in ("field", "wild"):
            inner, end = _parse_bracket(text, rest, position + 2)
        return Step("descend", inner), end
    if rest.startswith(".*", position):
        return Step("wild"), position + 2
    if rest[position] == ".":
        match = _NAME.match(rest, position + 1)
        if not match:
            raise PathSyntaxError(f"path {text!r} has an empty name")
        return Step("field", match.group()), match.end()
    if rest[position] == "[":
        return _parse_bracket(text, rest, position)
    raise PathSyntaxError(f"path {text!r} is not valid JSONPath")


def _parse_bracket(text: str, rest: str, position: int) -> tuple[Step, int]:
    close = _find_close(text, rest, position)
    inside = rest[position + 1 : close].strip()
    if inside.startswith("?(") and inside.endswith(")"):
        return Step("filter", _compile_filter(text, inside[2:-1])), close + 1
    if inside == "*":
        return Step("wild"), close + 1
    parts = [_bracket_part(text, part.strip()) for part in _split_union(inside)]
    if len(parts) == 1:
        return parts[0], close + 1
    return Step("union", tuple(parts)), close + 1


def _find_close(text: str, rest: str, position: int) -> int:
    depth, quote = 0, ""
    for index in range(position, len(rest)):
        char = rest[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return index
    raise PathSyntaxError(f"path {text!r} has an unclosed '['")


def _split_union(inside: str) -> list[str]:
    parts, current, quote = [], "", ""
    for char in inside:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def _bracket_part(text: str, part: str) -> Step:
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "'\"":
        return Step("field", part[1:-1])
    if ":" in part:
        bounds = [int(bound) if bound.strip() else None for bound in part.split(":")]
        return Step("slice", tuple(bounds))
    try:
        return Step("index", int(part))
    except ValueError:
        raise PathSyntaxError(f"path {text!r} has an invalid subscript") from None


def _compile_filter(text: str, expression: str) -> Callable[[Any], bool]:
    for joiner, combine in (("||", any), ("&&", all)):
        if joiner in expression:
            parts = [_compile_filter(text, part) for part in expression.split(joiner)]
            return lambda item: combine(part(item) for part in parts)
    match = _FILTER_COMPARE.match(expression.strip().strip("()"))
    if not match:
        raise PathSyntaxError(f"path {text!r} has an unsupported filter")
    inner = parse_path("$" + match.group(1))
    operator, literal = match.group(2), match.group(3)
    expected = _filter_literal(literal) if literal else None

    def test(item: Any) -> bool:
        try:
            found = inner.select(item)
        except PathError:
            return False
        if operator is None:
            return True
        return _compare(found, operator, expected)

    return test


def _filter_literal(literal: str) -> Any:
    literal = literal.strip()
    if literal[0] in "'\"":
        return literal[1:-1]
    keywords = {"true": True, "false": False, "null": None}
    if literal in keywords:
        return keywords[literal]
    return float(literal) if "." in literal else int(literal)


def _compare(found: Any, operator: str, expected: Any) -> bool:
    try:
        if operator == "==":
            return bool(found == expected)
        if operator == "!=":
            return bool(found != expected)
        if operator == "<":
            return bool(found < expected)
        if operator == "<=":
            return bool(found <= expected)
        if operator == ">":
            return bool(found > expected)
        return bool(found >= expected)
    except TypeError:
        return False


def set_path(target: Any, path: JsonPath, value: Any) -> Any:
    """Return a copy of ``target`` with ``value`` placed at reference ``path``.

    Objects missing along the path are created; the input is never mutated,
    so a value shared with history or another branch stays intact.

    Raises:
        PathError: the path walks into something that is not an object.
    """
    if not path.steps:
        return value
    if not path.definite or path.root != "$":
        raise PathError(f"{path.text} is not a reference path")
    return _set(target, path.steps, value)


def _set(target: Any, steps: tuple[Step, ...], value: Any) -> Any:
    step, remaining = steps[0], steps[1:]
    if step.kind == "index":
        if not isinstance(target, list) or not -len(target) <= step.arg < len(target):
            raise PathError(f"cannot index {step.arg} into a non-array value")
        copy: Any = list(target)
    else:
        if target is None:
            target = {}
        if not isinstance(target, dict):
            raise PathError(f"cannot set field '{step.arg}' on a non-object value")
        copy = dict(target)
    child = copy.get(step.arg) if isinstance(copy, dict) else copy[step.arg]
    copy[step.arg] = _set(child, remaining, value) if remaining else value

    return copy
