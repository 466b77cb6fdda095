"""The platform's handle on a worker process: launch, frames, end.

Workers fork from multiprocessing's fork server, a process started once
with the platform's modules and the functions' modules already imported, so
a cold start costs a fork and the function's Init, not a new interpreter.
Frames (see ``workers``) are read on the event loop, without a thread hop.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import pickle
import signal
import sys
import time
from multiprocessing import (
    context,
    forkserver,
    popen_forkserver,
    reduction,
    spawn,
    util,
)
from typing import Any

import structlog

from fnplane.lifecycle import SHUTDOWN_HOOK_CAP_S, InitFailure
from fnplane.workers import WorkerSpec, worker_main

logger = structlog.get_logger(__name__)

FORK_SERVER = multiprocessing.get_context("forkserver")
JOIN_TIMEOUT_S = 2.0
# ``WorkerPopen`` copies CPython's launch as it is before this version.
LAUNCH_COPIED_UNTIL = (3, 14)
# The platform's own wait for a worker's Init, beyond the init limit the
# worker keeps itself: forking and importing the module count in it too.
INIT_MARGIN_S = 1.0
# A worker's shutdown runs the function's and the app's hooks, 2 s cap each.
WORKER_STOP_TIMEOUT_S = 2 * SHUTDOWN_HOOK_CAP_S + 0.5


class WorkerExit(Exception):
    """The worker process ended while the platform waited for it."""


def start_fork_server(modules: list[str]) -> None:
    """Preload ``modules`` into the fork server; only before its first use.

    Modules a worker cannot import by name (a script run as ``__main__``, a
    file ``fnplane run`` loaded by path) are executed from their file at each
    cold start instead.
    """
    # The worker process object is unpickled in the child: its class comes
    # from this module, the entry point from `workers`.
    preload = {"fnplane.processes", "fnplane.workers", *modules} - {"__main__"}
    FORK_SERVER.set_forkserver_preload(sorted(preload))


def describe_exit(exitcode: int | None) -> str:
    """Lambda's wording for a runtime that ended: exit code or signal name."""
    if exitcode is None:
        return "Runtime exited without an exit status"
    if exitcode < 0:
        return f"Runtime exited with signal: {signal.Signals(-exitcode).name}"
    return f"Runtime exited with error: exit status {exitcode}"


class WorkerPopen(popen_forkserver.Popen):
    """multiprocessing's fork-server launch, minus re-running ``__main__``.

    multiprocessing makes each child import the parent's main script again
    (``fnplane``'s console script, a benchmark, a test runner), which would
    cost every cold start tens of ms; a worker needs only its function's
    module, which it imports itself (``workers.load_module``). The body is
    CPython's own ``Popen._launch`` (3.11 to 3.13) with the two main-module
    entries dropped from the preparation data.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in ("init_main_from_path", "init_main_from_name"):
            prep_data.pop(key, None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        # Private multiprocessing names that typeshed does not declare.
        fds = self._fds  # type: ignore[attr-defined]
        self.sentinel, w = forkserver.connect_to_new_process(fds)
        # As multiprocessing does: the child watches this duplicate to learn
        # that the parent has gone.
        parent_w = os.dup(w)
        close_fds = util.close_fds  # type: ignore[attr-defined]
        self.finalizer = util.Finalize(self, close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as data:
            data.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class WorkerProcess(context.ForkServerProcess):
    """A fork-server process launched by ``WorkerPopen``."""

    @staticmethod
    def _Popen(process_obj: Any) -> popen_forkserver.Popen:
        if sys.version_info >= LAUNCH_COPIED_UNTIL:
            # A later CPython may launch differently: its own way is correct,
            # only slower (the main script runs again in each worker).
            return popen_forkserver.Popen(process_obj)
        return WorkerPopen(process_obj)


class Worker:
    """The platform's handle on one worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.conn, self._child_conn = FORK_SERVER.Pipe()
        self.process = WorkerProcess(
            target=worker_main, args=(spec, self._child_conn), daemon=True
        )
        self.last_used = time.monotonic()
        self.init_ms: float | None = None

    async def start(self) -> float:
        """Fork the worker and wait for its Init; its duration in ms.

        Raises ``InitFailure`` when Init fails, outlives the init limit (the
        module's import included, as Lambda counts it) or the worker dies.
        """
        started = time.perf_counter()
        # The first start launches the fork server (a new interpreter).
        await asyncio.to_thread(self.process.start)
        self._child_conn.close()
        limit_s = self.spec.init_limit_s + INIT_MARGIN_S
        try:
            async with asyncio.timeout(limit_s):
                message = await self.receive()
                while message[0] == "output":
                    log_output(self.spec.function, None, message)
                    message = await self.receive()
        except TimeoutError:
            self.kill()
            await self.reap()
            text = f"{self.spec.function}: init did not finish within {limit_s:.2f} s"
            raise InitFailure(text, "Runtime.InitTimeout", []) from None
        except WorkerExit as exc:
            raise InitFailure(str(exc), "Runtime.ExitError", []) from None
        if message[0] == "init_failed":
            await self.reap()
            _, error_type, text, stack_trace = message
            raise InitFailure(text, error_type, stack_trace)
        return (time.perf_counter() - started) * 1000

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one frame (pickled first, so a failure sends nothing)."""
        self.send_bytes(encode(message))

    def send_bytes(self, payload: bytes) -> None:
        """Send an encoded frame; ``WorkerExit`` if the worker is gone."""
        try:
            self.conn.send_bytes(payload)
        except OSError:
            self.kill()
            raise WorkerExit(describe_exit(self.process.exitcode)) from None

    async def receive(self) -> tuple[Any, ...]:
        """The next frame; ``WorkerExit`` with Lambda's wording if it died."""
        try:
            if not self.conn.poll():
                await readable(self.conn.fileno())
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            await self.reap()
            raise WorkerExit(describe_exit(self.process.exitcode)) from None
        return message

    def kill(self) -> None:
        """SIGKILL the worker (a timed-out handler gets no say)."""
        if self.process.is_alive():
            self.process.kill()

    async def reap(self) -> None:
        """Wait for the process to end (killing it if it lingers) and close."""
        await asyncio.to_thread(self.process.join, JOIN_TIMEOUT_S)
        if self.process.exitcode is None:
            self.process.kill()
            await asyncio.to_thread(self.process.join, JOIN_TIMEOUT_S)
        self.conn.close()

    async def stop(self, function: str) -> None:
        """Let the worker run its shutdown hooks, then make sure it is gone."""
        try:
            self.send(("shutdown",))
            async with asyncio.timeout(WORKER_STOP_TIMEOUT_S):
                while (message := await self.receive())[0] != "stopped":
                    log_output(function, None, message)
        except (TimeoutError, WorkerExit, OSError):
            logger.warning("environment.stop_timed_out", function=function)
        self.process.terminate()
        await self.reap()


def encode(message: tuple[Any, ...]) -> bytes:
    """A frame's pickle; raises whatever pickling raises for what it cannot send."""
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


async def readable(fd: int) -> None:
    """Wait until ``fd`` can be read, on the event loop (no thread hop)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def log_output(function: str, request_id: str | None, message: tuple[Any, ...]) -> None:
    """Log a line a worker printed, under the invocation's request id."""
    if message[0] == "output":
        logger.info(
            "function.output",
            function=function,
            request_id=request_id,
            stream=message[1],
            line=message[2],
        )
