"""Execution environments: Init, Invoke and Shutdown for a function.

An inline environment runs in the platform's own process: ``async def``
handlers on the event loop, plain ones in a shared thread pool so they never
block it. Init runs once, on the first invocation (a cold start); when it
fails or outlives its limit the environment stays uninitialised, and the next
invocation tries Init again, as Lambda does.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import traceback
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from fnplane.context import Context
from fnplane.function import DEFAULT_INIT_LIMIT_S, Function, Hook, call_hook

SHUTDOWN_HOOK_CAP_S = 2.0

logger = structlog.get_logger(__name__)


class InitFailure(Exception):
    """Init raised or timed out; carries what the invocation reports."""

    def __init__(self, message: str, error_type: str, stack_trace: list[str]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.stack_trace = stack_trace


class HookGroup:
    """Hooks run once, together, under one time limit; retried until they pass."""

    def __init__(self, owner: str, hooks: list[Hook]) -> None:
        self.owner = owner
        self.hooks = hooks
        self.ready = not hooks
        self._lock = asyncio.Lock()

    async def run_once(self, limit_s: float) -> bool:
        """Run the hooks unless done already; True when this call ran them."""
        if self.ready:
            return False
        async with self._lock:
            if self.ready:
                return False
            await run_init_hooks(self.owner, self.hooks, limit_s)
            self.ready = True
            return True


class InlineEnvironment:
    """A function's environment inside the platform's process."""

    def __init__(
        self,
        function: Function,
        app_init: HookGroup,
        executor: ThreadPoolExecutor,
        init_limit_s: float = DEFAULT_INIT_LIMIT_S,
    ) -> None:
        self.function = function
        self.init_limit_s = init_limit_s
        self._app_init = app_init
        self._init = HookGroup(function.name, function.init_hooks)
        self._executor = executor
        self._initialized = False

    @property
    def initialized(self) -> bool:
        """True once Init has succeeded; the next invocation is warm."""
        return self._initialized

    async def ensure_ready(self) -> float | None:
        """Run Init if it has not succeeded yet.

        Returns the init duration in ms when this call ran Init (a cold
        start), None when the environment was warm. Raises ``InitFailure``.
        """
        if self._initialized:
            return None
        started = time.perf_counter()
        await self._app_init.run_once(self.init_limit_s)
        remaining_s = self.init_limit_s - (time.perf_counter() - started)
        await self._init.run_once(remaining_s)
        if self._initialized:
            # A concurrent invocation finished Init while this one waited.
            return None
        self._initialized = True
        return (time.perf_counter() - started) * 1000

    def run(self, event: Any, context: Context) -> Awaitable[Any]:
        """Start the handler; the caller awaits it under the deadline."""
        handler = self.function.handler
        if self.function.is_async:
            return handler(event, context)  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        # Copying the context carries contextvars (log capture) into the thread.
        run_in_context = contextvars.copy_context().run
        return loop.run_in_executor(
            self._executor, run_in_context, handler, event, context
        )

    async def shutdown(self) -> None:
        """Run the function's shutdown hooks if it was ever initialised."""
        if self._initialized:
            await run_shutdown_hooks(self.function.name, self.function.shutdown_hooks)


async def run_init_hooks(owner: str, hooks: list[Hook], limit_s: float) -> None:
    """Run init hooks in order within ``limit_s``; raise ``InitFailure``."""
    try:
        async with asyncio.timeout(max(limit_s, 0)):
            for hook in hooks:
                await call_hook(hook)
    except TimeoutError:
        raise InitFailure(
            f"{owner}: init did not finish within {limit_s:.2f} seconds",
            "Runtime.InitTimeout",
            [],
        ) from None
    except Exception as exc:
        raise InitFailure(
            f"{owner}: init failed: {exc}",
            type(exc).__name__,
            traceback.format_exception(exc),
        ) from exc


async def run_shutdown_hooks(owner: str, hooks: list[Hook]) -> None:
    """Run shutdown hooks, each capped at 2 s; log and go on past failures."""
    for hook in hooks:
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            async with asyncio.timeout(SHUTDOWN_HOOK_CAP_S):
                await call_hook(hook)
        except TimeoutError:
            logger.warning("shutdown.hook_timed_out", owner=owner, hook=name)
        except Exception:
            logger.exception("shutdown.hook_failed", owner=owner, hook=name)
