"""A state's input and output processing, for both query languages.

JSONPath: InputPath, then Parameters, give the effective input; the result
goes through ResultSelector, Assign, ResultPath and OutputPath. JSONata:
Arguments give the effective input; Output and Assign see ``$states.result``.
Catchers shape the error output the same two ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnplane.workflows import dataflow, query
from fnplane.workflows.dataflow import Scope

if TYPE_CHECKING:
    from fnplane.workflows.runner import StateRun

_UNSET: Any = object()


def scope(run: StateRun) -> Scope:
    """The JSONPath scope of a state: its context object and variables."""
    return Scope(run.context, run.frame.variables)


def states_binding(
    run: StateRun, result: Any = _UNSET, error_output: Any = _UNSET
) -> dict[str, Any]:
    """The ``$states`` variable JSONata expressions of this state see."""
    binding: dict[str, Any] = {"input": run.input, "context": run.context()}
    if result is not _UNSET:
        binding["result"] = result
    if error_output is not _UNSET:
        binding["errorOutput"] = error_output
    return binding


def effective_input(run: StateRun, arguments_field: str = "Parameters") -> Any:
    """Compute what the state works on (task payload, Pass result, ...)."""
    state = run.state
    if run.jsonata:
        data = run.input
        if "Arguments" in state:
            data = query.render(
                state["Arguments"],
                states_binding(run),
                run.frame.variables,
                "Arguments",
            )
        run.inspect("afterArguments", data)
        return data
    data = after_input_path(run)
    if arguments_field in state:
        data = dataflow.render(state[arguments_field], data, scope(run))
    run.inspect("afterParameters", data)
    return data


def after_input_path(run: StateRun) -> Any:
    """The state input after InputPath only (Choice, Wait and Map need it)."""
    if run.jsonata:
        return run.input
    data = run.input
    if "InputPath" in run.state:
        path = run.state["InputPath"]
        data = {} if path is None else dataflow.select(path, data, scope(run))
    run.inspect("afterInputPath", data)
    return data


def finish(
    run: StateRun,
    result: Any,
    jsonata_default: Any = _UNSET,
    apply_output_path: bool = True,
) -> Any:
    """Turn a state's result into its output and assign its variables.

    ``jsonata_default`` is the output of a JSONata state without ``Output``
    (the result for Task, Map and Parallel; the input for Pass, Choice, Wait).
    States with Retry/Catch apply ``OutputPath`` themselves, outside the
    catchable part, since AWS fails the execution when it selects nothing.
    """
    state = run.state
    run.inspect("result", result)
    if run.jsonata:
        binding = states_binding(run, result=result)
        output = result if jsonata_default is _UNSET else jsonata_default
        if "Output" in state:
            output = query.render(
                state["Output"], binding, run.frame.variables, "Output"
            )
        if "Assign" in state:
            _assign_jsonata(run, state["Assign"], binding)
        return output
    if "ResultSelector" in state:
        result = dataflow.render(state["ResultSelector"], result, scope(run))
    run.inspect("afterResultSelector", result)
    if "Assign" in state:
        run.assign(dataflow.assign_jsonpath(state["Assign"], result, scope(run)))
    output = dataflow.apply_result_path(run.input, result, state.get("ResultPath", "$"))
    run.inspect("afterResultPath", output)
    return output_path(run, output) if apply_output_path else output


def output_path(run: StateRun, output: Any) -> Any:
    """Apply ``OutputPath`` (JSONPath states only)."""
    if run.jsonata or "OutputPath" not in run.state:
        return output
    path = run.state["OutputPath"]
    return {} if path is None else dataflow.select(path, output, scope(run))


def _assign_jsonata(run: StateRun, assign: Any, binding: dict[str, Any]) -> None:
    if query.is_expression(assign):
        values = query.evaluate(
            query.expression_text(assign), binding, run.frame.variables, "Assign"
        )
    else:
        values = query.render(assign, binding, run.frame.variables, "Assign")
    run.assign(values)


def assign_only(run: StateRun, data: Any) -> None:
    """Evaluate ``Assign`` for states whose output is their input (Choice, Wait)."""
    assign = run.state.get("Assign")
    if assign is None:
        return
    if run.jsonata:
        _assign_jsonata(run, assign, states_binding(run))
    else:
        run.assign(dataflow.assign_jsonpath(assign, data, scope(run)))


def catch_output(run: StateRun, catcher: dict[str, Any], error_output: Any) -> Any:
    """Shape the output of a caught error as the catcher says."""
    if run.jsonata:
        binding = states_binding(run, error_output=error_output)
        output = error_output
        if "Output" in catcher:
            output = query.render(
                catcher["Output"], binding, run.frame.variables, "Output"
            )
        if "Assign" in catcher:
            _assign_jsonata(run, catcher["Assign"], binding)
        return output
    if "Assign" in catcher:
        run.assign(
            dataflow.assign_jsonpath(catcher["Assign"], error_output, scope(run))
        )
    return dataflow.apply_result_path(
        run.input, error_output, catcher.get("ResultPath", "$")
    )


def field_value(run: StateRun, field: str, data: Any) -> Any:
    """Evaluate a literal-or-expression field (``TimeoutSeconds``, ``Items``...).

    Returns the literal, the JSONata result, or the value its ``...Path``
    twin selects; ``None`` when neither is set.
    """
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
        return dataflow.select(state[path_field], data, scope(run))
    return None
