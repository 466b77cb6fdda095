"""The worker side of a process environment: one function, one process.

A worker is forked from the platform's fork server (``processes``), imports
the function's module, runs Init once and then serves invocations one at a
time until told to stop. It talks to the platform over one duplex pipe with
multiprocessing's framing (a 4-byte length, then a pickle); every message is
a tuple whose first item names it:

- platform to worker: ``("invoke", request_id, event, deadline, attempt,
  cold_start)``, ``("reply", ok, value_or_error)`` (answer to a call),
  ``("shutdown",)``;
- worker to platform: ``("ready", init_ms)``, ``("init_failed", error_type,
  message, stack_trace)``, ``("output", stream, line)``, ``("call", kind,
  function, payload, event_id)`` (``ctx.invoke``/``ctx.invoke_async`` relayed
  to the platform), ``("result", value)``, ``("error", outcome, error_type,
  message, stack_trace, status_code)``, ``("stopped",)``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import io
import multiprocessing
import os
import pickle
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import ModuleType
from typing import Any

from fnplane.app import App
from fnplane.context import Context
from fnplane.errors import FunctionError, ProcessEnvironmentError
from fnplane.function import Function
from fnplane.invoke import error_info
from fnplane.lifecycle import InitFailure, run_init_hooks, run_shutdown_hooks

MB = 1024 * 1024
PLATFORM_GONE_EXIT_CODE = 70
OUT_OF_MEMORY = "Runtime.OutOfMemory"
MARSHAL_ERROR = "Runtime.MarshalError"
# Loading __main__ by file under its own name would run its `if __name__ ==
# "__main__"` block again (start another platform); this name does not.
MAIN_ALIAS = "__fnplane_main__"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs to find and run its function."""

    function: str
    module: str
    module_file: str | None
    memory_mb: int
    init_limit_s: float
    sys_path: list[str] = field(default_factory=list)
    alias: str | None = None


class ProcessContext(Context):
    """The context inside a worker: Lambda's attributes; calls relayed to the
    platform over the worker's pipe."""

    __slots__ = ("_channel",)

    log_stream_name = "process"

    def __init__(
        self, function: Function, channel: Channel, request_id: str, deadline: float
    ) -> None:
        super().__init__(function, request_id, deadline)
        self._channel = channel

    async def invoke(self, function: str, payload: Any = None) -> Any:
        """Invoke another function through the platform and return its result."""
        result = self._channel.call("invoke", function, payload, None)
        return result.unwrap()

    async def invoke_async(
        self, function: str, payload: Any = None, *, event_id: str | None = None
    ) -> str:
        """Queue an asynchronous invocation through the platform; return its
        request id once stored."""
        request_id: str = self._channel.call(
            "invoke_async", function, payload, event_id
        )
        return request_id

    async def start_execution(self, state_machine: str, input: Any = None) -> Any:
        """Not available in a process environment: workflows run in the platform."""
        raise ProcessEnvironmentError(
            f"function {self.function_name!r}: start_execution is not available in "
            f"a process environment; start executions from an inline function"
        )


class Channel:
    """The worker's end of the pipe; a lock keeps frames from interleaving
    when a handler's own threads print."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one frame."""
        payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.conn.send_bytes(payload)

    def call(self, kind: str, function: str, payload: Any, event_id: str | None) -> Any:
        """Relay a call to the platform and wait for its reply."""
        self.send(("call", kind, function, payload, event_id))
        _, ok, value = self.conn.recv()
        if not ok:
            raise ProcessEnvironmentError(value)
        return value


class OutputRelay(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a worker: each line goes to the
    platform, which logs it with the request id."""

    def __init__(self, channel: Channel, stream: str) -> None:
        self._channel = channel
        self._stream = stream
        self._pending = ""

    def writable(self) -> bool:
        """Always writable."""
        return True

    def write(self, text: str) -> int:
        """Buffer ``text``; send every complete line."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._channel.send(("output", self._stream, line))
        return len(text)

    def flush(self) -> None:
        """Send a partial line too."""
        if self._pending:
            line, self._pending = self._pending, ""
            self._channel.send(("output", self._stream, line))


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a worker process: Init, then serve until shutdown."""
    exit_with_platform()
    channel = Channel(conn)
    sys.stdout = OutputRelay(channel, "stdout")
    sys.stderr = OutputRelay(channel, "stderr")
    limit_memory(spec.memory_mb)
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    try:
        function, app = loop.run_until_complete(initialize(spec))
    except InitFailure as failure:
        channel.send(
            ("init_failed", failure.error_type, str(failure), failure.stack_trace)
        )
        return
    channel.send(("ready", (time.perf_counter() - started) * 1000))
    serve(loop, channel, function, app)


def exit_with_platform() -> None:
    """End this worker as soon as the platform process ends, however it ends.

    Without this a worker outlives a platform killed with ``kill -9`` and goes
    on running a handler whose invocation is retried elsewhere. A thread
    blocked on the parent's sentinel (a pipe that reads EOF when the parent is
    gone) costs nothing until then.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(PLATFORM_GONE_EXIT_CODE)

    threading.Thread(target=watch, name="fnplane-platform-watch", daemon=True).start()


