"""Process environments: a pool of worker processes for each function.

A pool grows on demand up to the function's ``concurrency`` (``POOL_CAP`` when
unbounded), keeps ``min_warm`` workers initialised from the start, and stops
workers idle for longer than ``idle_timeout``. A worker that times out, runs
out of memory or dies is killed or reaped and replaced by the next cold start;
only its own invocation fails.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from fnplane.app import App
from fnplane.function import Function, importable_by_path
from fnplane.invoke import ErrorInfo, Outcome
from fnplane.lifecycle import InitFailure
from fnplane.processes import Worker, WorkerExit, encode, log_output
from fnplane.workers import MARSHAL_ERROR, OUT_OF_MEMORY, WorkerSpec

logger = structlog.get_logger(__name__)

# CPU-bound handlers gain nothing past the cores; waiting I/O-bound ones are
# better written async or given an explicit concurrency.
POOL_CAP = max(2, 2 * (os.cpu_count() or 1))
REAP_INTERVAL_MAX_S = 1.0

Relay = Callable[[str, str, Any, str | None], Awaitable[tuple[bool, Any]]]


class KillCause(StrEnum):
    """Why a worker was stopped, as the kill counter's label says."""

    TIMEOUT = "timeout"
    CRASH = "crash"
    OUT_OF_MEMORY = "out_of_memory"
    IDLE = "idle"
    ABANDONED = "abandoned"
    SHUTDOWN = "shutdown"


def worker_spec(function: Function, init_limit_s: float) -> WorkerSpec:
    """Where a worker finds ``function``: its module's names and file."""
    module_name: str = function.handler.__module__
    module_file = getattr(sys.modules.get(module_name), "__file__", None)
    return WorkerSpec(
        function=function.name,
        module=module_name,
        module_file=module_file,
        memory_mb=function.memory_mb,
        init_limit_s=init_limit_s,
        sys_path=list(sys.path),
        alias=import_alias(module_name, module_file),
    )


def import_alias(module_name: str, module_file: str | None) -> str | None:
    """Another name the module imports under, when its own name does not.

    A script run as ``__main__`` and the files ``fnplane run`` loads by path
    (``fnplane_functions.<stem>``) live in a folder on ``sys.path``, so
    ``<stem>`` imports them: the fork server can preload them under it.
    """
    if module_file is None or "." in Path(module_file).stem:
        return None
    path = Path(module_file)
    folders = {str(Path(p or ".").resolve()) for p in sys.path}
    if path.name == "__init__.py" or str(path.parent.resolve()) not in folders:
        return None
    return None if path.stem == module_name else path.stem


def preload_names(functions: list[Function]) -> list[str]:
    """The module names the fork server imports for ``functions``."""
    names: set[str] = set()
    for function in functions:
        spec = worker_spec(function, 0)
        names.update(name for name in (spec.module, spec.alias) if name)
    return sorted(names)


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
        self.cap = POOL_CAP if function.concurrency is None else function.concurrency
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self.starting = 0
        self.kills: Counter[str] = Counter()
        self._relay = relay
        self._freed = asyncio.Event()
        self._closing = False
        self._stopping: set[asyncio.Task[None]] = set()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    @property
    def size(self) -> int:
        """Workers alive or starting."""
        return len(self.idle) + len(self.busy) + self.starting

    async def acquire(self) -> tuple[Worker, float | None]:
        """A warm worker (init None), or a new one with its init duration in ms.

        Waits while the pool is at its cap. Raises ``InitFailure``, also once
        the pool is closing (no work is handed out then).
        """
        while True:
            if self._closing:
                raise InitFailure(
                    f"{self.function.name}: the platform is shutting down",
                    "Runtime.ShuttingDown",
                    [],
                )
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
            stopping = asyncio.get_running_loop().create_task(
                worker.stop(self.function.name)
            )
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
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
            payload = encode(("invoke", request_id, event, *call))
        except Exception as exc:
            text = (
                f"function {self.function.name!r}: the event cannot be sent to its "
                f"process environment (it must be picklable): {exc}"
            )
            return ("error", "unhandled_error", MARSHAL_ERROR, text, [], None)
        worker.send_bytes(payload)
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
        except asyncio.CancelledError:
            # The caller gave up mid-invocation: the worker's reply would
            # arrive for nobody and desynchronise its pipe, so it goes.
            self._abandon(worker)
            raise
        except WorkerExit as exc:
            self.busy.discard(worker)
            await worker.reap()
            if not self._closing:
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

    def _abandon(self, worker: Worker) -> None:
        self.busy.discard(worker)
        self.kills[KillCause.ABANDONED] += 1
        worker.kill()
        self._freed.set()
        reaping = asyncio.get_running_loop().create_task(worker.reap())
        self._stopping.add(reaping)
        reaping.add_done_callback(self._stopping.discard)

    def outcome(
        self, run: ProcessRun, request_id: str
    ) -> tuple[Outcome, Any, ErrorInfo | None]:
        """Classify ``run`` as the invocation path classifies an inline call."""
        return outcome_of(run, self.function, request_id)

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
        idle, self.idle = self.idle, []
        # Busy workers outlived the grace period: their invocations are
        # abandoned, and only the invocation may read a busy worker's pipe.
        for worker in self.busy:
            worker.kill()
        self.kills[KillCause.SHUTDOWN] += len(idle) + len(self.busy)
        await asyncio.gather(
            *(w.stop(self.function.name) for w in idle), *self._stopping
        )


def outcome_of(
    run: ProcessRun, function: Function, request_id: str
) -> tuple[Outcome, Any, ErrorInfo | None]:
    """Classify a worker's reply as the invocation path does an inline call."""
    reply = run.reply
    if reply[0] == "result":
        return Outcome.SUCCESS, reply[1], None
    if reply[0] == "timeout":
        message = f"Task timed out after {function.timeout_s:.2f} seconds"
        return Outcome.TIMEOUT, None, ErrorInfo("Sandbox.Timedout", message)
    _, outcome, error_type, message, stack_trace, status = reply
    if outcome == Outcome.UNHANDLED_ERROR:
        logger.error(
            "invocation.failed",
            function=function.name,
            request_id=request_id,
            error_type=error_type,
            error=message,
            stack_trace="".join(stack_trace) or None,
        )
    return Outcome(outcome), None, ErrorInfo(error_type, message, stack_trace, status)


def runs_in_process(function: Function, default_isolation: str) -> bool:
    """True when the function gets process environments.

    Its own ``isolation`` decides; without one, the platform's default does,
    except for a handler no worker could import (defined inside a function, or
    not on a module-level ``App``): it stays inline, with a warning.
    """
    isolation = function.isolation or default_isolation
    if isolation != "process":
        return False
    if function.isolation is not None or importable(function):
        return True
    logger.warning(
        "environment.inline_fallback",
        function=function.name,
        reason="a worker cannot import the handler: define it at module level, "
        "registered on a module-level App",
    )
    return False


def importable(function: Function) -> bool:
    """True when a worker can find the function on an App of its module."""
    if not importable_by_path(function.handler):
        return False
    module = sys.modules.get(function.handler.__module__)
    apps = [v for v in vars(module).values() if isinstance(v, App)] if module else []
    return any(app.functions.get(function.name) is function for app in apps)


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
