"""Process environments: a pool of worker processes for each function.

Workers are forked from multiprocessing's fork server, a process started once
with the platform's modules and the functions' modules already imported, so
a cold start costs a fork and the function's Init, not a new interpreter.
A pool grows on demand up to the function's ``concurrency`` (``POOL_CAP`` when
unbounded), keeps ``min_warm`` workers initialised from the start, and stops
workers idle for longer than ``idle_timeout``. A worker that times out, runs
out of memory or dies is killed or reaped and replaced by the next cold start;
only its own invocation fails.
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
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
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
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from fnplane.function import Function
from fnplane.lifecycle import SHUTDOWN_HOOK_CAP_S, InitFailure
from fnplane.workers import MARSHAL_ERROR, OUT_OF_MEMORY, WorkerSpec, worker_main

logger = structlog.get_logger(__name__)

FORK_SERVER = multiprocessing.get_context("forkserver")
# CPU-bound handlers gain nothing past the cores; waiting I/O-bound ones are
# better written async or given an explicit concurrency.
POOL_CAP = max(2, 2 * (os.cpu_count() or 1))
REAP_INTERVAL_MAX_S = 1.0
JOIN_TIMEOUT_S = 2.0
# A worker's shutdown runs the function's and the app's hooks, 2 s cap each.
WORKER_STOP_TIMEOUT_S = 2 * SHUTDOWN_HOOK_CAP_S + 0.5

Relay = Callable[[str, str, Any, str | None], Awaitable[tuple[bool, Any]]]


class KillCause(StrEnum):
    """Why a worker was stopped, as the kill counter's label says."""

    TIMEOUT = "timeout"
    CRASH = "crash"
    OUT_OF_MEMORY = "out_of_memory"
    IDLE = "idle"
    SHUTDOWN = "shutdown"


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
    preload = {"fnplane.environments", "fnplane.workers", *modules} - {"__main__"}
    FORK_SERVER.set_forkserver_preload(sorted(preload))


def worker_spec(function: Function, init_limit_s: float) -> WorkerSpec:
    """Where a worker finds ``function``: its module's name and file."""
    module_name: str = function.handler.__module__
    module = sys.modules.get(module_name)
    return WorkerSpec(
        function=function.name,
        module=module_name,
        module_file=getattr(module, "__file__", None),
        memory_mb=function.memory_mb,
        init_limit_s=init_limit_s,
        sys_path=list(sys.path),
    )


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
    module, which it imports itself (``workers.load_module``).
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
    def _Popen(process_obj: Any) -> WorkerPopen:
        return WorkerPopen(process_obj)


class Worker:
    """The platform's handle on one worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.conn, self._child_conn = FORK_SERVER.Pipe()
        self.process = WorkerProcess(
            target=worker_main, args=(spec, self._child_conn), daemon=True
        )
        self.last_used = time.monotonic()
        self.init_ms: float | None = None

    async def start(self) -> float:
        """Fork the worker and wait for its Init; its duration in ms.

        Raises ``InitFailure`` when Init fails or the worker dies meanwhile.
        """
        started = time.perf_counter()
        # The first start launches the fork server (a new interpreter).
        await asyncio.to_thread(self.process.start)
        self._child_conn.close()
        try:
            message = await self.receive()
        except WorkerExit as exc:
            raise InitFailure(str(exc), "Runtime.ExitError", []) from None
        if message[0] == "init_failed":
            await self.reap()
            _, error_type, text, stack_trace = message
            raise InitFailure(text, error_type, stack_trace)
        return (time.perf_counter() - started) * 1000

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one frame (pickled first, so a failure sends nothing)."""
        self.conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

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


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """How an invocation in a worker went: the worker's reply frame (or
    ``("timeout",)``), the init duration of a cold start, the run time."""

    reply: tuple[Any, ...]
    init_ms: float | None
    duration_ms: float


