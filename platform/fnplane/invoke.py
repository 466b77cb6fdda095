"""The one path every invocation takes.

Build a context, take a concurrency slot (or throttle), get the environment
ready (a cold start runs Init), run the handler under its deadline, classify
the outcome, then log the REPORT line and count the metrics. Sources never
call handlers directly; they call ``Invoker.invoke``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import time
import traceback
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from fnplane.context import Context
from fnplane.deadline import DeadlineExpired, start_eagerly, wait_until
from fnplane.errors import (
    FnplaneError,
    FunctionError,
    HandlerError,
    InitError,
    InvocationTimeoutError,
    ThrottledError,
)
from fnplane.function import Function
from fnplane.lifecycle import HookGroup, InitFailure, InlineEnvironment
from fnplane.lifecycle import run_shutdown_hooks as run_app_shutdown_hooks
from fnplane.logs import bound_if_enabled, log_capture, running_invocation
from fnplane.metrics import FunctionStats, Metrics

if TYPE_CHECKING:
    from fnplane.app import App
    from fnplane.asyncq import AsyncQueue
    from fnplane.config import Settings
    from fnplane.environments import ProcessPool
    from fnplane.workflows.hosting import WorkflowHost

logger = structlog.get_logger(__name__)

Marshal = Callable[[Any], Any]
# Frames from these folders are the platform's, not the handler's: a stack
# trace shows the user's code only.
PLATFORM_FRAMES = (
    str(Path(__file__).resolve().parent),
    str(Path(asyncio.__file__).resolve().parent),
    str(Path(concurrent.futures.__file__).resolve().parent),
)


class Outcome(StrEnum):
    """How an invocation ended."""

    SUCCESS = "success"
    HANDLED_ERROR = "handled_error"
    UNHANDLED_ERROR = "unhandled_error"
    TIMEOUT = "timeout"
    THROTTLED = "throttled"
    INIT_ERROR = "init_error"


@dataclass(slots=True)
class ErrorInfo:
    """An invocation's error as Lambda reports it."""

    error_type: str
    message: str
    stack_trace: list[str] = field(default_factory=list)
    status_code: int | None = None

    def to_lambda(self) -> dict[str, Any]:
        """The ``errorMessage``/``errorType``/``stackTrace`` body Lambda returns."""
        return {
            "errorMessage": self.message,
            "errorType": self.error_type,
            "stackTrace": self.stack_trace,
        }


@dataclass(slots=True)
class InvocationResult:
    """What an invocation produced: the value, or the error and why."""

    request_id: str
    function: str
    outcome: Outcome
    value: Any = None
    error: ErrorInfo | None = None
    duration_ms: float = 0.0
    init_duration_ms: float | None = None
    log: list[str] | None = None

    @property
    def ok(self) -> bool:
        """True when the handler returned normally."""
        return self.outcome is Outcome.SUCCESS

    @property
    def cold_start(self) -> bool:
        """True when this invocation ran the environment's Init."""
        return self.init_duration_ms is not None

    @property
    def billed_duration_ms(self) -> int:
        """The duration rounded up to the next millisecond, as Lambda bills it."""
        return math.ceil(self.duration_ms)

    def unwrap(self) -> Any:
        """Return the value, or raise the ``InvocationError`` that says why not."""
        if self.ok:
            return self.value
        error = self.error or ErrorInfo("Runtime.Error", "invocation failed")
        context = {"function": self.function, "request_id": self.request_id}
        match self.outcome:
            case Outcome.THROTTLED:
                raise ThrottledError(error.message, **context)
            case Outcome.TIMEOUT:
                raise InvocationTimeoutError(error.message, **context)
            case Outcome.INIT_ERROR:
                raise InitError(error.message, **context)
        raise HandlerError(
            error.message,
            error_type=error.error_type,
            stack_trace=error.stack_trace,
            handled=self.outcome is Outcome.HANDLED_ERROR,
            **context,
        )


