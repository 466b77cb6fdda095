"""The execution runner: walks a state machine from StartAt to an end.

One ``Runner`` drives one execution. It owns the collaborators (invoker,
clock, history, step journal) and runs *programs*, a ``StartAt`` plus
``States`` (the machine itself, a Parallel branch, a Map item processor), on
*frames*, one per thread of execution. Each state type has its handler in
``states``, ``tasks`` or ``branches``; they share the input/output processing
in ``StateRun``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fnplane.workflows.clock import Clock, iso_timestamp
from fnplane.workflows.dataflow import compact_json
from fnplane.workflows.definition import JSONATA, StateMachine
from fnplane.workflows.errors import (
    DATA_LIMIT_EXCEEDED,
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    StatesError,
)
from fnplane.workflows.history import Cursor, History
from fnplane.workflows.variables import Variables

if TYPE_CHECKING:
    from fnplane.workflows.probe import Probe

Invoker = Callable[[str, Any, "float | None"], Awaitable[Any]]
StateHandler = Callable[["StateRun"], Awaitable[tuple["str | None", Any]]]
_LOCATED_ERRORS = (RUNTIME, QUERY_EVALUATION_ERROR)
# Step Functions' payload limit for a state's input or output (256 KiB).
MAX_PAYLOAD_BYTES = 256 * 1024


class StepJournal(Protocol):
    """How a Standard execution makes its steps durable (see ``journal``).

    The runner records each completed task and each Wait deadline under a
    key that is the same when the execution is replayed after a restart,
    checkpoints the top-level position after every transition, and flushes
    before a Task's function is invoked.
    """

    def recorded(self, key: str) -> dict[str, Any] | None:
        """Return what was recorded under ``key`` by an earlier run, if any."""
        ...

    def record(self, key: str, value: dict[str, Any]) -> None:
        """Durably record ``value`` under ``key`` before the run goes on."""
        ...

    def checkpoint(self, position: dict[str, Any]) -> None:
        """Record the top-level position (next state, data, variables).

        It may stay buffered until the next ``record`` or ``flush``: the
        steps after a durable position are recomputed from it after a crash.
        """
        ...

    def flush(self) -> None:
        """Make the position durable before the outside world sees it."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """What the context object tells about an execution."""

    arn: str
    name: str
    state_machine_arn: str
    state_machine_name: str
    input: Any
    start_time: float
    # None when a TestState call names no role (AWS shows RoleArn null).
    role_arn: str | None = "arn:aws:iam::000000000000:role/fnplane"
    redrivable: bool = True


@dataclass(slots=True)
class Frame:
    """One thread of execution: the top level, a branch or a Map iteration."""

    variables: Variables
    cursor: Cursor
    key: str = ""
    # States entered on this frame so far: with the frame's key it names each
    # visit the same way when an execution is replayed after a restart.
    steps: int = 0
    top_level: bool = False
    quiet: bool = False
    halt: Halt | None = None
    # The last state's output and its JSON text: the next state's input is
    # that same object, entered with no await in between (see _input_text).
    last_output: tuple[Any, str] | None = None

    def fork(self, key: str, quiet: bool = False) -> Frame:
        """Return a nested frame (own variable scope and event thread).

        A quiet frame records no events (a Distributed Map's child execution
        keeps its own history, apart from the parent's).
        """
        return Frame(
            self.variables.child(),
            self.cursor.fork(),
            key,
            quiet=quiet or self.quiet,
            halt=self.halt,
        )

    def halted(self) -> Frame:
        """Return this frame watching a new ``Halt`` (for a Map's iterations)."""
        return Frame(
            self.variables,
            self.cursor,
            self.key,
            self.steps,
            quiet=self.quiet,
            halt=Halt(),
        )


class Halt:
    """Set once a Map has failed: its other iterations end as aborted.

    ``failed_tasks`` are the frames whose Task state failed the iteration:
    AWS closes those Task states as aborted too, once the Map gives up.
    """

    __slots__ = ("is_set", "failed_tasks")

    def __init__(self) -> None:
        self.is_set = False
        self.failed_tasks: list[Frame] = []


class IterationAborted(Exception):
    """A state ended because its Map had already failed (not a state error)."""


class Runner:
    """Runs one execution of a state machine.

    Args:
        machine: the validated definition.
        info: the execution's identity, input and start time.
        invoker: ``async (function_name, payload, timeout_s) -> result``.
        clock: time and sleeping.
        history: where events go.
        journal: makes steps durable (Standard) or None (Express).
        deadline: epoch seconds after which the execution times out, or None.
    """

    def __init__(
        self,
        machine: StateMachine,
        info: ExecutionInfo,
        invoker: Invoker,
        clock: Clock,
        history: History,
        journal: StepJournal | None = None,
        deadline: float | None = None,
    ) -> None:
        from fnplane.workflows.handlers import HANDLERS

        self.machine = machine
        self.info = info
        self.invoker = invoker
        self.clock = clock
        self.history = history
        self.journal = journal
        self.deadline = deadline
        self.handlers: dict[str, StateHandler] = HANDLERS

    async def run_program(
        self, program: dict[str, Any], data: Any, frame: Frame, start: str = ""
    ) -> Any:
        """Run states from ``start`` (default StartAt) until one ends the program."""
        states = program["States"]
        name = start or program["StartAt"]
        while True:
            self.check_deadline()
            next_name, data = await self.run_state(name, states[name], data, frame)
            if next_name is None:
                return data
            if frame.top_level and self.journal is not None:
                self.journal.checkpoint(
                    {
                        "state": next_name,
                        "data": data,
                        "variables": frame.variables.own(),
                        "steps": frame.steps,
                        "last_event_id": self.history.last_id,
                    }
                )
            name = next_name

    async def run_state(
        self, name: str, state: dict[str, Any], data: Any, frame: Frame
    ) -> tuple[str | None, Any]:
        """Enter a state, run its handler, and return (next state, output)."""
        kind = state["Type"]
        frame.steps += 1
        visit = frame.steps
        details = None
        if self.recording(frame):
            details = {
                "name": name,
                "input": _input_text(frame, data),
                "inputDetails": {"truncated": False},
            }
        entered_id = self.emit(frame, f"{kind}StateEntered", details)
        run = StateRun(self, name, state, data, frame, entered_id, visit)
        try:
            return await self.handlers[kind](run)
        except StatesError as exc:
            from fnplane.workflows.tasks import report_evaluation

            if frame.halt is not None:
                if frame.halt.is_set:
                    self.emit(frame, f"{kind}StateAborted")
                    raise IterationAborted() from exc
                if kind == "Task":
                    frame.halt.failed_tasks.append(frame)
            report_evaluation(run, exc)
            _locate(exc, name, entered_id)
            raise
        except asyncio.CancelledError:
            self.emit(frame, f"{kind}StateAborted")
            raise

    def recording(self, frame: Frame) -> bool:
        """Whether events of this frame are kept (so details must be built)."""
        return self.history.recording and not frame.quiet

    def emit(
        self, frame: Frame, event_type: str, details: dict[str, Any] | None = None
    ) -> int:
        """Record an event on a frame's thread (nothing on a quiet frame)."""
        if frame.quiet:
            return frame.cursor.last_id
        return self.history.emit(frame.cursor, event_type, details)

    def check_deadline(self) -> None:
        """Fail with ``States.Timeout`` once the execution outlived its limit."""
        if self.deadline is not None and self.clock.now() >= self.deadline:
            raise ExecutionTimedOut()

    def remaining_s(self) -> float | None:
        """Seconds left before the execution's deadline, or None."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock.now())

    async def sleep_until(self, key: str, deadline: float) -> None:
        """Sleep until ``deadline``, journaling it so a restart keeps it."""
        if self.journal is not None:
            recorded = self.journal.recorded(key)
            if recorded is not None:
                deadline = recorded["deadline"]
            else:
                self.journal.record(key, {"deadline": deadline})
        if self.deadline is not None and deadline > self.deadline:
            await self.clock.sleep(self.deadline - self.clock.now())
            raise ExecutionTimedOut()
        await self.clock.sleep(deadline - self.clock.now())


class ExecutionTimedOut(Exception):
    """The execution reached its TimeoutSeconds (not catchable by states)."""


def _locate(exc: StatesError, name: str, entered_id: int) -> None:
    # AWS prefixes runtime failures with the state and its entered event, once:
    # the innermost state that failed is the one named.
    if exc.error in _LOCATED_ERRORS and not getattr(exc, "located", False):
        exc.cause = (
            f"An error occurred while executing the state '{name}' (entered at the"
            f" event id #{entered_id}). {exc.cause}"
        )
        exc.located = True  # type: ignore[attr-defined]


def _input_text(frame: Frame, data: Any) -> str:
    # The identity check is enough: nothing runs between a state's exit and
    # the next state's entry on the same frame, so the value is unchanged.
    last, frame.last_output = frame.last_output, None
    if last is not None and last[0] is data:
        return last[1]
    return compact_json(data)


class StateRun:
    """One visit of one state: its definition, input and helpers."""

    __slots__ = (
        "pending",
        "probe",
        "runner",
        "name",
        "state",
        "input",
        "frame",
        "entered_id",
        "visit",
        "jsonata",
        "retry_count",
        "entered_at",
    )

    def __init__(
        self,
        runner: Runner,
        name: str,
        state: dict[str, Any],
        data: Any,
        frame: Frame,
        entered_id: int,
        visit: int,
    ) -> None:
        self.runner = runner
        self.name = name
        self.state = state
        self.input = data
        self.frame = frame
        self.entered_id = entered_id
        self.visit = visit
        language = state.get("QueryLanguage", runner.machine.query_language)
        self.jsonata = language == JSONATA
        self.retry_count = 0
        self.entered_at = runner.clock.now()
        self.pending: dict[str, Any] | None = None
        # Set only on the state a TestState call runs (see ``probe``).
        self.probe: Probe | None = None

    def inspect(self, key: str, value: Any) -> None:
        """Report an intermediate value (``afterInputPath``...) to TestState."""
        if self.probe is not None:
            self.probe.record(key, value)

    def assign(self, values: dict[str, Any]) -> None:
        """Stage variable values; they take effect when the state exits.

        AWS evaluates every field of a state against the variables as they
        were on entry, so an ``OutputPath`` of ``$x`` still sees the old x.
        """
        if self.pending is None:
            self.pending = dict(values)
        else:
            self.pending.update(values)

    @property
    def key(self) -> str:
        """A name for this visit that is stable across a replay."""
        return f"{self.frame.key}/{self.name}#{self.visit}"

    def context(self) -> dict[str, Any]:
        """Build the context object (``$$`` / ``$states.context``)."""
        if self.probe is not None:
            return self.probe.context(self)
        return self.execution_context()

    def execution_context(self) -> dict[str, Any]:
        """Build the context object an execution shows this state."""
        info = self.runner.info
        state: dict[str, Any] = {
            "Name": self.name,
            "EnteredTime": iso_timestamp(self.entered_at),
        }
        if self.state["Type"] == "Task":
            state["RetryCount"] = self.retry_count
        context: dict[str, Any] = {
            "Execution": {
                "Id": info.arn,
                "Input": info.input,
                "StartTime": iso_timestamp(info.start_time),
                "Name": info.name,
                "RoleArn": info.role_arn,
            },
            "StateMachine": {
                "Id": info.state_machine_arn,
                "Name": info.state_machine_name,
            },
            "State": state,
        }
        if info.redrivable:
            # Only Standard executions can be redriven, so only they count.
            context["Execution"]["RedriveCount"] = 0
        return context

    def emit(self, event_type: str, details: dict[str, Any] | None = None) -> int:
        """Record an event on this state's thread."""
        return self.runner.emit(self.frame, event_type, details)

    @property
    def recording(self) -> bool:
        """Whether this state's events are kept (so details must be built)."""
        return self.runner.recording(self.frame)

    def exit(self, output: Any) -> None:
        """Record the ``...StateExited`` event."""
        details = None
        if self.recording:
            text = compact_json(output)
            self.frame.last_output = (output, text)
            details = {
                "name": self.name,
                "output": text,
                "outputDetails": {"truncated": False},
            }
            if len(details["output"]) > MAX_PAYLOAD_BYTES:
                raise StatesError(
                    DATA_LIMIT_EXCEEDED,
                    f"The state/task '{self.name}' returned a result with a size"
                    " exceeding the maximum number of bytes service limit.",
                )
        if self.pending is not None:
            self.frame.variables.update(self.pending)
            self.pending = None
        self.emit(f"{self.state['Type']}StateExited", details)

    def next(self) -> str | None:
        """The state to go to after this one (None when it ends the program)."""
        return self.state.get("Next")
