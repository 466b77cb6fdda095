"""JSONata evaluation for states with ``"QueryLanguage": "JSONata"``.

Any string of the form ``{% expression %}`` in Arguments, Output, Assign and
the other JSONata fields is evaluated with ``$states`` (input, result,
errorOutput, context) and the workflow variables bound; every other value is
a literal. Failures raise ``States.QueryEvaluationError`` with AWS's wording,
which names the field (``Output/result``) and the expression.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonata
from jsonata.utils import Utils

from fnplane.workflows import intrinsics
from fnplane.workflows.errors import QUERY_EVALUATION_ERROR, StatesError
from fnplane.workflows.variables import Variables

_OPEN, _CLOSE = "{%", "%}"
# The functions Step Functions adds to JSONata, as its documentation lists them.
_AWS_FUNCTIONS = {
    "partition": lambda array, size: intrinsics.FUNCTIONS["States.ArrayPartition"](
        array, size
    ),
    "range": lambda start, end, step: _sequence(
        intrinsics.FUNCTIONS["States.ArrayRange"](start, end, step)
    ),
    "hash": lambda value, algorithm: intrinsics.FUNCTIONS["States.Hash"](
        value, algorithm
    ),
    "random": lambda *seed: intrinsics.random_fraction(*seed),
    "uuid": lambda: intrinsics.FUNCTIONS["States.UUID"](),
    "parse": lambda text: json.loads(text),
}
_SUPPORTED = (dict, list, str, int, float, bool, type(None))


def _sequence(values: list[Any]) -> Any:
    # $range yields a JSONata sequence, and a sequence of one is its item.
    return values[0] if len(values) == 1 else values


def is_expression(value: Any) -> bool:
    """Tell whether a value is a ``{% ... %}`` JSONata expression string."""
    return (
        isinstance(value, str)
        and value.startswith(_OPEN)
        and value.endswith(_CLOSE)
        and len(value) >= 4
    )


def expression_text(value: str) -> str:
    """Return the expression inside ``{% ... %}``, trimmed."""
    return value[2:-2].strip()


@lru_cache(maxsize=2048)
def compile_expression(text: str) -> jsonata.Jsonata:
    """Parse a JSONata expression once; cached.

    Raises:
        jsonata.JException: the expression does not parse.
    """
    expression = jsonata.Jsonata(text)
    # Keep JSON null distinct from JSONata's "undefined" (no result).
    expression.set_output_convert_nulls(False)
    for name, function in _AWS_FUNCTIONS.items():
        expression.register_lambda(name, function)
    return expression


def _null_safe(value: Any) -> Any:
    return Utils.NULL_VALUE if value is None else value


def evaluate(
    text: str, states: dict[str, Any], variables: Variables, field: str
) -> Any:
    """Evaluate one JSONata expression for the named field.

    Raises:
        StatesError: ``States.QueryEvaluationError`` when it throws, yields
            nothing, or yields a function.
    """
    bindings = {name: _null_safe(value) for name, value in variables.visible().items()}
    bindings["states"] = states
    try:
        result = compile_expression(text).evaluate(None, bindings)
    except Exception as exc:  # noqa: BLE001 - any JSONata failure is the user's
        code = getattr(exc, "error", None)
        message = f"{code}: {exc}" if code else str(exc)
        raise _failure(
            text, field, f"threw an error during evaluation. {message}"
        ) from exc
    if result is None:
        raise _failure(text, field, "returned nothing (undefined).")
    if result is Utils.NULL_VALUE:
        return None
    converted = Utils.convert_nulls(result)
    if not isinstance(converted, _SUPPORTED):
        raise _failure(text, field, "returned an unsupported result type.")
    return converted


def _failure(text: str, field: str, what: str) -> StatesError:
    return StatesError(
        QUERY_EVALUATION_ERROR,
        f"The JSONata expression '{text}' specified for the field '{field}' {what}",
    )


def render(
    template: Any, states: dict[str, Any], variables: Variables, field: str
) -> Any:
    """Evaluate every ``{% %}`` string inside a value (objects, arrays, strings)."""
    if is_expression(template):
        return evaluate(expression_text(template), states, variables, field)
    if isinstance(template, dict):
        return {
            key: render(value, states, variables, f"{field}/{key}")
            for key, value in template.items()
        }
    if isinstance(template, list):
        return [render(item, states, variables, field) for item in template]
    return template