# Request ids look like Lambda's UUIDs: a random prefix drawn once per process
# and a counter in the last group. Unique across processes and 10x cheaper
# than uuid4() on the per-request path.
_REQUEST_ID_PREFIX = str(uuid.uuid4())[:24]
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """A fresh request id, in the UUID form Lambda uses."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):012x}"


class _Target:
    """What invoking one function needs, looked up once per name: the
    function, its stats and, once it first runs inline, its environment."""

    __slots__ = ("function", "stats", "environment")

    def __init__(self, function: Function, stats: FunctionStats) -> None:
        self.function = function
        self.stats = stats
        self.environment: InlineEnvironment | None = None


class Invoker:
    """Invokes an app's functions: environments, concurrency, deadlines, reports."""

    def __init__(
        self,
        app: App,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        from fnplane.asyncq import create_async_queue
        from fnplane.config import Settings

        self.app = app
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.async_queue: AsyncQueue = create_async_queue(self, self.settings)
        self.workflows: WorkflowHost | None = None
        self._executor = ThreadPoolExecutor(
            self.settings.threads, thread_name_prefix="fnplane-handler"
        )
        self._app_init = HookGroup(app.name, app.init_hooks)
        self._environments: dict[str, InlineEnvironment] = {}
        self._pools: dict[str, ProcessPool] = {}
        self._in_process: dict[str, bool] = {}
        # Names never change function once registered: one dict lookup per
        # invocation instead of four (app, stats, pool, environment).
        self._targets: dict[str, _Target] = {}
        self._slot_freed: dict[str, asyncio.Event] = {}
        self._in_flight = 0
        # Made by drain() while invocations run, set by the last to finish:
        # clearing and setting an Event around every invocation cost 0.3 µs.
        self._idle: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        """Invocations running now, across all functions."""
        return self._in_flight

    async def invoke(
        self,
        name: str,
        event: Any = None,
        *,
        request_id: str | None = None,
        attempt: int = 1,
        capture_log: bool = False,
        wait_for_slot: bool = False,
        marshal: Marshal | None = None,
    ) -> InvocationResult:
        """Invoke function ``name`` with ``event`` and wait for the result.

        At the function's concurrency limit the invocation is throttled, or,
        with ``wait_for_slot`` (queues and stream sources), waits for a slot.
        ``marshal`` turns the handler's value into what the caller needs (an
        HTTP reply, JSON); when it raises, the invocation fails with
        ``Runtime.MarshalError``, as Lambda's does for a result it cannot send.
        Never raises for the handler's sake: the outcome says how it ended.
        Raises ``FunctionNotFoundError`` for an unknown name.
        """
        target = self._targets.get(name) or self._target(name)
        function, stats = target.function, target.stats
        request_id = request_id or new_request_id()
        limit = function.concurrency
        if limit is not None and stats.running >= limit:
            if not wait_for_slot:
                return self._throttled(function, request_id)
            await self._wait_for_slot(stats, limit)

        stats.running += 1
        self._in_flight += 1
        log: list[str] | None = [] if capture_log else None
        token = log_capture.set(log) if log is not None else None
        try:
            environment = target.environment
            if log is None and environment is not None and environment.initialized:
                # The warm inline path goes straight to the handler, one
                # coroutine fewer than through _run; with the per-name
                # lookups, a trivial async handler's invoke went from 3.9 to
                # 3.0 µs.
                result = await self._execute(
                    environment, event, request_id, attempt, marshal, None
                )
            else:
                result = await self._run(
                    target, event, request_id, attempt, log, marshal
                )
        finally:
            if token is not None:
                log_capture.reset(token)
            stats.running -= 1
            self._in_flight -= 1
            if not self._in_flight and self._idle is not None:
                self._idle.set()
            if self._slot_freed:
                slot_freed = self._slot_freed.pop(name, None)
                if slot_freed is not None:
                    slot_freed.set()

        self._report(result, stats, log)
        return result

    def _target(self, name: str) -> _Target:
        target = _Target(self.app.get(name), self.metrics.function(name))
        self._targets[name] = target
        return target

    async def invoke_async(
        self,
        name: str,
        event: Any = None,
        *,
        request_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue an asynchronous invocation; return its request id once stored.

        ``event_id`` is accepted once within the dedup window (a repeat is
        not queued again). Raises ``FunctionNotFoundError`` for an unknown
        name and ``EventEncodingError`` if the event is not JSON.
        """
        self.app.get(name)
        request_id = request_id or new_request_id()
        await self.async_queue.submit(name, event, request_id, event_id)
        return request_id

    async def _wait_for_slot(self, stats: FunctionStats, limit: int) -> None:
        while stats.running >= limit:
            freed = self._slot_freed.setdefault(stats.name, asyncio.Event())
            await freed.wait()

    async def drain(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` for in-flight invocations; True if all finished."""
        try:
            async with asyncio.timeout(grace_s):
                await self.async_queue.drain()
                while self._in_flight:
                    if self._idle is None or self._idle.is_set():
                        self._idle = asyncio.Event()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def shutdown(self) -> None:
        """Close the async queue, then run every started environment's shutdown
        hooks, then the app's."""
        await self.async_queue.close()
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))
        environments = list(self._environments.values())
        for environment in environments:
            await environment.shutdown()
        # Like Lambda, only an environment that started gets a Shutdown phase.
        if any(environment.initialized for environment in environments):
            await run_app_shutdown_hooks(self.app.name, self.app.shutdown_hooks)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def environment(self, function: Function) -> InlineEnvironment:
        """The function's environment, created on first use."""
        environment = self._environments.get(function.name)
        if environment is None:
            environment = InlineEnvironment(
                function, self._app_init, self._executor, self.settings.init_limit
            )
            self._environments[function.name] = environment
        return environment

    async def start_environments(self) -> None:
        """Initialise the environments of every function with ``min_warm``: its
        process environments, or its inline one (its Init runs now)."""
        for function in self.app.functions.values():
            if not function.min_warm:
                continue
            pool = self.process_pool(function)
            if pool is not None:
                await pool.provision()
                continue
            try:
                await self.environment(function).ensure_ready()
            except InitFailure as failure:
                # As Lambda does, the next invocation tries Init again.
                logger.error(
                    "environment.provision_failed",
                    function=function.name,
                    error=str(failure),
                )

    def process_pool(self, function: Function) -> ProcessPool | None:
        """The function's pool of worker processes; None for inline functions."""
        pool = self._pools.get(function.name)
        if pool is not None or not self._runs_in_process(function):
            return pool
        from fnplane.environments import (
            EnvironmentCollector,
            ProcessPool,
            preload_names,
            worker_spec,
        )
        from fnplane.processes import start_fork_server

        if not self._pools:
            self.metrics.registry.register(EnvironmentCollector(self._pools))
            functions = self.app.functions.values()
            isolated = [f for f in functions if self._runs_in_process(f)]
            start_fork_server(preload_names(isolated))
        spec = worker_spec(function, self.settings.init_limit)
        pool = self._pools[function.name] = ProcessPool(function, spec, self._relay)
        return pool

    def _runs_in_process(self, function: Function) -> bool:
        decided = self._in_process.get(function.name)
        if decided is None:
            decided = False
            if (function.isolation or self.settings.isolation) == "process":
                # Imported only here: inline platforms never load multiprocessing.
                from fnplane.environments import runs_in_process

                decided = runs_in_process(function, self.settings.isolation)
            self._in_process[function.name] = decided
        return decided

    async def _relay(
        self, kind: str, target: str, payload: Any, event_id: str | None
    ) -> tuple[bool, Any]:
        """Run a worker's ``ctx.invoke``/``ctx.invoke_async`` here."""
        try:
            if kind == "invoke":
                return True, await self.invoke(target, payload)
            return True, await self.invoke_async(target, payload, event_id=event_id)
        except FnplaneError as exc:
            return False, str(exc)

    async def _run(
        self,
        target: _Target,
        event: Any,
        request_id: str,
        attempt: int,
        log: list[str] | None,
        marshal: Marshal | None,
    ) -> InvocationResult:
        """An invocation off the warm inline path: in a worker process, after
        Init, or with its log captured."""
        if log is not None:
            log.append(f"START RequestId: {request_id} Version: $LATEST")
        # Resolved here, not when the target is made: a function switched
        # off (concurrency 0) is throttled every time and starts no workers.
        pool = self.process_pool(target.function)
        if pool is not None:
            return await self._run_in_process(pool, event, request_id, attempt, marshal)
        environment = target.environment = self.environment(target.function)
        try:
            # A warm environment skips the call: awaiting even a coroutine
            # that returns at once costs a coroutine object per invocation.
            init_ms = (
                None if environment.initialized else await environment.ensure_ready()
            )
        except InitFailure as failure:
            init_error = ErrorInfo(
                failure.error_type, str(failure), failure.stack_trace
            )
            return InvocationResult(
                request_id, target.function.name, Outcome.INIT_ERROR, error=init_error
            )
        return await self._execute(
            environment, event, request_id, attempt, marshal, init_ms
        )

    async def _execute(
        self,
        environment: InlineEnvironment,
        event: Any,
        request_id: str,
        attempt: int,
        marshal: Marshal | None,
        init_ms: float | None,
    ) -> InvocationResult:
        """Run the handler in its ready environment under its deadline."""
        function = environment.function
        # One clock for the duration and the deadline, two clock reads
        # instead of four: on Linux, where the platform runs, perf_counter()
        # reads the same monotonic clock.
        started = time.monotonic()
        deadline = started + function.timeout_s
        context = Context(
            function, request_id, deadline, self, attempt, init_ms is not None
        )
        value: Any = None
        error: ErrorInfo | None
        # Lines the handler logs through the logging module get its request
        # id, as Lambda's runtime prefixes them (a thread copies the context).
        running = running_invocation.set(context)
        try:
            value, pending = start_eagerly(environment.run(event, context))
            if pending is not None:
                value = await wait_until(pending, deadline)
        except DeadlineExpired:
            outcome, error = Outcome.TIMEOUT, self._timed_out(environment, context)
        except FunctionError as exc:
            outcome, error = Outcome.HANDLED_ERROR, handled_error(exc)
        # SystemExit and KeyboardInterrupt from a handler end its invocation,
        # never the platform that runs every other function.
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            outcome, error = Outcome.UNHANDLED_ERROR, self._failed(context, exc)
        else:
            outcome, error = Outcome.SUCCESS, None
        finally:
            running_invocation.reset(running)

        ended = time.monotonic()
        if outcome is Outcome.SUCCESS:
            if ended > deadline:
                outcome, value = Outcome.TIMEOUT, None
                error = self._blocked_loop(environment, context)
            elif marshal is not None:
                outcome, value, error = self._marshal(
                    marshal, value, function.name, request_id
                )
        return InvocationResult(
            request_id,
            function.name,
            outcome,
            value,
            error,
            (ended - started) * 1000,
            init_ms,
        )

    def _blocked_loop(
        self, environment: InlineEnvironment, context: Context
    ) -> ErrorInfo:
        # An async handler that blocked the loop outlived its timeout
        # without ever yielding to the timer; its result is discarded.
        logger.warning(
            "invocation.loop_blocked",
            function=context.function_name,
            request_id=context.aws_request_id,
        )
        return self._timed_out(environment, context)

    async def _run_in_process(
        self,
        pool: ProcessPool,
        event: Any,
        request_id: str,
        attempt: int,
        marshal: Marshal | None,
    ) -> InvocationResult:
        name = pool.function.name
        try:
            run = await pool.run(request_id, event, attempt)
        except InitFailure as failure:
            init_error = ErrorInfo(
                failure.error_type, str(failure), failure.stack_trace
            )
            return InvocationResult(
                request_id, name, Outcome.INIT_ERROR, error=init_error
            )
        outcome, value, error = pool.outcome(run, request_id)
        if outcome is Outcome.SUCCESS and marshal is not None:
            outcome, value, error = self._marshal(marshal, value, name, request_id)
        return InvocationResult(
            request_id, name, outcome, value, error, run.duration_ms, run.init_ms
        )

    def _marshal(
        self, marshal: Marshal, value: Any, name: str, request_id: str
    ) -> tuple[Outcome, Any, ErrorInfo | None]:
        try:
            return Outcome.SUCCESS, marshal(value), None
        except Exception as exc:
            logger.error(
                "invocation.marshal_failed",
                function=name,
                request_id=request_id,
                error=str(exc),
            )
            return (
                Outcome.UNHANDLED_ERROR,
                None,
                ErrorInfo("Runtime.MarshalError", str(exc)),
            )

    def _failed(self, context: Context, exc: BaseException) -> ErrorInfo:
        # The logged traceback starts at the handler, as a process
        # environment's does: the invoker's frames above it are the same for
        # every failure and only hide the user's.
        handler_frames = without_leading_platform_frames(exc.__traceback__)
        logger.error(
            "invocation.failed",
            function=context.function_name,
            request_id=context.aws_request_id,
            exc_info=exc.with_traceback(handler_frames or exc.__traceback__),
        )
        return error_info(exc)

    def _timed_out(self, environment: InlineEnvironment, context: Context) -> ErrorInfo:
        function = environment.function
        message = f"Task timed out after {function.timeout_s:.2f} seconds"
        if not function.is_async:
            # A thread cannot be stopped from outside: the handler runs on,
            # its result discarded, until it returns by itself.
            logger.warning(
                "invocation.thread_left_running",
                function=function.name,
                request_id=context.aws_request_id,
            )
        return ErrorInfo("Sandbox.Timedout", message)

    def _throttled(self, function: Function, request_id: str) -> InvocationResult:
        stats = self.metrics.function(function.name)
        stats.throttles += 1
        stats.invoked(Outcome.THROTTLED)
        logger.warning(
            "invocation.throttled",
            function=function.name,
            request_id=request_id,
            concurrency=function.concurrency,
        )
        message = (
            f"function {function.name!r} is at its concurrency limit "
            f"({function.concurrency}); retry later"
        )
        error = ErrorInfo("TooManyRequestsException", message)
        return InvocationResult(
            request_id, function.name, Outcome.THROTTLED, error=error
        )

    def _report(
        self, result: InvocationResult, stats: FunctionStats, log: list[str] | None
    ) -> None:
        stats.invoked(result.outcome)
        stats.duration.observe(result.duration_ms / 1000)
        if result.init_duration_ms is not None:
            stats.cold_starts += 1
            stats.init_duration.observe(result.init_duration_ms / 1000)
        if result.outcome is not Outcome.SUCCESS:
            stats.errors += 1
            if result.outcome is Outcome.TIMEOUT:
                stats.timeouts += 1
            self._log_failure(result)
        # A filtered-out INFO call still evaluates its arguments: 2 µs an
        # invocation for a line nobody sees at the usual WARNING level.
        report_logger = bound_if_enabled(logger, logging.INFO)
        if report_logger is not None:
            log_report(report_logger, result)
        if log is not None:
            log.extend(report_lines(result))
            result.log = log

    def _log_failure(self, result: InvocationResult) -> None:
        error = result.error
        assert error is not None
        if result.outcome in (Outcome.TIMEOUT, Outcome.INIT_ERROR):
            logger.error(
                f"invocation.{result.outcome.value}",
                function=result.function,
                request_id=result.request_id,
                error=error.message,
            )
        elif result.outcome is Outcome.HANDLED_ERROR:
            logger.warning(
                "invocation.handled_error",
                function=result.function,
                request_id=result.request_id,
                error_type=error.error_type,
                error=error.message,
            )


