"""Prometheus metrics for invocations, served as text on ``GET /metrics``.

Each runtime owns its registry, so two platforms in one process (tests) never
share counters. Label children are bound once per function: ``labels()``
costs a dict lookup and a lock on every call, which the hot path avoids.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DURATION_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class FunctionMetrics:
    """The metric children of one function, bound once."""

    __slots__ = (
        "invocations",
        "errors",
        "throttles",
        "timeouts",
        "duration_s",
        "cold_starts",
        "init_duration_s",
        "concurrent",
        "_outcomes",
        "_metrics",
        "_name",
    )

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self._outcomes: dict[str, Counter] = {}
        self.errors = metrics.errors.labels(name)
        self.throttles = metrics.throttles.labels(name)
        self.timeouts = metrics.timeouts.labels(name)
        self.duration_s = metrics.duration_s.labels(name)
        self.cold_starts = metrics.cold_starts.labels(name)
        self.init_duration_s = metrics.init_duration_s.labels(name)
        self.concurrent = metrics.concurrent.labels(name)

    def invoked(self, outcome: str) -> None:
        """Count one invocation with its outcome."""
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._metrics.invocations.labels(self._name, outcome)
            self._outcomes[outcome] = counter
        counter.inc()


class Metrics:
    """The platform's metric families in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        by_function = ["function"]
        self.invocations = Counter(
            "fnplane_invocations",
            "Invocations by outcome.",
            ["function", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "fnplane_errors",
            "Invocations that ended in an error (any kind).",
            by_function,
            registry=registry,
        )
        self.throttles = Counter(
            "fnplane_throttles",
            "Invocations refused by the concurrency limit.",
            by_function,
            registry=registry,
        )
        self.timeouts = Counter(
            "fnplane_timeouts",
            "Invocations that outlived their timeout.",
            by_function,
            registry=registry,
        )
        self.duration_s = Histogram(
            "fnplane_duration_seconds",
            "Handler run time.",
            by_function,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.cold_starts = Counter(
            "fnplane_cold_starts",
            "Invocations that ran the environment's Init.",
            by_function,
            registry=registry,
        )
        self.init_duration_s = Histogram(
            "fnplane_init_duration_seconds",
            "Init phase duration.",
            by_function,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.concurrent = Gauge(
            "fnplane_concurrent_executions",
            "Invocations running now.",
            by_function,
            registry=registry,
        )
        self._functions: dict[str, FunctionMetrics] = {}

    def function(self, name: str) -> FunctionMetrics:
        """The bound metric children of function ``name``."""
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = FunctionMetrics(self, name)
        return found

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
