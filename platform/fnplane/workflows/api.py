"""The Step Functions JSON 1.0 API, independent of any web framework.

An HTTP server passes the action named by the ``X-Amz-Target`` header
(``AWSStepFunctions.StartExecution`` or just ``StartExecution``) and the
decoded JSON body to ``StepFunctionsApi.handle`` and sends back the status
and body it returns (``Content-Type: application/x-amz-json-1.0``). Errors
come back in AWS's shape, ``{"__type": ..., "message": ...}``, so
``boto3.client("stepfunctions", endpoint_url=...)`` raises the usual
``ClientError`` codes (``ExecutionDoesNotExist``, ``InvalidDefinition``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fnplane.errors import BadRequestError
from fnplane.events.http_request import parse_json
from fnplane.workflows.dataflow import compact_json
from fnplane.workflows.definition import EXPRESS, STANDARD
from fnplane.workflows.errors import (
    DefinitionError,
    ExecutionAlreadyExistsError,
    ExecutionNotFoundError,
    InvalidRequestError,
    StateMachineNotFoundError,
)
from fnplane.workflows.probe import StateConfiguration, StateMock
from fnplane.workflows.records import ExecutionRecord, StateMachineRecord
from fnplane.workflows.service import WorkflowService
from fnplane.workflows.teststate import INFO, test_state

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AWSStepFunctions."
_DEFAULT_PAGE = 100
# TestState's inspection data carries payloads as JSON text, except these.
_INSPECTION_VALUES = frozenset(
    {
        "errorDetails",
        "maxConcurrency",
        "toleratedFailureCount",
        "toleratedFailurePercentage",
    }
)

Response = tuple[int, dict[str, Any]]


class ApiError(Exception):
    """An error to return as ``{"__type": code, "message": message}``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class StepFunctionsApi:
    """Dispatches Step Functions actions to a ``WorkflowService``."""

    def __init__(self, service: WorkflowService) -> None:
        self.service = service
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "CreateStateMachine": self.create_state_machine,
            "DescribeStateMachine": self.describe_state_machine,
            "ListStateMachines": self.list_state_machines,
            "StartExecution": self.start_execution,
            "StartSyncExecution": self.start_sync_execution,
            "DescribeExecution": self.describe_execution,
            "StopExecution": self.stop_execution,
            "ListExecutions": self.list_executions,
            "GetExecutionHistory": self.get_execution_history,
            "TestState": self.test_state,
        }

    async def handle(self, action: str, body: dict[str, Any] | None) -> Response:
        """Run one action; return ``(HTTP status, JSON body)``."""
        name = action.removeprefix(TARGET_PREFIX)
        handler = self._actions.get(name)
        if handler is None:
            return _error("UnknownOperationException", f"unknown action {action!r}")
        try:
            return 200, await handler(body or {})
        except ApiError as exc:
            return _error(exc.code, str(exc), exc.status)
        except DefinitionError as exc:
            return _error(
                "InvalidDefinition", f"Invalid State Machine Definition: {exc}"
            )
        except StateMachineNotFoundError as exc:
            return _error("StateMachineDoesNotExist", str(exc))
        except ExecutionNotFoundError as exc:
            return _error("ExecutionDoesNotExist", str(exc))
        except ExecutionAlreadyExistsError as exc:
            return _error("ExecutionAlreadyExists", str(exc))
        except InvalidRequestError as exc:
            return _error("ValidationException", str(exc))

    async def create_state_machine(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateStateMachine: validate and register a definition."""
        machine_type = body.get("type", STANDARD)
        if machine_type not in (STANDARD, EXPRESS):
            raise ApiError("ValidationException", f"unknown type {machine_type!r}")
        machine = self.service.create_state_machine(
            _required(body, "name"),
            _required(body, "definition"),
            machine_type,
            body.get("roleArn") or "arn:aws:iam::000000000000:role/fnplane",
        )
        return {"stateMachineArn": machine.arn, "creationDate": machine.created_at}

    async def describe_state_machine(self, body: dict[str, Any]) -> dict[str, Any]:
        """DescribeStateMachine."""
        machine = self.service.state_machine(_required(body, "stateMachineArn"))
        return {
            **_machine_summary(machine),
            "status": "ACTIVE",
            "definition": machine.definition,
            "roleArn": machine.role_arn,
        }

    async def list_state_machines(self, body: dict[str, Any]) -> dict[str, Any]:
        """ListStateMachines."""
        machines = [_machine_summary(m) for m in self.service.list_state_machines()]
        page, token = _page(machines, body)
        return {"stateMachines": page, **token}

    async def start_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        """StartExecution: start in the background; return the ARN at once."""
        record = await self.service.start_execution(
            _required(body, "stateMachineArn"), _input(body), body.get("name")
        )
        return {"executionArn": record.arn, "startDate": record.start_time}

    async def start_sync_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        """StartSyncExecution: run an Express execution to its end."""
        machine = self.service.state_machine(_required(body, "stateMachineArn"))
        if machine.type != EXPRESS:
            raise ApiError(
                "StateMachineTypeNotSupported",
                "This operation is only supported by EXPRESS state machines",
            )
        record = await self.service.start_sync_execution(
            machine.arn, _input(body), body.get("name")
        )
        described = _describe(record)
        described.pop("redriveCount", None)
        return {**described, "billingDetails": {"billedDurationInMilliseconds": 0}}

    async def describe_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        """DescribeExecution."""
        record = self.service.describe_execution(_required(body, "executionArn"))
        return _describe(record)

    async def stop_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        """StopExecution: abort a running execution."""
        record = await self.service.stop_execution(
            _required(body, "executionArn"), body.get("error"), body.get("cause")
        )
        return {"stopDate": record.stop_time or self.service.clock.now()}

    async def list_executions(self, body: dict[str, Any]) -> dict[str, Any]:
        """ListExecutions, newest first, optionally by status."""
        machine = self.service.state_machine(_required(body, "stateMachineArn"))
        records = self.service.list_executions(machine.arn, body.get("statusFilter"))
        page, token = _page([_summary(record) for record in records], body)
        return {"executions": page, **token}

    async def get_execution_history(self, body: dict[str, Any]) -> dict[str, Any]:
        """GetExecutionHistory, oldest first unless ``reverseOrder``."""
        events = self.service.history(_required(body, "executionArn"))
        if body.get("reverseOrder"):
            events = list(reversed(events))
        if body.get("includeExecutionData") is False:
            events = [_without_data(event) for event in events]
        page, token = _page(events, body)
        return {"events": page, **token}

    async def test_state(self, body: dict[str, Any]) -> dict[str, Any]:
        """TestState: run one state on its own (see ``teststate``)."""
        mock = body.get("mock")
        service = self.service
        response = await test_state(
            _required(body, "definition"),
            _input(body),
            state_name=body.get("stateName"),
            invoker=service.invoker,
            inspection_level=body.get("inspectionLevel", INFO),
            mock=None if mock is None else StateMock.from_api(mock),
            variables=_json_object(body, "variables"),
            context=_json_object(body, "context"),
            configuration=StateConfiguration.from_api(body.get("stateConfiguration")),
            role_arn=body.get("roleArn"),
            region=service.region,
            account_id=service.account_id,
        )
        return _test_state_wire(response)


def _error(code: str, message: str, status: int = 400) -> Response:
    return status, {"__type": code, "message": message}


def _required(body: dict[str, Any], field: str) -> Any:
    value = body.get(field)
    if value in (None, ""):
        raise ApiError("ValidationException", f"'{field}' is required")
    return value


def _input(body: dict[str, Any]) -> Any:
    text = body.get("input")
    if text is None:
        return {}
    return _json_text(text, "input", "InvalidExecutionInput")


def _json_object(body: dict[str, Any], field: str) -> dict[str, Any] | None:
    text = body.get(field)
    if text is None:
        return None
    value = _json_text(text, field, "ValidationException")
    if not isinstance(value, dict):
        raise ApiError("ValidationException", f"{field} must be a JSON object")
    return value


def _json_text(text: Any, field: str, code: str) -> Any:
    """A field holding a JSON document as text, parsed strictly: NaN,
    Infinity and numbers out of a float's range are refused, as no JSON
    reader on the way back out could take them."""
    if not isinstance(text, str):
        raise ApiError(code, f"{field} must be a string holding JSON")
    try:
        return parse_json(text, field)
    except BadRequestError as exc:
        raise ApiError(code, str(exc)) from exc


def _test_state_wire(response: dict[str, Any]) -> dict[str, Any]:
    wire = dict(response)
    if "output" in wire:
        wire["output"] = compact_json(wire["output"])
    inspection = wire.get("inspectionData")
    if inspection is not None:
        wire["inspectionData"] = {
            key: value if key in _INSPECTION_VALUES else compact_json(value)
            for key, value in inspection.items()
        }
    return wire


def _page(items: list[Any], body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    start = int(body.get("nextToken") or 0)
    size = int(body.get("maxResults") or 0) or _DEFAULT_PAGE
    page = items[start : start + size]
    more = start + size < len(items)
    return page, ({"nextToken": str(start + size)} if more else {})


def _machine_summary(machine: StateMachineRecord) -> dict[str, Any]:
    return {
        "stateMachineArn": machine.arn,
        "name": machine.name,
        "type": machine.type,
        "creationDate": machine.created_at,
    }


def _summary(record: ExecutionRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "executionArn": record.arn,
        "stateMachineArn": record.state_machine_arn,
        "name": record.name,
        "status": record.status,
        "startDate": record.start_time,
    }
    if record.stop_time is not None:
        summary["stopDate"] = record.stop_time
    return summary


def _describe(record: ExecutionRecord) -> dict[str, Any]:
    described = {
        **_summary(record),
        "input": json.dumps(record.input),
        "inputDetails": {"included": True},
        "redriveCount": 0,
    }
    if record.status == "SUCCEEDED":
        described["output"] = json.dumps(record.output)
        described["outputDetails"] = {"included": True}
    for field in ("error", "cause"):
        if getattr(record, field) is not None:
            described[field] = getattr(record, field)
    return described


def _without_data(event: dict[str, Any]) -> dict[str, Any]:
    stripped = {}
    for key, value in event.items():
        if isinstance(value, dict):
            value = {
                k: v
                for k, v in value.items()
                if k not in ("input", "output", "parameters")
            }
        stripped[key] = value
    return stripped