def handled_error(exc: FunctionError) -> ErrorInfo:
    """Describe an error the handler raised on purpose (its status, if any)."""
    status = getattr(exc, "status_code", None)
    return ErrorInfo(exc.error_type, str(exc), status_code=status)


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe a handler's exception: class name, message, the handler's frames."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(PLATFORM_FRAMES)
    ]
    formatted = traceback.format_list(frames)
    return ErrorInfo(type(exc).__name__, str(exc), [f.rstrip() for f in formatted])


def without_leading_platform_frames(
    frames: types.TracebackType | None,
) -> types.TracebackType | None:
    """``frames`` from the first one outside the platform (None if none is)."""
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(
        PLATFORM_FRAMES
    ):
        frames = frames.tb_next
    return frames


def log_report(report_logger: Any, result: InvocationResult) -> None:
    """Log the invocation's REPORT line at INFO on ``report_logger``."""
    cold = {}
    if result.init_duration_ms is not None:
        cold["init_duration_ms"] = round(result.init_duration_ms, 2)
    report_logger.info(
        "invocation.report",
        function=result.function,
        request_id=result.request_id,
        outcome=result.outcome.value,
        duration_ms=round(result.duration_ms, 2),
        billed_duration_ms=result.billed_duration_ms,
        **cold,
    )


def report_lines(result: InvocationResult) -> list[str]:
    """The END and REPORT lines of an invocation's log, in Lambda's wording."""
    report = (
        f"REPORT RequestId: {result.request_id}\t"
        f"Duration: {result.duration_ms:.2f} ms\t"
        f"Billed Duration: {result.billed_duration_ms} ms"
    )
    if result.init_duration_ms is not None:
        report += f"\tInit Duration: {result.init_duration_ms:.2f} ms"
    lines = [f"END RequestId: {result.request_id}", report]
    if result.outcome is Outcome.TIMEOUT and result.error is not None:
        lines.insert(0, f"{result.request_id} {result.error.message}")
    return lines
