"""Prometheus metrics for invocations, served as text on ``GET /metrics``.

Each platform owns its registry, so two platforms in one process (tests)
never share series. The per-invocation figures are plain counters on a
``FunctionStats`` that the invocation path bumps, turned into metric
families only when the registry is scraped, through prometheus_client's
custom-collector interface: a Counter, Gauge and Histogram update each takes
a lock and a few calls, which added up to a tenth of a small HTTP request's
cost. Other parts of the platform register ordinary prometheus_client
metrics on ``Metrics.registry``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

DURATION_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST
T = TypeVar("T")


class BucketCounts:
    """A histogram's state: observations per bucket and their sum."""

    __slots__ = ("bounds_s", "counts", "total_s")

    def __init__(self, bounds_s: tuple[float, ...] = DURATION_BUCKETS_S) -> None:
        self.bounds_s = bounds_s
        self.counts = [0] * (len(bounds_s) + 1)
        self.total_s = 0.0

    def observe(self, value_s: float) -> None:
        """Count one observation in seconds."""
        self.counts[bisect_left(self.bounds_s, value_s)] += 1
        self.total_s += value_s

    def cumulative(self) -> list[tuple[str, float]]:
        """The ``le`` buckets Prometheus expects, ending with ``+Inf``."""
        bounds = [str(float(bound)) for bound in self.bounds_s] + ["+Inf"]
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class FunctionStats:
    """Everything counted about one function's invocations."""

    __slots__ = (
        "name", "running", "outcomes", "errors", "throttles", "timeouts",
        "cold_starts", "duration", "init_duration",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = 0
        self.outcomes: dict[str, int] = {}
        self.errors = 0
        self.throttles = 0
        self.timeouts = 0
        self.cold_starts = 0
        self.duration = BucketCounts()
        self.init_duration = BucketCounts()

    def invoked(self, outcome: str) -> None:
        """Count one invocation with its outcome."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class InvocationCollector:
    """Turns every function's stats into metric families at scrape time."""

    def __init__(self, functions: dict[str, FunctionStats]) -> None:
        self._functions = functions

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client's registry asks for them."""
        stats = list(self._functions.values())
        invocations = CounterMetricFamily(
            "fnplane_invocations", "Invocations by outcome.",
            labels=["function", "outcome"],
        )  # fmt: skip
        for function in stats:
            for outcome, count in function.outcomes.items():
                invocations.add_metric([function.name, outcome], count)
        yield invocations
        yield counter("fnplane_errors", "Invocations that ended in any error.",
                      stats, "errors")  # fmt: skip
        yield counter("fnplane_throttles", "Invocations refused at the concurrency "
                      "limit.", stats, "throttles")  # fmt: skip
        yield counter("fnplane_timeouts", "Invocations that outlived their timeout.",
                      stats, "timeouts")  # fmt: skip
        yield counter("fnplane_cold_starts", "Invocations that ran Init.",
                      stats, "cold_starts")  # fmt: skip
        running = GaugeMetricFamily(
            "fnplane_concurrent_executions", "Invocations running now.",
            labels=["function"],
        )  # fmt: skip
        for function in stats:
            running.add_metric([function.name], function.running)
        yield running
        yield histogram("fnplane_duration_seconds", "Handler run time.",
                        stats, "duration")  # fmt: skip
        yield histogram("fnplane_init_duration_seconds", "Init phase duration.",
                        stats, "init_duration")  # fmt: skip


class NamedStats(Protocol):
    """Counts kept for one function: ``FunctionStats`` and the like."""

    name: str


def counter(
    name: str, documentation: str, stats: Sequence[NamedStats], field: str
) -> CounterMetricFamily:
    """A per-function counter family from one field of each function's stats."""
    family = CounterMetricFamily(name, documentation, labels=["function"])
    for function in stats:
        family.add_metric([function.name], getattr(function, field))
    return family


def histogram(
    name: str, documentation: str, stats: Sequence[NamedStats], field: str
) -> HistogramMetricFamily:
    """A per-function histogram family from one ``BucketCounts`` field of
    each function's stats."""
    family = HistogramMetricFamily(name, documentation, labels=["function"])
    for function in stats:
        counts: BucketCounts = getattr(function, field)
        family.add_metric([function.name], counts.cumulative(), counts.total_s)
    return family


class Metrics:
    """The platform's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._functions: dict[str, FunctionStats] = {}
        self._shared: dict[str, Any] = {}
        self.registry.register(InvocationCollector(self._functions))

    def shared(self, key: str, build: Callable[[CollectorRegistry], T]) -> T:
        """The metrics ``build`` registers, built once per registry.

        Several sources of one kind share their metric families: the
        registry refuses a name registered twice.
        """
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = build(self.registry)
        return found

    def function(self, name: str) -> FunctionStats:
        """The stats of function ``name``, created on first use."""
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = FunctionStats(name)
        return found

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