def limit_memory(memory_mb: int) -> None:
    """Cap the address space at what the interpreter maps now plus ``memory_mb``.

    The interpreter and the platform's modules already map tens of MB of
    address space (more than they touch); counting them against the
    function's memory would leave a 128 MB function almost nothing.
    """
    with open("/proc/self/statm") as statm:
        mapped_bytes = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped_bytes + memory_mb * MB
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


async def initialize(spec: WorkerSpec) -> tuple[Function, App]:
    """Import the function's module and run the app's and the function's Init."""
    try:
        module = load_module(spec)
        function, app = find_function(module, spec.function)
    except Exception as exc:
        raise InitFailure(
            f"{spec.function}: cannot load it in a worker process: {exc}",
            "Runtime.ImportModuleError",
            [],
        ) from exc
    started = time.perf_counter()
    await run_init_hooks(app.name, app.init_hooks, spec.init_limit_s)
    remaining_s = spec.init_limit_s - (time.perf_counter() - started)
    await run_init_hooks(function.name, function.init_hooks, remaining_s)
    return function, app


def load_module(spec: WorkerSpec) -> ModuleType:
    """The handler's module: imported by its name or its alias (preloaded by
    the fork server, so already there), else executed from its file."""
    for path in reversed(spec.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    for name in (spec.module, spec.alias):
        if name is None or name == "__main__":
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # The alias may name another module (a file called like a library's).
        if spec.module_file is None or same_file(module, spec.module_file):
            return module
    name = MAIN_ALIAS if spec.module == "__main__" else spec.module
    return load_file(name, spec.module_file)


def same_file(module: ModuleType, path: str) -> bool:
    """True when ``module`` was loaded from ``path``."""
    loaded = getattr(module, "__file__", None)
    return loaded is not None and os.path.samefile(loaded, path)


def load_file(name: str, path: str | None) -> ModuleType:
    """Execute the module at ``path`` under ``name``."""
    if path is None:
        raise ImportError(f"module {name!r} has no file to load it from")
    file_spec = importlib.util.spec_from_file_location(name, path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module
    file_spec.loader.exec_module(module)
    return module


def find_function(module: ModuleType, name: str) -> tuple[Function, App]:
    """The function called ``name`` in one of the module's apps."""
    for value in vars(module).values():
        if isinstance(value, App) and name in value.functions:
            return value.functions[name], value
    raise LookupError(
        f"no module-level App in {module.__name__} has a function {name!r}"
    )


def serve(
    loop: asyncio.AbstractEventLoop, channel: Channel, function: Function, app: App
) -> None:
    """Answer invocations one at a time until the platform says shutdown."""
    while True:
        message = channel.conn.recv()
        if message[0] == "shutdown":
            loop.run_until_complete(
                run_shutdown_hooks(function.name, function.shutdown_hooks)
            )
            loop.run_until_complete(run_shutdown_hooks(app.name, app.shutdown_hooks))
            channel.send(("stopped",))
            return
        _, request_id, event, deadline, attempt, cold_start = message
        context = ProcessContext(function, channel, request_id, deadline)
        context.attempt = attempt
        context.cold_start = cold_start
        reply = run_handler(loop, function, event, context)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            channel.send(reply)
        except Exception as exc:
            channel.send(unsendable(function, exc))
        if reply[0] == "error" and reply[2] == OUT_OF_MEMORY:
            # The heap may be fragmented past use; a fresh worker replaces this one.
            return


def run_handler(
    loop: asyncio.AbstractEventLoop, function: Function, event: Any, context: Context
) -> tuple[Any, ...]:
    """Run the handler; the reply frame for its value or its error."""
    try:
        value = function.handler(event, context)
        if function.is_async:
            value = loop.run_until_complete(value)
    except FunctionError as exc:
        status = getattr(exc, "status_code", None)
        return ("error", "handled_error", exc.error_type, str(exc), [], status)
    except MemoryError:
        message = (
            f"function {function.name!r} ran out of memory ({function.memory_mb} MB)"
        )
        return ("error", "unhandled_error", OUT_OF_MEMORY, message, [], None)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        info = error_info(exc)
        return (
            "error",
            "unhandled_error",
            info.error_type,
            info.message,
            info.stack_trace,
            None,
        )
    return ("result", value)


def unsendable(function: Function, exc: Exception) -> tuple[Any, ...]:
    """The error frame for a result that cannot cross the process boundary."""
    message = (
        f"function {function.name!r} returned a value that cannot be sent from its "
        f"process environment (it must be picklable): {exc}"
    )
    return ("error", "unhandled_error", MARSHAL_ERROR, message, [], None)
