"""JSONPath input and output processing: InputPath, Parameters, ResultSelector,
ResultPath, OutputPath and JSONPath-flavoured Assign.

A ``Scope`` is what a path can see: the state's data (``$``), the context
object (``$$``) and the workflow variables (``$name``). Failures raise
``StatesError("States.Runtime", ...)`` with the message AWS gives, without the
"An error occurred while executing the state ..." prefix, which the state
runner adds because only it knows the state and its entered event id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fnplane.workflows.errors import RUNTIME, StatesError
from fnplane.workflows.intrinsics import (
    evaluate_intrinsic,
    is_intrinsic,
    parse_intrinsic,
)
from fnplane.workflows.paths import JsonPath, PathError, parse_path, set_path
from fnplane.workflows.variables import Variables

_DOLLAR_SUFFIX = ".$"


@dataclass(slots=True)
class Scope:
    """What JSONPath and intrinsics resolve against, besides the data itself.

    ``context`` is a callable so the context object is built only when a path
    actually reads ``$$``.
    """

    context: Callable[[], Any]
    variables: Variables

    def root(self, path: JsonPath, data: Any) -> Any:
        """Return the value a path starts from: data, context or a variable."""
        if path.root == "$":
            return data
        if path.root == "$$":
            return self.context()
        return self.variables.get(path.root)


# One encoder for every call: ``json.dumps`` with options builds a new one.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact_json(value: Any) -> str:
    """Serialise as AWS does in messages and causes: compact, UTF-8."""
    return _COMPACT.encode(value)


def select(path_text: str, data: Any, scope: Scope) -> Any:
    """Evaluate an InputPath/OutputPath/ItemsPath style path.

    Raises:
        StatesError: ``States.Runtime`` when a definite path selects nothing.
    """
    if path_text == "$":
        return data
    path = parse_path(path_text)
    try:
        return path.select(scope.root(path, data))
    except PathError as exc:
        raise StatesError(RUNTIME, f"Invalid path '{path_text}' : {exc}") from exc


def select_field(path_text: str, data: Any, scope: Scope, field: str) -> Any:
    """Evaluate a path named in a field (``value.$``, ``ErrorPath``, ...).

    Raises:
        StatesError: ``States.Runtime`` naming the field when nothing matches.
    """
    path = parse_path(path_text)
    try:
        return path.select(scope.root(path, data))
    except PathError as exc:
        raise StatesError(
            RUNTIME,
            f"The JSONPath '{path_text}' specified for the field '{field}' could"
            f" not be found in the input '{compact_json(data)}'",
        ) from exc


def evaluate_value(expression: str, data: Any, scope: Scope, field: str) -> Any:
    """Evaluate the string of a ``key.$`` entry: a path or an intrinsic call."""
    if is_intrinsic(expression):

        def resolve(path: JsonPath) -> Any:
            return select_field(path.text, data, scope, field)

        return evaluate_intrinsic(parse_intrinsic(expression), resolve)
    return select_field(expression, data, scope, field)


def render(template: Any, data: Any, scope: Scope) -> Any:
    """Build a payload template (Parameters, ResultSelector, ItemSelector).

    Keys ending in ``.$`` take the value of their path or intrinsic, with the
    suffix dropped; nested objects and arrays are processed the same way.
    """
    if isinstance(template, dict):
        rendered: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(_DOLLAR_SUFFIX) and isinstance(value, str):
                rendered[key[:-2]] = evaluate_value(value, data, scope, key)
            else:
                rendered[key] = render(value, data, scope)
        return rendered
    if isinstance(template, list):
        return [render(item, data, scope) for item in template]
    return template


def apply_result_path(state_input: Any, result: Any, result_path: Any) -> Any:
    """Combine the state input with its result as ``ResultPath`` says.

    ``null`` discards the result and keeps the input; ``$`` (the default)
    replaces the input with the result.

    Raises:
        StatesError: ``States.ResultPathMatchFailure`` when the path cannot be
            placed into the input.
    """
    if result_path is None:
        return state_input
    if result_path == "$":
        return result
    try:
        return set_path(state_input, parse_path(result_path), result)
    except PathError as exc:
        raise StatesError(
            "States.ResultPathMatchFailure",
            f'Unable to apply step "{result_path}" to input'
            f" {compact_json(state_input)}",
        ) from exc


def assign_jsonpath(
    assign: Mapping[str, Any], data: Any, scope: Scope
) -> dict[str, Any]:
    """Evaluate a JSONPath ``Assign`` block; returns the new variable values.

    Every value is computed against the variables as they were before the
    state, so the order of the keys never matters (AWS documents this).
    """
    values: dict[str, Any] = {}
    for key, value in assign.items():
        if key.endswith(_DOLLAR_SUFFIX) and isinstance(value, str):
            values[key[:-2]] = evaluate_value(value, data, scope, key)
        else:
            values[key] = render(value, data, scope)
    return values