class ProcessPool:
    """A function's worker processes: idle ones LIFO (the warmest first)."""

    def __init__(self, function: Function, spec: WorkerSpec, relay: Relay) -> None:
        self.function = function
        self.spec = spec
        self.cap = function.concurrency or POOL_CAP
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self.starting = 0
        self.kills: Counter[str] = Counter()
        self._relay = relay
        self._freed = asyncio.Event()
        self._closing = False
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    @property
    def size(self) -> int:
        """Workers alive or starting."""
        return len(self.idle) + len(self.busy) + self.starting

    async def acquire(self) -> tuple[Worker, float | None]:
        """A warm worker (init None), or a new one with its init duration in ms.

        Waits while the pool is at its cap. Raises ``InitFailure``.
        """
        while True:
            if self.idle:
                worker = self.idle.pop()
                self.busy.add(worker)
                return worker, None
            if self.size < self.cap:
                worker = await self._start_worker()
                self.busy.add(worker)
                return worker, worker.init_ms
            self._freed.clear()
            await self._freed.wait()

    async def _start_worker(self) -> Worker:
        worker = Worker(self.spec)
        self.starting += 1
        try:
            worker.init_ms = await worker.start()
        finally:
            self.starting -= 1
            self._freed.set()
        return worker

    def release(self, worker: Worker) -> None:
        """Give a worker back after an invocation it survived."""
        self.busy.discard(worker)
        worker.last_used = time.monotonic()
        if self._closing:
            asyncio.get_running_loop().create_task(worker.stop(self.function.name))
        else:
            self.idle.append(worker)
        self._freed.set()

    async def discard(self, worker: Worker, cause: KillCause) -> None:
        """Kill a worker that must not serve again and count why."""
        self.busy.discard(worker)
        self.kills[cause] += 1
        worker.kill()
        self._freed.set()
        await worker.reap()
        logger.warning(
            "environment.killed", function=self.function.name, cause=cause.value
        )

    async def invoke(
        self, worker: Worker, request_id: str, event: Any, call: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """Run one invocation on ``worker``; the worker's reply frame.

        Relays the worker's calls and logs its output meanwhile. Raises
        ``WorkerExit`` if the worker dies.
        """
        try:
            worker.send(("invoke", request_id, event, *call))
        except Exception as exc:
            text = (
                f"function {self.function.name!r}: the event cannot be sent to its "
                f"process environment (it must be picklable): {exc}"
            )
            return ("error", "unhandled_error", MARSHAL_ERROR, text, [], None)
        while True:
            frame = await worker.receive()
            if frame[0] == "output":
                log_output(self.function.name, request_id, frame)
            elif frame[0] == "call":
                _, kind, target, payload, event_id = frame
                reply = await self._relay(kind, target, payload, event_id)
                worker.send(("reply", *reply))
            else:
                return frame

    async def run(self, request_id: str, event: Any, attempt: int) -> ProcessRun:
        """One invocation, start to end: a worker (cold or warm), the handler
        under the function's timeout, and the worker's fate afterwards.

        Raises ``InitFailure`` when a cold start's Init fails.
        """
        worker, init_ms = await self.acquire()
        started = time.perf_counter()
        deadline = time.monotonic() + self.function.timeout_s
        call = (deadline, attempt, init_ms is not None)
        try:
            async with asyncio.timeout(self.function.timeout_s):
                reply = await self.invoke(worker, request_id, event, call)
        except TimeoutError:
            await self.discard(worker, KillCause.TIMEOUT)
            reply = ("timeout",)
        except WorkerExit as exc:
            self.busy.discard(worker)
            self.kills[KillCause.CRASH] += 1
            self._freed.set()
            message = f"RequestId: {request_id} Error: {exc}"
            reply = ("error", "unhandled_error", "Runtime.ExitError", message, [], None)
        else:
            if reply[0] == "error" and reply[2] == OUT_OF_MEMORY:
                await self.discard(worker, KillCause.OUT_OF_MEMORY)
            else:
                self.release(worker)
        return ProcessRun(reply, init_ms, (time.perf_counter() - started) * 1000)

    async def provision(self) -> None:
        """Start workers until ``min_warm`` are alive (provisioned concurrency)."""
        missing = self.function.min_warm - self.size
        results = await asyncio.gather(
            *(self._start_worker() for _ in range(missing)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Worker):
                result.last_used = time.monotonic()
                self.idle.insert(0, result)
            else:
                logger.error(
                    "environment.provision_failed",
                    function=self.function.name,
                    error=str(result),
                )

    async def _reap_idle(self) -> None:
        interval_s = min(self.function.idle_timeout_s / 2, REAP_INTERVAL_MAX_S)
        while not self._closing:
            await asyncio.sleep(interval_s)
            expired_before = time.monotonic() - self.function.idle_timeout_s
            keep = self.function.min_warm
            while (
                self.idle
                and self.size > keep
                and self.idle[0].last_used < expired_before
            ):
                worker = self.idle.pop(0)
                self.kills[KillCause.IDLE] += 1
                await worker.stop(self.function.name)
            if self.size < keep:
                await self.provision()

    async def close(self) -> None:
        """Stop the pool: each worker runs its shutdown hooks, then is gone."""
        self._closing = True
        self._reaper.cancel()
        workers = self.idle + list(self.busy)
        self.idle.clear()
        self.kills[KillCause.SHUTDOWN] += len(workers)
        await asyncio.gather(*(w.stop(self.function.name) for w in workers))


class EnvironmentCollector:
    """Process environments per function (busy, idle) and kills by cause."""

    def __init__(self, pools: dict[str, ProcessPool]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client's registry asks for them."""
        environments = GaugeMetricFamily(
            "fnplane_environments", "Process environments by state.",
            labels=["function", "state"],
        )  # fmt: skip
        kills = CounterMetricFamily(
            "fnplane_environment_kills", "Process environments stopped, by cause.",
            labels=["function", "cause"],
        )  # fmt: skip
        for name, pool in self._pools.items():
            environments.add_metric([name, "busy"], len(pool.busy))
            environments.add_metric([name, "idle"], len(pool.idle))
            for cause in KillCause:
                kills.add_metric([name, cause.value], pool.kills[cause])
        yield environments
        yield kills
