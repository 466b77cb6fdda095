"""Field-level checks of one state: allowed fields, paths, intrinsics, Wait
timestamps, Map labels, Retry and Catch shapes.
"""

from __future__ import annotations

import re
from typing import Any

from fnplane.workflows.choice import comparison_operators, parse_timestamp
from fnplane.workflows.errors import DefinitionError
from fnplane.workflows.intrinsics import is_intrinsic, parse_intrinsic
from fnplane.workflows.paths import PathSyntaxError, parse_path

_COMMON = {"Type", "Comment", "QueryLanguage"}
_FLOW = {"Next", "End"}
_IO = {"InputPath", "OutputPath"}
_RESULT = {"ResultPath", "ResultSelector"}
_JSONATA = {"Output", "Assign"}
_ERRORS = {"Retry", "Catch"}
ALLOWED_FIELDS: dict[str, set[str]] = {
    "Pass": _COMMON | _FLOW | _IO | _JSONATA | {"Result", "ResultPath", "Parameters"},
    "Task": _COMMON
    | _FLOW
    | _IO
    | _RESULT
    | _JSONATA
    | _ERRORS
    | {
        "Resource",
        "Parameters",
        "Arguments",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
        "Credentials",
    },
    "Choice": _COMMON | _IO | _JSONATA | {"Choices", "Default"},
    "Wait": _COMMON
    | _FLOW
    | _IO
    | _JSONATA
    | {
        "Seconds",
        "Timestamp",
        "SecondsPath",
        "TimestampPath",
    },
    "Succeed": _COMMON | _IO | {"Output"},
    "Fail": _COMMON | {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _COMMON
    | _FLOW
    | _IO
    | _RESULT
    | _JSONATA
    | _ERRORS
    | {
        "Branches",
        "Parameters",
        "Arguments",
    },
    "Map": _COMMON
    | _FLOW
    | _IO
    | _RESULT
    | _JSONATA
    | _ERRORS
    | {
        "ItemProcessor",
        "Iterator",
        "ItemsPath",
        "Items",
        "ItemSelector",
        "Parameters",
        "ItemReader",
        "ResultWriter",
        "ItemBatcher",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "Label",
        "Arguments",
    },
}
_PATH_FIELDS = (
    "InputPath",
    "OutputPath",
    "ItemsPath",
    "SecondsPath",
    "TimestampPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
    "ErrorPath",
    "CausePath",
)
_TEMPLATE_FIELDS = ("Parameters", "ResultSelector", "ItemSelector", "Assign")
_WAIT_FIELDS = ("Seconds", "Timestamp", "SecondsPath", "TimestampPath")
_LABEL_FORBIDDEN = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")
_RULE_KEYS = {
    "Variable",
    "Next",
    "Comment",
    "Assign",
    "Output",
    "And",
    "Or",
    "Not",
    "Condition",
    "IsNull",
    "IsPresent",
    "IsNumeric",
    "IsString",
    "IsBoolean",
    "IsTimestamp",
    *comparison_operators(),
}


def check_state_fields(
    name: str, state: dict[str, Any], where: str, language: str
) -> None:
    """Validate the fields of one state (not its transitions).

    Raises:
        DefinitionError: an unknown field, a bad path, intrinsic, timestamp,
            label, retrier or catcher.
    """
    kind = state["Type"]
    if kind not in ALLOWED_FIELDS:
        choices = ", ".join(ALLOWED_FIELDS)
        raise DefinitionError(
            f"state {name!r} has unknown Type {kind!r} (valid: {choices})", where
        )
    unknown = sorted(set(state) - ALLOWED_FIELDS[kind])
    if unknown:
        raise DefinitionError(
            f"state {name!r} ({kind}) has unknown field(s) {unknown}", where
        )
    if language == "JSONPath":
        _check_paths(state, where)
    if kind == "Wait":
        _check_wait(name, state, where, language)
    elif kind == "Map":
        _check_label(state, where)
    elif kind == "Choice":
        _check_choices(name, state, where, language)
    for field in ("Retry", "Catch"):
        for index, entry in enumerate(state.get(field) or []):
            if not isinstance(entry, dict) or not isinstance(
                entry.get("ErrorEquals"), list
            ):
                raise DefinitionError(
                    f"each {field} entry of {name!r} needs an ErrorEquals list",
                    f"{where}/{field}[{index}]",
                )


def _check_paths(state: dict[str, Any], where: str) -> None:
    for field in _PATH_FIELDS:
        value = state.get(field)
        if isinstance(value, str):
            if field in ("ErrorPath", "CausePath") and is_intrinsic(value):
                _check_intrinsic(value, field, f"{where}/{field}")
            else:
                _check_path(value, field, f"{where}/{field}")
    result_path = state.get("ResultPath")
    if isinstance(result_path, str):
        _check_path(result_path, "ResultPath", f"{where}/ResultPath")
    for field in _TEMPLATE_FIELDS:
        if field in state:
            _check_template(state[field], f"{where}/{field}")


def _check_path(text: str, field: str, location: str) -> None:
    try:
        parse_path(text)
    except PathSyntaxError as exc:
        raise DefinitionError(
            f"The value for the field '{field}' must be a valid JSONPath ({exc})",
            location,
        ) from exc


def _check_intrinsic(text: str, field: str, location: str) -> None:
    try:
        parse_intrinsic(text)
    except PathSyntaxError as exc:
        raise DefinitionError(
            f"The value for the field '{field}' must be a valid intrinsic function"
            f" call ({exc})",
            location,
        ) from exc


def _check_template(template: Any, location: str) -> None:
    if isinstance(template, list):
        for item in template:
            _check_template(item, location)
        return
    if not isinstance(template, dict):
        return
    for key, value in template.items():
        if key.endswith(".$") and isinstance(value, str):
            try:
                parse_intrinsic(value) if is_intrinsic(value) else parse_path(value)
            except PathSyntaxError as exc:
                raise DefinitionError(
                    f"The value for the field '{key}' must be a valid JSONPath or a"
                    " valid intrinsic function call",
                    location,
                ) from exc
        else:
            _check_template(value, location)


def _check_wait(name: str, state: dict[str, Any], where: str, language: str) -> None:
    present = [field for field in _WAIT_FIELDS if field in state]
    if len(present) != 1:
        raise DefinitionError(
            f"Wait state {name!r} needs exactly one of {', '.join(_WAIT_FIELDS)}",
            where,
        )
    timestamp = state.get("Timestamp")
    is_expression = language == "JSONata" and str(timestamp).startswith("{%")
    if isinstance(timestamp, str) and not is_expression:
        if parse_timestamp(timestamp) is None:
            raise DefinitionError(
                "String does not match RFC3339 timestamp", f"{where}/Timestamp"
            )


def _check_label(state: dict[str, Any], where: str) -> None:
    if "Label" not in state:
        return
    label = state["Label"]
    if not isinstance(label, str) or not label:
        raise DefinitionError("Label cannot be empty", f"{where}/Label")
    if len(label) > 40:
        raise DefinitionError("Label cannot exceed 40 characters", f"{where}/Label")
    bad = _LABEL_FORBIDDEN.search(label)
    if bad:
        raise DefinitionError(
            f"Label contains invalid character: {bad.group()!r}", f"{where}/Label"
        )


def _check_choices(name: str, state: dict[str, Any], where: str, language: str) -> None:
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        raise DefinitionError(
            f"Choice state {name!r} needs a non-empty Choices list", where
        )
    for index, rule in enumerate(choices):
        if "Next" not in rule:
            raise DefinitionError(
                f"each rule of Choice state {name!r} needs Next",
                f"{where}/Choices[{index}]",
            )
        _check_rule(rule, f"{where}/Choices[{index}]", language)


def _check_rule(rule: Any, location: str, language: str) -> None:
    if not isinstance(rule, dict):
        raise DefinitionError("a choice rule must be an object", location)
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        raise DefinitionError(f"choice rule has unknown field(s) {unknown}", location)
    for key in ("And", "Or"):
        for inner in rule.get(key, []):
            _check_rule(inner, location, language)
    if "Not" in rule:
        _check_rule(rule["Not"], location, language)
    if language == "JSONPath" and isinstance(rule.get("Variable"), str):
        _check_path(rule["Variable"], "Variable", f"{location}/Variable")
