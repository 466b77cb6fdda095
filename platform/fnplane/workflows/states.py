"""Handlers of the states that do no work of their own: Pass, Choice, Wait,
Succeed and Fail.

A handler receives the ``StateRun`` and returns ``(next state, output)``;
``None`` as the next state ends the program.
"""

from __future__ import annotations

import math
from typing import Any

from fnplane.workflows import dataflow, query
from fnplane.workflows.choice import evaluate_rule, parse_timestamp
from fnplane.workflows.errors import (
    NO_CHOICE_MATCHED,
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    StatesError,
)
from fnplane.workflows.runner import StateRun
from fnplane.workflows.stateio import (
    after_input_path,
    assign_only,
    effective_input,
    finish,
    output_path,
    scope,
    states_binding,
)

# AWS refuses waits longer than a year (the Standard execution limit).
MAX_WAIT_S = 366 * 24 * 3600


async def run_pass(run: StateRun) -> tuple[str | None, Any]:
    """Pass: the input (or ``Result``) becomes the output, reshaped."""
    if run.jsonata:
        output = finish(run, None, jsonata_default=run.input)
    else:
        data = effective_input(run)
        result = run.state["Result"] if "Result" in run.state else data
        output = finish(run, result)
    run.exit(output)
    return run.next(), output


async def run_succeed(run: StateRun) -> tuple[str | None, Any]:
    """Succeed: end the program with the (filtered) input as output."""
    if run.jsonata:
        output = finish(run, None, jsonata_default=run.input)
    else:
        output = output_path(run, after_input_path(run))
    run.exit(output)
    return None, output


async def run_fail(run: StateRun) -> tuple[str | None, Any]:
    """Fail: stop the program with the state's Error and Cause."""
    error = _fail_field(run, "Error")
    cause = _fail_field(run, "Cause")
    failure = StatesError(error, cause)
    failure.from_fail_state = True  # type: ignore[attr-defined]
    raise failure


def _fail_field(run: StateRun, field: str) -> Any:
    state = run.state
    if field in state:
        value = state[field]
        if run.jsonata and query.is_expression(value):
            return query.evaluate(
                query.expression_text(value),
                states_binding(run),
                run.frame.variables,
                field,
            )
        return value
    path_field = field + "Path"
    if path_field in state:
        value = state[path_field]
        return dataflow.evaluate_value(value, run.input, scope(run), path_field)
    return None


async def run_choice(run: StateRun) -> tuple[str | None, Any]:
    """Choice: go to the first rule that matches, else Default."""
    data = after_input_path(run)
    for rule in run.state["Choices"]:
        if _matches(run, rule, data):
            output = _choice_output(run, rule, data)
            return rule["Next"], output
    if "Default" not in run.state:
        raise StatesError(
            NO_CHOICE_MATCHED,
            f"No Matches! at state '{run.name}'",
        )
    output = _choice_output(run, run.state, data)
    return run.state["Default"], output


def _matches(run: StateRun, rule: dict[str, Any], data: Any) -> bool:
    if not run.jsonata:
        return evaluate_rule(rule, data, scope(run))
    condition = rule["Condition"]
    if not query.is_expression(condition):
        return bool(condition)
    value = query.evaluate(
        query.expression_text(condition),
        states_binding(run),
        run.frame.variables,
        "Condition",
    )
    if not isinstance(value, bool):
        raise StatesError(
            QUERY_EVALUATION_ERROR,
            f"The JSONata expression '{query.expression_text(condition)}' specified"
            " for the field 'Condition' returned an unexpected result type."
            f" Expected 'boolean', but was '{type(value).__name__}'",
        )
    return value


def _choice_output(run: StateRun, holder: dict[str, Any], data: Any) -> Any:
    if run.jsonata:
        binding = states_binding(run)
        output = run.input
        if "Output" in holder:
            output = query.render(
                holder["Output"], binding, run.frame.variables, "Output"
            )
        if "Assign" in holder:
            run.assign(
                query.render(holder["Assign"], binding, run.frame.variables, "Assign")
            )
    else:
        if "Assign" in holder:
            run.assign(dataflow.assign_jsonpath(holder["Assign"], data, scope(run)))
        output = output_path(run, data)
    run.exit(output)
    return output


async def run_wait(run: StateRun) -> tuple[str | None, Any]:
    """Wait: sleep for Seconds or until Timestamp (the deadline is journaled)."""
    data = after_input_path(run)
    deadline = _wait_deadline(run, data)
    if run.jsonata:
        output = finish(run, None, jsonata_default=run.input)
    else:
        assign_only(run, data)
        output = output_path(run, data)
    await run.runner.sleep_until(f"{run.key}/wait", deadline)
    run.exit(output)
    return run.next(), output


def _wait_deadline(run: StateRun, data: Any) -> float:
    state = run.state
    if "Seconds" in state or "SecondsPath" in state:
        seconds = _wait_seconds(run, data)
        return run.entered_at + seconds
    if "Timestamp" in state:
        text = state["Timestamp"]
        if run.jsonata and query.is_expression(text):
            text = query.evaluate(
                query.expression_text(text),
                states_binding(run),
                run.frame.variables,
                "Timestamp",
            )
            moment = parse_timestamp(text)
            if moment is None:
                raise StatesError(
                    QUERY_EVALUATION_ERROR,
                    "The Timestamp field cannot be parsed as an ISO-8601 extended"
                    f" offset date-time format string: {text}",
                )
        else:
            moment = parse_timestamp(text)
    else:
        path = state["TimestampPath"]
        text = dataflow.select(path, data, scope(run))
        moment = parse_timestamp(text)
        if moment is None:
            raise StatesError(
                RUNTIME,
                "The TimestampPath parameter does not reference a valid ISO-8601"
                f" extended offset date-time format string: {path} == {text}",
            )
    assert moment is not None
    deadline = moment.timestamp()
    if deadline - run.entered_at > MAX_WAIT_S:
        raise StatesError(RUNTIME, "Wait state delay is too long.")
    return deadline


def _wait_seconds(run: StateRun, data: Any) -> float:
    state = run.state
    if "Seconds" in state:
        value = state["Seconds"]
        if run.jsonata and query.is_expression(value):
            value = query.evaluate(
                query.expression_text(value),
                states_binding(run),
                run.frame.variables,
                "Seconds",
            )
        return float(value)
    path = state["SecondsPath"]
    try:
        value = dataflow.select(path, data, scope(run))
    except StatesError:
        raise StatesError(
            RUNTIME,
            f"The SecondsPath parameter does not reference an input value: {path}",
        ) from None
    shown = dataflow.compact_json(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StatesError(
            RUNTIME,
            f"The SecondsPath parameter cannot be parsed as a long value: {path}"
            f" == {shown}",
        )
    if isinstance(value, float) and not value.is_integer():
        raise StatesError(
            RUNTIME,
            f"The SecondsPath parameter cannot be parsed as a long value: {path}"
            f" == {shown}",
        )
    if value < 0:
        raise StatesError(
            RUNTIME,
            f"The SecondsPath parameter references a negative value: {path} == {shown}",
        )
    return float(math.floor(value))
