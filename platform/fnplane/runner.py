"""Running an app: the invoker, its sources and a graceful shutdown.

``Platform`` is what ``fnplane run`` starts and what tests start in-process.
Shutdown follows the architecture's order: stop intake (new HTTP requests
get 503), let in-flight invocations finish within the grace period, stop the
sources, run shutdown hooks, return. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
from typing import TYPE_CHECKING, Protocol

import structlog

from fnplane.api import PlatformApi
from fnplane.app import App
from fnplane.config import Settings
from fnplane.errors import RegistrationError
from fnplane.invoke import Invoker
from fnplane.routes import HttpTrigger

if TYPE_CHECKING:
    from fnplane.workflows.hosting import WorkflowHost

logger = structlog.get_logger(__name__)

FORCED_EXIT_CODE = 130


class Source(Protocol):
    """An event source the platform starts and stops."""

    async def start(self) -> None:
        """Begin turning outside events into invocations."""

    def stop_intake(self) -> None:
        """Stop taking new work; in-flight work goes on."""

    async def stop(self, grace_s: float) -> None:
        """Finish or abandon in-flight work within ``grace_s`` and release resources."""


HTTP_SOURCE = "web"
STEP_FUNCTIONS_TARGET = "AWSStepFunctions."


def source_kinds(app: App) -> list[str]:
    """The source modules the app's triggers need, besides the HTTP server."""
    kinds = {t.source for f in app.functions.values() for t in f.triggers}
    return sorted(kinds - {HTTP_SOURCE})


def create_source(kind: str, invoker: Invoker) -> Source:
    """Import ``fnplane.sources.<kind>`` and build its source.

    Imported only when a trigger needs it, so an app without Kafka triggers
    never pays for importing aiokafka (and likewise for redis and watchdog).
    """
    module = importlib.import_module(f"fnplane.sources.{kind}")
    source: Source = module.create_source(invoker)
    return source


class Platform:
    """An app with its invoker, HTTP server and sources, started and stopped."""

    def __init__(self, app: App, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or Settings()
        self.invoker = Invoker(app, self.settings)
        self.api = PlatformApi(self.invoker)
        self.sources: list[Source] = []
        self.workflows: WorkflowHost | None = None
        self._stopping = asyncio.Event()
        self._stopped = False

    @property
    def port(self) -> int:
        """The HTTP port actually bound (useful with port 0)."""
        from fnplane.sources.web import HttpSource

        for source in self.sources:
            if isinstance(source, HttpSource) and source.port is not None:
                port: int = source.port
                return port
        raise RuntimeError("the HTTP source is not started")

    async def start(self, reuse_port: bool = False) -> None:
        """Start the HTTP server (always: it serves the platform API) and the
        sources the app's triggers need."""
        from fnplane.sources.web import HttpSource

        self._check_routes()
        self.app.platform = self
        await self._start_workflows()
        # The queue resumes stored events before any source accepts new ones.
        await self.invoker.async_queue.start()
        await self.invoker.start_environments()
        http = HttpSource(self.invoker, self.api, reuse_port=reuse_port)
        self.sources.append(http)
        for kind in source_kinds(self.app):
            self.sources.append(create_source(kind, self.invoker))
        try:
            for source in self.sources:
                await source.start()
        except BaseException:
            # Stop what already runs (the queue's tasks, the journal) so
            # the error is all the caller sees.
            if self.workflows is not None:
                await self.workflows.stop()
            await self.invoker.shutdown()
            raise
        # What exists now (modules, the app, the sources) lives as long as the
        # platform: the collector need not rescan it on every full pass. A
        # busy stream consumer spends about a quarter less CPU per record.
        gc.freeze()
        if not self.app.functions:
            logger.warning(
                "platform.no_functions",
                hint="decorate handlers with @app.function(), @app.http(...)...",
            )
        logger.info(
            "platform.started",
            functions=sorted(self.app.functions),
            port=http.port,
            pid=os.getpid(),
        )

    def _check_routes(self) -> None:
        """Refuse app routes on the platform's own paths (/health, /metrics...)."""
        for function in self.app.functions.values():
            for trigger in function.triggers:
                if isinstance(trigger, HttpTrigger) and self.api.reserves(trigger.path):
                    raise RegistrationError(
                        f"route {trigger.path} of function {function.name!r} is "
                        f"reserved for the platform's API; choose another path"
                    )

    async def _start_workflows(self) -> None:
        """Host the app's state machines and serve the Step Functions API.

        Only when the app has state machines: others never import the
        interpreter nor open its journal.
        """
        if not self.app.state_machines:
            return
        from fnplane.workflows.hosting import WorkflowHost

        self.workflows = WorkflowHost(self.invoker, self.app.state_machines)
        self.invoker.workflows = self.workflows
        self.api.add_target(STEP_FUNCTIONS_TARGET, self.workflows.api.handle)
        await self.workflows.start()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Ask ``serve`` to shut down (what SIGTERM and SIGINT do)."""
        self._stopping.set()

    async def serve(self) -> None:
        """Run until asked to stop, then shut down gracefully."""
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop intake, drain within the grace period, stop sources, run hooks.

        Safe to call twice; the second call does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        grace_s = self.settings.grace
        for source in self.sources:
            source.stop_intake()
        logger.info(
            "platform.draining", in_flight=self.invoker.in_flight, grace_s=grace_s
        )
        drained = await self.invoker.drain(grace_s)
        if not drained:
            logger.warning("platform.grace_expired", abandoned=self.invoker.in_flight)
        for source in reversed(self.sources):
            await source.stop(grace_s=0 if not drained else 1.0)
        if self.workflows is not None:
            await self.workflows.stop()
        await self.invoker.shutdown()
        if self.app.platform is self:
            self.app.platform = None
        # A process that goes on (tests, an embedding program) may collect
        # what the platform held.
        gc.unfreeze()
        logger.info("platform.stopped")


async def run_until_signalled(platform: Platform, reuse_port: bool = False) -> None:
    """Start ``platform`` and serve until SIGTERM or SIGINT; a second one exits."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if platform.stopping:
            logger.warning("platform.forced_exit", signal=signal.Signals(signum).name)
            os._exit(FORCED_EXIT_CODE)
        logger.info("platform.signal", signal=signal.Signals(signum).name)
        platform.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await platform.start(reuse_port=reuse_port)
    await platform.serve()
