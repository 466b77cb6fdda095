"""The workflow service: state machines, executions, stop and resume.

Construct it with the collaborators the platform provides::

    service = WorkflowService(invoker, journal=SqliteJournal(state_dir))
    machine = service.create_state_machine("orders", definition_json)
    execution = await service.start_execution(machine.arn, {"id": 1})
    done = await service.wait(execution.arn)

``invoker`` is ``async (function_name, payload, timeout_s) -> result`` and
raises ``TaskFailed(error, cause)`` (or any exception, named by its class)
when the function fails. Standard executions journal every event and step
(committed at the points ``sqlite_journal`` names); ``await
service.resume()`` after a restart continues those that were running.
Express executions live in memory and are limited to five minutes unless the
definition says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fnplane.workflows.clock import Clock, SystemClock
from fnplane.workflows.definition import (
    EXPRESS,
    STANDARD,
    FunctionExists,
    parse_definition,
)
from fnplane.workflows.errors import (
    ExecutionAlreadyExistsError,
    ExecutionNotFoundError,
    StateMachineNotFoundError,
)
from fnplane.workflows.executor import drive
from fnplane.workflows.journal import Journal
from fnplane.workflows.records import (
    FINISHED,
    RUNNING,
    ExecutionRecord,
    StateMachineRecord,
)
from fnplane.workflows.runner import Invoker

DEFAULT_EXPRESS_TIMEOUT_S = 300.0
DEFAULT_ROLE_ARN = "arn:aws:iam::000000000000:role/fnplane-workflows"


class WorkflowService:
    """Registers state machines and runs their executions.

    Args:
        invoker: runs a function for a Task state (see the module docstring).
        journal: durable storage for Standard executions; without one they
            run like Express ones, in memory.
        clock: time source and sleeper (a ``FakeClock`` in tests).
        function_exists: tells validation which function names exist.
        region, account_id: used to build ARNs.
        express_timeout_s: the Express duration limit (AWS: 5 minutes).
        express_history: keep the history of Express executions (AWS keeps
            none; useful in tests, costs time in hot loops).
    """

    def __init__(
        self,
        invoker: Invoker,
        *,
        journal: Journal | None = None,
        clock: Clock | None = None,
        function_exists: FunctionExists | None = None,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        express_timeout_s: float = DEFAULT_EXPRESS_TIMEOUT_S,
        express_history: bool = False,
    ) -> None:
        self.invoker = invoker
        self.journal = journal
        self.clock: Clock = clock or SystemClock()
        self.function_exists = function_exists
        self.region = region
        self.account_id = account_id
        self.express_timeout_s = express_timeout_s
        self.express_history = express_history
        self._machines: dict[str, StateMachineRecord] = {}
        self._executions: dict[str, ExecutionRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, tuple[str | None, str | None]] = {}
        if journal is not None:
            for saved in journal.state_machines():
                self._register(saved, persist=False)

    def create_state_machine(
        self,
        name: str,
        definition: str | dict[str, Any],
        type: str = STANDARD,
        role_arn: str = DEFAULT_ROLE_ARN,
    ) -> StateMachineRecord:
        """Validate and register a state machine (replacing one of that name).

        Raises:
            DefinitionError: the definition is invalid.
        """
        text = definition if isinstance(definition, str) else json.dumps(definition)
        record = {
            "arn": f"arn:aws:states:{self.region}:{self.account_id}"
            f":stateMachine:{name}",
            "name": name,
            "type": type,
            "definition": text,
            "role_arn": role_arn,
            "created_at": self.clock.now(),
        }
        return self._register(record, persist=True)

    def _register(self, record: dict[str, Any], persist: bool) -> StateMachineRecord:
        machine = parse_definition(
            record["definition"], self.function_exists, record["type"]
        )
        saved = StateMachineRecord(machine=machine, **record)
        self._machines[saved.arn] = saved
        if persist and self.journal is not None:
            self.journal.save_state_machine(saved.to_dict())
        return saved

    def state_machine(self, arn_or_name: str) -> StateMachineRecord:
        """Return a registered state machine by ARN or name.

        Raises:
            StateMachineNotFoundError: none has that ARN or name.
        """
        found = self._machines.get(arn_or_name)
        if found is None:
            found = next(
                (m for m in self._machines.values() if m.name == arn_or_name), None
            )
        if found is None:
            raise StateMachineNotFoundError(
                f"State Machine Does Not Exist: '{arn_or_name}'"
            )
        return found

    def list_state_machines(self) -> list[StateMachineRecord]:
        """Return every registered state machine."""
        return list(self._machines.values())

    async def start_execution(
        self, state_machine: str, input: Any = None, name: str | None = None
    ) -> ExecutionRecord:
        """Start an execution in the background and return its record at once.

        Raises:
            StateMachineNotFoundError: unknown state machine.
            ExecutionAlreadyExistsError: the name is taken with another input.
        """
        machine = self.state_machine(state_machine)
        record = self._new_execution(machine, {} if input is None else input, name)
        if record.status != RUNNING or record.arn in self._tasks:
            return record
        self._launch(record, machine, checkpoint=None)
        return record

    async def start_sync_execution(
        self, state_machine: str, input: Any = None, name: str | None = None
    ) -> ExecutionRecord:
        """Run an execution to its end and return the finished record."""
        record = await self.start_execution(state_machine, input, name)
        return await self.wait(record.arn)

    def _new_execution(
        self, machine: StateMachineRecord, input: Any, name: str | None
    ) -> ExecutionRecord:
        name = name or str(uuid.uuid4())
        arn = (
            f"arn:aws:states:{self.region}:{self.account_id}:execution:"
            f"{machine.name}:{name}"
        )
        if machine.type == EXPRESS:
            # Express execution ARNs carry a unique suffix, as AWS writes them.
            arn = (
                f"arn:aws:states:{self.region}:{self.account_id}:express:"
                f"{machine.name}:{name}:{uuid.uuid4()}"
            )
        existing = self._executions.get(arn)
        if existing is not None:
            if existing.input != input or existing.status in FINISHED:
                raise ExecutionAlreadyExistsError(f"Execution Already Exists: '{arn}'")
            return existing
        record = ExecutionRecord(
            arn, name, machine.arn, machine.type, input, self.clock.now()
        )
        self._executions[arn] = record
        if self._journaled(record):
            assert self.journal is not None
            self.journal.create_execution(record.to_dict())
        return record

    def _journaled(self, record: ExecutionRecord) -> bool:
        return self.journal is not None and record.type == STANDARD

    def _launch(
        self,
        record: ExecutionRecord,
        machine: StateMachineRecord,
        checkpoint: dict[str, Any] | None,
    ) -> None:
        timeout_s = machine.machine.timeout_s
        if timeout_s is None and machine.type == EXPRESS:
            timeout_s = self.express_timeout_s
        journal = self.journal if self._journaled(record) else None
        coroutine = drive(
            record,
            machine,
            self.invoker,
            self.clock,
            journal,
            timeout_s,
            checkpoint,
            self._stopping,
            keep_history=machine.type != EXPRESS or self.express_history,
        )
        task = asyncio.ensure_future(coroutine)
        self._tasks[record.arn] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.arn, None))

    async def wait(self, arn: str, timeout_s: float | None = None) -> ExecutionRecord:
        """Wait (in real time) until an execution finishes; return its record."""
        task = self._tasks.get(arn)
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return self.describe_execution(arn)

    def describe_execution(self, arn: str) -> ExecutionRecord:
        """Return an execution's record.

        Raises:
            ExecutionNotFoundError: no execution has that ARN.
        """
        record = self._executions.get(arn)
        if record is None:
            raise ExecutionNotFoundError(f"Execution Does Not Exist: '{arn}'")
        return record

    def list_executions(
        self, state_machine_arn: str | None = None, status: str | None = None
    ) -> list[ExecutionRecord]:
        """Return executions, newest first, optionally filtered."""
        found = [
            record
            for record in self._executions.values()
            if state_machine_arn in (None, record.state_machine_arn)
            and status in (None, record.status)
        ]
        return sorted(found, key=lambda record: record.start_time, reverse=True)

    def history(self, arn: str) -> list[dict[str, Any]]:
        """Return an execution's history events in order."""
        record = self.describe_execution(arn)
        if self._journaled(record):
            assert self.journal is not None
            # Nothing shown may be recomputed, with other timestamps, later.
            self.journal.flush(arn)
            if not record.events:
                return self.journal.events(arn)
        return list(record.events)

    async def stop_execution(
        self, arn: str, error: str | None = None, cause: str | None = None
    ) -> ExecutionRecord:
        """Stop a running execution (status ``ABORTED``); finished ones stay."""
        record = self.describe_execution(arn)
        task = self._tasks.get(arn)
        if record.status != RUNNING or task is None:
            return record
        self._stopping[arn] = (error, cause)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return record

    async def resume(self) -> list[ExecutionRecord]:
        """Continue the Standard executions the journal shows as running.

        Completed tasks are replayed from the journal, not run again, and a
        Wait keeps the deadline it had. Returns the resumed records.
        """
        if self.journal is None:
            return []
        resumed = []
        for saved in self.journal.executions(RUNNING):
            if saved["arn"] in self._tasks:
                continue
            record = ExecutionRecord.from_dict(saved)
            self._executions[record.arn] = record
            machine = self.state_machine(record.state_machine_arn)
            checkpoint = self.journal.last_checkpoint(record.arn) or {}
            self._launch(record, machine, checkpoint)
            resumed.append(record)
        return resumed

    async def close(self) -> None:
        """Cancel running executions without finishing them (they stay RUNNING
        in the journal, for ``resume`` to continue)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
