"""Metrics of the async queue, in the platform's own registry.

As for invocations (see ``fnplane.metrics``), the queue bumps plain counts
on an ``AsyncFunctionStats`` and a collector turns them into metric
families only when the registry is scraped: a prometheus_client Histogram
observation takes a lock and cost 0.6 µs, once for every file of a burst.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from fnplane.metrics import BucketCounts, counter, histogram

EVENT_AGE_BUCKETS_S = (0.001, 0.01, 0.1, 1, 10, 60, 300, 900, 3600, 6 * 3600)


class AsyncFunctionStats:
    """What the async queue counts of one function's events."""

    __slots__ = ("name", "received", "queued", "event_age", "retried",
                 "duplicates", "dropped")  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        # Accepted events not finished yet (a gauge).
        self.queued = 0
        self.event_age = BucketCounts(EVENT_AGE_BUCKETS_S)
        self.retried = 0
        self.duplicates = 0
        # Events given up, by condition (RetriesExhausted, EventAgeExceeded).
        self.dropped: dict[str, int] = {}

    def given_up(self, condition: str) -> None:
        """Count one event given up with ``condition``."""
        self.dropped[condition] = self.dropped.get(condition, 0) + 1


class AsyncQueueMetrics:
    """Events received, in queue, their age, retries and events given up."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._functions: dict[str, AsyncFunctionStats] = {}
        registry.register(AsyncQueueCollector(self._functions))

    def function(self, name: str) -> AsyncFunctionStats:
        """The stats of function ``name``, created on first use."""
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = AsyncFunctionStats(name)
        return found


class AsyncQueueCollector:
    """Turns every function's async stats into metric families at scrape time."""

    def __init__(self, functions: dict[str, AsyncFunctionStats]) -> None:
        self._functions = functions

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client's registry asks for them."""
        stats = list(self._functions.values())
        yield counter("fnplane_async_events_received",
                      "Asynchronous events accepted (persisted).",
                      stats, "received")  # fmt: skip
        queued = GaugeMetricFamily(
            "fnplane_async_events_queued",
            "Accepted asynchronous events not finished yet.",
            labels=["function"],
        )
        for function in stats:
            queued.add_metric([function.name], function.queued)
        yield queued
        yield histogram("fnplane_async_event_age_seconds",
                        "Age of an asynchronous event when an attempt starts.",
                        stats, "event_age")  # fmt: skip
        yield counter("fnplane_async_retries",
                      "Attempts that failed and were scheduled again.",
                      stats, "retried")  # fmt: skip
        yield counter("fnplane_async_duplicates",
                      "Events refused because their event id was accepted already.",
                      stats, "duplicates")  # fmt: skip
        dropped = CounterMetricFamily(
            "fnplane_async_events_dropped",
            "Events given up and sent to the failure destination (or discarded).",
            labels=["function", "condition"],
        )
        for function in stats:
            for condition, count in function.dropped.items():
                dropped.add_metric([function.name, condition], count)
        yield dropped
