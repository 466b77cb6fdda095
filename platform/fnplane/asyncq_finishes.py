"""Deleting finished events from the async queue's store, in batches.

One store write takes every event that finished while the previous write
was under way, so a burst costs a write per batch rather than per event.
An event finished and not yet deleted is still claimed by this owner: after
a kill -9 it is delivered again, as after a kill during its attempt
(at-least-once). A batch waits only for the write under way, which also
carries the lanes' claims, so it holds no more events than the lanes
deliver meanwhile. An event never stored (see ``submit_backed``) has
nothing to delete: it is only counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog

from fnplane.asyncq_metrics import AsyncQueueMetrics
from fnplane.eventstore import EventStore, QueuedEvent

logger = structlog.get_logger(__name__)


class FinishedEvents:
    """Finished events waiting for their batch's delete."""

    def __init__(self, store: EventStore, metrics: AsyncQueueMetrics) -> None:
        self._store = store
        self._metrics = metrics
        # Events finished, not yet deleted.
        self._waiting: list[QueuedEvent] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, event: QueuedEvent) -> None:
        """Delete ``event`` with the next batch; the caller goes on at once."""
        self._waiting.append(event)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def written(self) -> None:
        """Wait until every event added so far is deleted (or failed to be)."""
        while self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                stored = [event.event_id for event in batch if event.stored]
                try:
                    if stored:
                        await self._store.finish_many(stored)
                except Exception as exc:
                    # The events stay claimed; a restart delivers them again.
                    logger.error(
                        "asyncq.finish_failed", events=len(batch), error=str(exc)
                    )
                    continue
                finished = Counter(event.function for event in batch)
                for function, count in finished.items():
                    self._metrics.function(function).queued -= count
        finally:
            self._writer = None
