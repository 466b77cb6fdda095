"""The asynchronous invocation queue: accept now, invoke in the background.

``AsyncQueue`` is the interface every asynchronous path uses (HTTP ``Event``
invocations, the Invoke API's ``Event`` type, ``ctx.invoke_async``).
``InMemoryAsyncQueue`` runs each accepted event once as a background task;
it keeps nothing across a restart.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)


class AsyncQueue(Protocol):
    """Accepts events for asynchronous invocation."""

    async def submit(self, function: str, event: Any, request_id: str) -> None:
        """Accept the event; return once it is accepted, before it runs."""

    async def drain(self) -> None:
        """Wait until every accepted event has been handled."""


class InMemoryAsyncQueue:
    """Runs each accepted event as a background task, with no retries."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, function: str, event: Any, request_id: str) -> None:
        """Start the invocation in the background."""
        task = asyncio.create_task(self._run(function, event, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every background invocation to finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, function: str, event: Any, request_id: str) -> None:
        result = await self._invoker.invoke(
            function, event, request_id=request_id, wait_for_slot=True
        )
        if not result.ok:
            logger.warning(
                "async.invocation_failed",
                function=function,
                request_id=request_id,
                outcome=result.outcome.value,
            )
