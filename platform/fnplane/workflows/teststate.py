"""TestState: run one state on its own, as Step Functions' TestState API does.

``test_state`` takes a state definition (or a whole state machine and the
name of one of its states, even one nested in a Map or Parallel) and an
input, and optionally a mocked result or error, workflow variables, a
context object and a ``StateConfiguration``. It runs the state once (it
never retries and never waits) and answers as AWS does:

- ``status``: ``SUCCEEDED``; ``CAUGHT_ERROR`` when a catcher took the error;
  ``RETRIABLE`` when a retrier would retry it; else ``FAILED``;
- ``output`` and ``nextState``, or ``error`` and ``cause``;
- ``inspectionData`` at the ``DEBUG`` and ``TRACE`` levels: the input, the
  data after each processing step (``afterInputPath``, ``afterParameters``,
  ``result``, ``afterResultSelector``, ``afterResultPath``, or
  ``afterArguments`` for JSONata), a Map's items and limits, the variables
  after the state, and which retrier or catcher matched (``errorDetails``).

Payloads are JSON values here; the API layer turns them into JSON text.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fnplane.workflows.clock import FakeClock
from fnplane.workflows.definition import (
    JSONPATH,
    StateMachine,
    decode_definition,
    parse_definition,
    parse_state,
)
from fnplane.workflows.errors import InvalidRequestError, StatesError
from fnplane.workflows.history import Cursor, History
from fnplane.workflows.probe import (
    CONTEXT_STATE_NAME,
    Probe,
    Retriable,
    StateConfiguration,
    StateMock,
)
from fnplane.workflows.records import FAILED, SUCCEEDED
from fnplane.workflows.resources import parse_resource
from fnplane.workflows.runner import ExecutionInfo, Frame, Invoker, Runner, StateRun
from fnplane.workflows.variables import Variables

INFO = "INFO"
DEBUG = "DEBUG"
TRACE = "TRACE"
INSPECTION_LEVELS = (INFO, DEBUG, TRACE)
CAUGHT_ERROR = "CAUGHT_ERROR"
RETRIABLE = "RETRIABLE"
TEST_STATE_MACHINE_NAME = "TestStateMachine"

_MOCKABLE_TYPES = ("Task", "Map", "Parallel")
_MAP_LIMITS = ("maxConcurrency", "toleratedFailureCount", "toleratedFailurePercentage")
# The intermediate values AWS reports for each type of JSONPath state. A
# Parallel reports no InputPath or Parameters step, and neither a Map nor a
# Parallel reports its raw result.
_JSONPATH_STEPS: dict[str, tuple[str, ...]] = {
    "Task": (
        "afterInputPath",
        "afterParameters",
        "result",
        "afterResultSelector",
        "afterResultPath",
    ),
    "Pass": (
        "afterInputPath",
        "afterParameters",
        "afterResultSelector",
        "afterResultPath",
    ),
    "Map": (
        "afterInputPath",
        "afterItemsPath",
        *_MAP_LIMITS,
        "afterResultSelector",
        "afterResultPath",
    ),
    "Parallel": ("afterResultSelector", "afterResultPath"),
    "Choice": ("afterInputPath",),
    "Wait": ("afterInputPath",),
    "Succeed": ("afterInputPath",),
    "Fail": ("afterInputPath",),
}
# A Pass with a Result ignores its InputPath and Parameters: AWS shows the
# Result in their place.
_PASS_RESULT_STEPS = ("result", "afterResultSelector", "afterResultPath")
_JSONATA_STEPS: dict[str, tuple[str, ...]] = {
    "Task": ("afterArguments", "result"),
    "Map": _MAP_LIMITS,
}


async def test_state(
    definition: str | dict[str, Any],
    input: Any = None,
    *,
    state_name: str | None = None,
    invoker: Invoker | None = None,
    inspection_level: str = INFO,
    mock: StateMock | None = None,
    variables: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    configuration: StateConfiguration | None = None,
    role_arn: str | None = None,
    region: str = "us-east-1",
    account_id: str = "000000000000",
) -> dict[str, Any]:
    """Run one state once and report it as the TestState API does.

    Args:
        definition: one state (JSON text or dict), or a whole state machine
            together with ``state_name``.
        input: the state's input (default ``{}``).
        state_name: the state to run when ``definition`` is a state machine.
        invoker: runs the functions of unmocked Task states.
        inspection_level: ``INFO`` (outcome only), ``DEBUG`` or ``TRACE``
            (both add ``inspectionData``).
        mock: the outcome of the state's work (Task, Map or Parallel) instead
            of doing it.
        variables: the workflow variables the state sees.
        context: the context object (``$$``) to use instead of one built for
            an imagined Express execution.
        configuration: retry count, Map failures and item reader data.
        role_arn: shown as ``$$.Execution.RoleArn`` (null when None).
        region, account_id: used in the ARNs of the context object.

    Returns:
        The TestState response: ``status``, then ``output``, ``nextState``,
        ``error``, ``cause`` and ``inspectionData`` where they apply.

    Raises:
        DefinitionError: the definition is invalid.
        InvalidRequestError: the request cannot run as given (unknown state
            name, a mock on a state that calls nothing, nothing to call an
            unmocked Task with, ...).
    """
    if inspection_level not in INSPECTION_LEVELS:
        raise InvalidRequestError(
            f"inspectionLevel {inspection_level!r} is not one of"
            f" {', '.join(INSPECTION_LEVELS)}"
        )
    name, state, machine = _locate_state(definition, state_name)
    configuration = configuration or StateConfiguration()
    _check_request(name, state, mock, configuration, invoker)
    data = {} if input is None else input
    info = _execution_info(data, role_arn, region, account_id)
    run = _state_run(machine, name, state, info, invoker, variables)
    probe = Probe(mock, configuration, context)
    run.probe = probe
    run.retry_count = configuration.retrier_retry_count

    response = await _run(run, probe)

    if inspection_level != INFO:
        response["inspectionData"] = _inspection_data(run, probe)
    return response


# pytest collects module-level ``test_*`` callables: keep it from collecting
# this one wherever a test module imports it.
test_state.__test__ = False  # type: ignore[attr-defined]


def _locate_state(
    definition: str | dict[str, Any], state_name: str | None
) -> tuple[str, dict[str, Any], StateMachine]:
    source = decode_definition(definition)
    if "States" not in source:
        if state_name is not None:
            raise InvalidRequestError(
                f"stateName {state_name!r} needs a whole state machine definition"
                " (with StartAt and States); this definition is one state"
            )
        state = parse_state(CONTEXT_STATE_NAME, source, any_resource=True)
        language = state.get("QueryLanguage", JSONPATH)
        program = {"StartAt": CONTEXT_STATE_NAME, "States": {CONTEXT_STATE_NAME: state}}
        return CONTEXT_STATE_NAME, state, StateMachine(program, language, None)
    machine = parse_definition(source, any_resource=True)
    if not state_name:
        raise InvalidRequestError(
            "a state machine definition needs stateName, the state to test"
            f" (its states: {', '.join(machine.states)})"
        )
    found = _find_state(machine.definition, state_name)
    if found is None:
        raise InvalidRequestError(
            f"stateName {state_name!r} is not a state of the definition"
            f" (its top-level states: {', '.join(machine.states)})"
        )
    return state_name, found, machine


def _find_state(program: dict[str, Any], name: str) -> dict[str, Any] | None:
    states = program.get("States") or {}
    if name in states:
        return dict(states[name])
    for state in states.values():
        for nested in _nested_programs(state):
            found = _find_state(nested, name)
            if found is not None:
                return found
    return None


def _nested_programs(state: dict[str, Any]) -> list[dict[str, Any]]:
    if state.get("Type") == "Parallel":
        return list(state.get("Branches") or [])
    if state.get("Type") == "Map":
        processor = state.get("ItemProcessor") or state.get("Iterator")
        return [processor] if processor else []
    return []


def _check_request(
    name: str,
    state: dict[str, Any],
    mock: StateMock | None,
    configuration: StateConfiguration,
    invoker: Invoker | None,
) -> None:
    kind = state["Type"]
    if mock is not None and kind not in _MOCKABLE_TYPES:
        raise InvalidRequestError(
            f"a mock applies to Task, Map and Parallel states; {name!r} is a {kind}"
        )
    _check_error_source(name, state, mock, configuration)
    if "ItemReader" in state and configuration.map_item_reader_data is None:
        raise InvalidRequestError(
            f"Map state {name!r} has an ItemReader, which TestState does not"
            " read: give its items in stateConfiguration.mapItemReaderData"
        )
    if mock is not None:
        return
    resources = _resources(state)
    for resource in resources:
        if parse_resource(resource).kind == "unsupported":
            raise InvalidRequestError(
                f"state {name!r} calls {resource}, which fnplane cannot call:"
                " mock its result or error"
            )
    if resources and invoker is None:
        raise InvalidRequestError(
            f"state {name!r} invokes functions: pass an invoker or a mock"
        )


def _check_error_source(
    name: str,
    state: dict[str, Any],
    mock: StateMock | None,
    configuration: StateConfiguration,
) -> None:
    source = configuration.error_caused_by_state
    if source is None:
        return
    if mock is None or not mock.fails:
        raise InvalidRequestError(
            "stateConfiguration.errorCausedByState needs a mocked errorOutput"
        )
    nested = _nested_programs(state)
    if not any(_find_state(program, source) is not None for program in nested):
        raise InvalidRequestError(
            f"stateConfiguration.errorCausedByState {source!r} is not a state"
            f" inside the Map or Parallel state {name!r}"
        )


def _resources(state: dict[str, Any]) -> list[str]:
    """Every Task resource running ``state`` could call, nested ones too."""
    if state.get("Type") == "Task":
        return [str(state.get("Resource"))]
    found: list[str] = []
    for program in _nested_programs(state):
        for nested in (program.get("States") or {}).values():
            found.extend(_resources(nested))
    return found


def _execution_info(
    data: Any, role_arn: str | None, region: str, account_id: str
) -> ExecutionInfo:
    # AWS shows the context of an Express execution made up for the call.
    name = str(uuid.uuid4())
    prefix = f"arn:aws:states:{region}:{account_id}"
    return ExecutionInfo(
        arn=f"{prefix}:express:{TEST_STATE_MACHINE_NAME}:{name}",
        name=name,
        state_machine_arn=f"{prefix}:stateMachine:{TEST_STATE_MACHINE_NAME}",
        state_machine_name=TEST_STATE_MACHINE_NAME,
        input=data,
        start_time=time.time(),
        role_arn=role_arn,
        redrivable=False,
    )


def _state_run(
    machine: StateMachine,
    name: str,
    state: dict[str, Any],
    info: ExecutionInfo,
    invoker: Invoker | None,
    variables: dict[str, Any] | None,
) -> StateRun:
    # TestState never waits: a fake clock lets Wait states pass at once.
    clock = FakeClock(info.start_time)
    history = History(clock, keep=False)
    runner = Runner(machine, info, invoker or _no_invoker, clock, history)
    frame = Frame(Variables(variables), Cursor())
    return StateRun(runner, name, state, info.input, frame, entered_id=0, visit=1)


async def _no_invoker(function_name: str, payload: Any, timeout_s: float | None) -> Any:
    raise InvalidRequestError(
        f"no invoker to call function {function_name!r}: pass one or a mock"
    )


async def _run(run: StateRun, probe: Probe) -> dict[str, Any]:
    handler = run.runner.handlers[run.state["Type"]]
    try:
        next_state, output = await handler(run)
    except Retriable as signal:
        return _failure(RETRIABLE, signal.error)
    except StatesError as exc:
        return _failure(FAILED, exc)

    if probe.caught_error is None:
        response: dict[str, Any] = {"status": SUCCEEDED, "output": output}
    else:
        response = _failure(CAUGHT_ERROR, probe.caught_error)
        response["output"] = output
    if next_state is not None:
        response["nextState"] = next_state
    return response


def _failure(status: str, exc: StatesError) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    if exc.error is not None:
        response["error"] = exc.error
    if exc.cause is not None:
        response["cause"] = exc.cause
    return response


def _inspection_data(run: StateRun, probe: Probe) -> dict[str, Any]:
    inspection: dict[str, Any] = {"input": run.input}
    recorded = dict(probe.recorded)
    kind = run.state["Type"]
    if kind == "Fail" and not run.jsonata:
        # A Fail state has no InputPath; AWS shows its input unchanged.
        recorded["afterInputPath"] = run.input
    for step in _reported_steps(run):
        if step in recorded:
            inspection[step] = recorded[step]
    variables = run.frame.variables.visible()
    if variables:
        inspection["variables"] = variables
    if probe.error_details:
        inspection["errorDetails"] = dict(probe.error_details)
    return inspection


def _reported_steps(run: StateRun) -> tuple[str, ...]:
    kind = run.state["Type"]
    if run.jsonata:
        return _JSONATA_STEPS.get(kind, ())
    if kind == "Pass" and "Result" in run.state:
        return _PASS_RESULT_STEPS
    return _JSONPATH_STEPS.get(kind, ())
