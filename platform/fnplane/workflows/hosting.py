"""Workflows inside the platform: state machines of an app, run by its invoker.

``StateMachineSpec`` is what ``App.state_machine`` records; its ``handler``
starts an execution, so any trigger (an HTTP route, a file drop, a stream
batch) can start a workflow by registering that handler. ``WorkflowHost``
builds the ``WorkflowService`` for a running platform: Task states invoke
functions through the one invocation path, Standard executions are journaled
in SQLite under the state folder and resumed when the platform starts again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from fnplane.errors import RegistrationError
from fnplane.events.http_request import HttpRequest
from fnplane.workflows.definition import EXPRESS, STANDARD, parse_definition
from fnplane.workflows.errors import DefinitionError, TaskFailed

if TYPE_CHECKING:
    from fnplane.context import Context
    from fnplane.invoke import Invoker
    from fnplane.workflows.api import StepFunctionsApi
    from fnplane.workflows.records import ExecutionRecord
    from fnplane.workflows.service import WorkflowService

logger = structlog.get_logger(__name__)

MACHINE_TYPES = (STANDARD, EXPRESS)


@dataclass(frozen=True, slots=True)
class StateMachineSpec:
    """A state machine registered with an app, validated but not yet running."""

    name: str
    definition: dict[str, Any]
    type: str = STANDARD

    @classmethod
    def build(
        cls, name: str, definition: str | Path | dict[str, Any], type: str
    ) -> StateMachineSpec:
        """Load (from a dict, JSON text or a file) and check a definition.

        Function names in Tasks are checked when the platform starts, once
        every module has registered its functions.
        """
        if type not in MACHINE_TYPES:
            raise RegistrationError(
                f"state machine {name!r}: type must be one of {MACHINE_TYPES}, "
                f"got {type!r}"
            )
        loaded = load_definition(name, definition)
        try:
            parse_definition(loaded, None, type)
        except DefinitionError as exc:
            raise RegistrationError(f"state machine {name!r}: {exc}") from exc
        return cls(name, loaded, type)

    @property
    def handler(self) -> Any:
        """A handler that starts an execution with its event as input.

        Register it with any trigger: ``app.http("POST", "/reviews")(m.handler)``.
        A Standard machine answers ``{"executionArn", "startDate"}`` at once;
        an Express one runs to its end and answers its output.
        """
        spec = self

        async def start_execution(event: Any, context: Context) -> Any:
            return await context.start_execution(spec.name, as_input(event))

        start_execution.__name__ = f"start_{self.name}".replace("-", "_")
        start_execution.__qualname__ = start_execution.__name__
        return start_execution


def load_definition(
    name: str, definition: str | Path | dict[str, Any]
) -> dict[str, Any]:
    """The definition as a dict, from a dict, JSON text or a ``.json`` file path."""
    if isinstance(definition, dict):
        return definition
    text = str(definition)
    if isinstance(definition, Path) or not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise RegistrationError(
                f"state machine {name!r}: definition file {text} does not exist"
            )
        text = path.read_text()
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistrationError(
            f"state machine {name!r}: definition is not valid JSON: {exc}"
        ) from exc
    if not isinstance(loaded, dict):
        raise RegistrationError(f"state machine {name!r}: definition must be an object")
    return loaded


def as_input(event: Any) -> Any:
    """An event as JSON-ready execution input.

    An HTTP request gives its JSON body (``{}`` when empty), as API Gateway's
    Step Functions integration does; other typed events (Mappings in AWS
    shapes) give their whole payload.
    """
    if isinstance(event, HttpRequest):
        return event.json() if event.body else {}
    if isinstance(event, Mapping) and not isinstance(event, dict):
        return json.loads(json.dumps(dict(event), default=str))
    return event


class WorkflowHost:
    """The workflow service of a running platform."""

    def __init__(self, invoker: Invoker, specs: dict[str, StateMachineSpec]) -> None:
        from fnplane.workflows.api import StepFunctionsApi
        from fnplane.workflows.service import WorkflowService
        from fnplane.workflows.sqlite_journal import SqliteJournal

        self.invoker = invoker
        self.specs = specs
        app = invoker.app
        self.service: WorkflowService = WorkflowService(
            self.run_task,
            journal=SqliteJournal(Path(invoker.settings.state_dir)),
            function_exists=lambda name: name in app.functions,
        )
        self.api: StepFunctionsApi = StepFunctionsApi(self.service)

    async def start(self) -> None:
        """Register the app's state machines, then resume running executions."""
        for spec in self.specs.values():
            try:
                self.service.create_state_machine(spec.name, spec.definition, spec.type)
            except DefinitionError as exc:
                raise RegistrationError(f"state machine {spec.name!r}: {exc}") from exc
        resumed = await self.service.resume()
        if resumed:
            logger.info("workflows.resumed", executions=[r.arn for r in resumed])

    async def stop(self) -> None:
        """Stop running executions where they are; Standard ones resume later."""
        await self.service.close()

    async def start_execution(self, name: str, input: Any) -> Any:
        """Start ``name``; Express runs to its end and gives its output."""
        machine = self.service.state_machine(name)
        if machine.type == EXPRESS:
            record = await self.service.start_sync_execution(name, input)
            return express_result(record)
        record = await self.service.start_execution(name, input)
        return {"executionArn": record.arn, "startDate": record.start_time}

    async def run_task(
        self, function: str, payload: Any, timeout_s: float | None
    ) -> Any:
        """A Task state's invocation, through the platform's invocation path.

        A throttled Task waits for a slot rather than failing: Step Functions
        would retry ``Lambda.TooManyRequestsException`` the same way.
        """
        result = await self.invoker.invoke(function, payload, wait_for_slot=True)
        if result.ok:
            return result.value
        assert result.error is not None
        raise TaskFailed(result.error.error_type, json.dumps(result.error.to_lambda()))


def express_result(record: ExecutionRecord) -> Any:
    """An Express execution's output, or its error as a handled failure."""
    from fnplane.errors import FunctionError

    if record.status == "SUCCEEDED":
        return record.output
    raise FunctionError(
        f"execution {record.arn} {record.status}: {record.cause or ''}".strip(),
        error_type=record.error or "States.Runtime",
    )
