"""Prometheus metrics of the async queue, in the platform's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

EVENT_AGE_BUCKETS_S = (
    0.001,
    0.01,
    0.1,
    1,
    10,
    60,
    300,
    900,
    3600,
    6 * 3600,
)


class AsyncFunctionMetrics:
    """The async queue's metric children of one function, bound once."""

    __slots__ = (
        "received",
        "queued",
        "event_age_s",
        "retried",
        "duplicates",
        "_dropped",
        "_name",
    )

    def __init__(self, metrics: AsyncQueueMetrics, name: str) -> None:
        self.received = metrics.received.labels(name)
        self.queued = metrics.queued.labels(name)
        self.event_age_s = metrics.event_age_s.labels(name)
        self.retried = metrics.retried.labels(name)
        self.duplicates = metrics.duplicates.labels(name)
        self._dropped = metrics.dropped
        self._name = name

    def dropped(self, condition: str) -> Counter:
        """The counter of events given up with ``condition``."""
        return self._dropped.labels(self._name, condition)


class AsyncQueueMetrics:
    """Events received, in queue, their age, retries and events given up."""

    def __init__(self, registry: CollectorRegistry) -> None:
        by_function = ["function"]
        self.received = Counter(
            "fnplane_async_events_received",
            "Asynchronous events accepted (persisted).",
            by_function,
            registry=registry,
        )
        self.queued = Gauge(
            "fnplane_async_events_queued",
            "Accepted asynchronous events not finished yet.",
            by_function,
            registry=registry,
        )
        self.event_age_s = Histogram(
            "fnplane_async_event_age_seconds",
            "Age of an asynchronous event when an attempt starts.",
            by_function,
            buckets=EVENT_AGE_BUCKETS_S,
            registry=registry,
        )
        self.retried = Counter(
            "fnplane_async_retries",
            "Attempts that failed and were scheduled again.",
            by_function,
            registry=registry,
        )
        self.duplicates = Counter(
            "fnplane_async_duplicates",
            "Events refused because their event id was accepted already.",
            by_function,
            registry=registry,
        )
        self.dropped = Counter(
            "fnplane_async_events_dropped",
            "Events given up and sent to the failure destination (or discarded).",
            ["function", "condition"],
            registry=registry,
        )
        self._functions: dict[str, AsyncFunctionMetrics] = {}

    def function(self, name: str) -> AsyncFunctionMetrics:
        """The bound metric children of function ``name``."""
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = AsyncFunctionMetrics(self, name)
        return found
