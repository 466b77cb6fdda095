"""State machine definitions: parsing and validation before any run.

``parse_definition`` accepts ASL JSON (text or an already decoded dict) and
returns a ``StateMachine`` or raises ``DefinitionError`` naming the offending
state and field, in the spirit of ``CreateStateMachine``'s
``SCHEMA_VALIDATION_FAILED`` messages: missing ``StartAt``, transitions to
unknown states, unreachable states, both ``Next`` and ``End``, bad paths and
intrinsics, unknown fields, bad Wait timestamps, unknown functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fnplane.workflows.errors import DefinitionError
from fnplane.workflows.fields import check_state_fields
from fnplane.workflows.resources import function_name_from, parse_resource

JSONPATH = "JSONPath"
JSONATA = "JSONata"
STANDARD = "STANDARD"
EXPRESS = "EXPRESS"
_TOP_FIELDS = {
    "StartAt",
    "States",
    "Comment",
    "Version",
    "TimeoutSeconds",
    "QueryLanguage",
}
_TERMINAL_TYPES = {"Succeed", "Fail"}

FunctionExists = Callable[[str], bool]


@dataclass(frozen=True)
class StateMachine:
    """A validated state machine definition.

    Attributes:
        definition: the decoded ASL document.
        query_language: the machine-wide default (``JSONPath`` or ``JSONata``).
        timeout_s: the machine's ``TimeoutSeconds``, or None.
    """

    definition: dict[str, Any]
    query_language: str
    timeout_s: float | None

    @property
    def start_at(self) -> str:
        """The name of the first state."""
        return str(self.definition["StartAt"])

    @property
    def states(self) -> dict[str, Any]:
        """The top-level states by name."""
        return dict(self.definition["States"])


def parse_definition(
    source: str | dict[str, Any],
    function_exists: FunctionExists | None = None,
    machine_type: str = STANDARD,
    *,
    any_resource: bool = False,
) -> StateMachine:
    """Decode and validate an ASL definition.

    Args:
        source: the definition as JSON text or a dict.
        function_exists: tells whether a function name can be invoked; when
            given, a Task naming an unknown function is rejected.
        machine_type: ``STANDARD`` or ``EXPRESS`` (Express machines cannot use
            ``.sync`` or ``.waitForTaskToken`` integrations).
        any_resource: accept Task resources fnplane cannot call (other AWS
            services): TestState runs them on mocked results.

    Raises:
        DefinitionError: the definition is invalid; the message says where.
    """
    source = decode_definition(source)
    language = source.get("QueryLanguage", JSONPATH)
    if language not in (JSONPATH, JSONATA):
        raise DefinitionError(
            f"QueryLanguage {language!r} is not JSONPath or JSONata", "/QueryLanguage"
        )
    unknown = set(source) - _TOP_FIELDS
    if unknown:
        raise DefinitionError(f"These fields are not allowed: {sorted(unknown)}")
    validator = _Validator(function_exists, machine_type, any_resource)
    validator.program(source, "", language)
    timeout = source.get("TimeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise DefinitionError("TimeoutSeconds must be a positive integer", "/")

    return StateMachine(source, language, timeout)


def parse_state(
    name: str, source: str | dict[str, Any], *, any_resource: bool = False
) -> dict[str, Any]:
    """Decode and validate one state on its own, as TestState receives it.

    The state's ``Next``, ``Default`` and ``Catch`` may name states that are
    not there; everything else (fields, paths, nested programs) is checked
    as ``parse_definition`` checks it.

    Raises:
        DefinitionError: the state is invalid; the message says where.
    """
    state = decode_definition(source)
    language = state.get("QueryLanguage", JSONPATH)
    validator = _Validator(None, STANDARD, any_resource)
    validator.state(name, state, None, "", language)
    return state


def decode_definition(source: str | dict[str, Any]) -> dict[str, Any]:
    """Return a definition as a dict, decoding JSON text.

    Raises:
        DefinitionError: the text is not JSON or not an object.
    """
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"the definition is not valid JSON: {exc}") from exc
    if not isinstance(source, dict):
        raise DefinitionError("the definition must be a JSON object")
    return source


class _Validator:
    def __init__(
        self,
        function_exists: FunctionExists | None,
        machine_type: str,
        any_resource: bool = False,
    ) -> None:
        self.function_exists = function_exists
        self.machine_type = machine_type
        self.any_resource = any_resource

    def program(self, program: dict[str, Any], where: str, language: str) -> None:
        missing = [field for field in ("StartAt", "States") if field not in program]
        if missing:
            raise DefinitionError(
                f"These fields are required: [{', '.join(missing)}]", where or "/"
            )
        states = program["States"]
        if not isinstance(states, dict) or not states:
            raise DefinitionError(
                "States must be a non-empty object", where + "/States"
            )
        if program["StartAt"] not in states:
            raise DefinitionError(
                f"StartAt refers to unknown state {program['StartAt']!r}"
                f" (states: {', '.join(states)})",
                where + "/StartAt",
            )
        for name, state in states.items():
            self.state(name, state, states, f"{where}/States/{name}", language)
        _check_reachable(program, where)

    def state(
        self,
        name: str,
        state: Any,
        states: dict[str, Any] | None,
        where: str,
        language: str,
    ) -> None:
        """Check one state; ``states`` None skips checking its targets exist."""
        if not isinstance(state, dict) or "Type" not in state:
            raise DefinitionError(f"state {name!r} has no Type", where)
        language = state.get("QueryLanguage", language)
        check_state_fields(name, state, where, language)
        self.transitions(name, state, states, where)
        kind = state["Type"]
        if kind == "Task":
            self.task(name, state, where)
        elif kind == "Parallel":
            for index, branch in enumerate(state.get("Branches") or []):
                self.program(branch, f"{where}/Branches[{index}]", language)
        elif kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if not isinstance(processor, dict):
                raise DefinitionError(
                    f"Map state {name!r} needs an ItemProcessor", where
                )
            self.program(processor, f"{where}/ItemProcessor", language)

    def transitions(
        self,
        name: str,
        state: dict[str, Any],
        states: dict[str, Any] | None,
        where: str,
    ) -> None:
        kind = state["Type"]
        has_next, has_end = "Next" in state, state.get("End") is True
        if kind in _TERMINAL_TYPES or kind == "Choice":
            if has_next or "End" in state:
                raise DefinitionError(
                    f"a {kind} state ({name!r}) cannot have Next or End", where
                )
        elif has_next and has_end:
            raise DefinitionError(
                f"state {name!r} has both Next and End; keep one", where
            )
        elif not has_next and not has_end:
            raise DefinitionError(f'state {name!r} needs Next or "End": true', where)
        targets = [(state.get("Next"), "Next")]
        targets += [(rule.get("Next"), "Choices") for rule in state.get("Choices", [])]
        targets += [(state.get("Default"), "Default")]
        targets += [(catch.get("Next"), "Catch") for catch in state.get("Catch", [])]
        if states is None:
            return
        for target, field in targets:
            if target is not None and target not in states:
                raise DefinitionError(
                    f"state {name!r} transitions to unknown state {target!r}",
                    f"{where}/{field}",
                )

    def task(self, name: str, state: dict[str, Any], where: str) -> None:
        resource_text = state.get("Resource")
        if not isinstance(resource_text, str):
            raise DefinitionError(f"Task state {name!r} needs a Resource", where)
        resource = parse_resource(resource_text)
        if self.machine_type == EXPRESS and resource.pattern in (
            "sync",
            "sync:2",
            "waitForTaskToken",
        ):
            raise DefinitionError(
                f"Express state machine does not support '.{resource.pattern}'"
                " service integration",
                f"{where}/Resource",
            )
        if resource.kind == "unsupported" and not self.any_resource:
            raise DefinitionError(
                f"The resource provided {resource_text} is not recognized: fnplane"
                " runs functions (a name, a Lambda function ARN or"
                f" {'arn:aws:states:::lambda:invoke'})",
                f"{where}/Resource",
            )
        if "Credentials" in state and "RoleArn" not in (state["Credentials"] or {}):
            raise DefinitionError(
                "The field 'RoleArn' is required but was missing",
                f"{where}/Credentials",
            )
        function_name = resource.function_name
        if resource.kind == "lambda_invoke":
            arguments = state.get("Parameters") or state.get("Arguments") or {}
            candidate = None
            if isinstance(arguments, dict):
                candidate = arguments.get("FunctionName")
            function_name = function_name_from(candidate)
            if isinstance(candidate, str) and candidate.startswith("{%"):
                function_name = None
        if (
            function_name is not None
            and self.function_exists is not None
            and not self.function_exists(function_name)
        ):
            raise DefinitionError(
                f"Task state {name!r} invokes function {function_name!r}, which is"
                " not registered; register it or fix the Resource",
                f"{where}/Resource",
            )


def _check_reachable(program: dict[str, Any], where: str) -> None:
    states = program["States"]
    seen: set[str] = set()
    pending = [program["StartAt"]]
    while pending:
        name = pending.pop()
        if name in seen or name not in states:
            continue
        seen.add(name)
        state = states[name]
        pending.extend(
            target
            for target in [
                state.get("Next"),
                state.get("Default"),
                *(rule.get("Next") for rule in state.get("Choices", [])),
                *(catch.get("Next") for catch in state.get("Catch", [])),
            ]
            if target is not None
        )
    unreachable = [name for name in states if name not in seen]
    if unreachable:
        raise DefinitionError(
            f"state(s) {', '.join(map(repr, unreachable))} cannot be reached from"
            f" StartAt {program['StartAt']!r}; remove them or add a transition",
            where + "/States",
        )
