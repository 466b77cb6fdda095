"""Stream triggers: which Kafka topics or Redis streams to consume, and how.

``StreamOptions`` holds what both sources share (batching, retries, dead
letter, parallel batches), validated once when the decorator runs and
normalised to seconds. Broker addresses left out fall back to the
``kafka_bootstrap`` and ``redis_url`` settings when the platform starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from fnplane.errors import RegistrationError
from fnplane.function import Trigger
from fnplane.policy import Backoff, validate_backoff

DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 10_000
DEFAULT_BATCH_WINDOW_S = 0.5
MAX_BATCH_WINDOW_S = 300.0
# AWS retries a stream batch forever by default, which lets one poison
# record block its partition; three retries, then the dead letter.
DEFAULT_STREAM_RETRIES = 3
MAX_STREAM_RETRIES = 10_000
DEFAULT_STREAM_BACKOFF = Backoff(1.0, 30.0)
MAX_STREAM_CONCURRENCY = 100
STARTS = ("latest", "earliest")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_CLAIM_IDLE_S = 60.0
# Kafka's legal topic names; Redis stream keys only need to be non-empty.
KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a stream source batches, retries and dead-letters for one function.

    The decorators (``kafka``, ``redis_stream``) take these options:

    - ``batch_size``: most records per batch, default 100 (1 to 10,000).
    - ``batch_window``: seconds (or ``timedelta``) to wait for a batch to
      fill, counted from its first record; default 0.5. A backlog never waits.
    - ``max_batch_bytes``: cut a batch at this many bytes of values (Redis:
      of fields); default none.
    - ``start``: where a new group starts, ``"latest"`` (default) or
      ``"earliest"``.
    - ``retries``: attempts after the first for a failing record, default 3.
    - ``backoff``: wait before a retry, exponential with jitter: a
      ``Backoff(base=, cap=)``, a base in seconds or ``(base, cap)``;
      default base 1 s, cap 30 s.
    - ``bisect_on_error``: split a batch whose invocation failed in halves
      until the failing records are alone; default False.
    - ``max_record_age``: seconds (or ``timedelta``); older records go to the
      dead letter without an attempt; default none.
    - ``dead_letter``: where records past their retries go (a topic of the
      same Kafka cluster, a stream of the same Redis); default none (logged
      at ERROR and skipped).
    - ``concurrency``: batches handled at once, default 1 (Kafka: at most
      one per partition).
    - ``per_record``: call the handler once per record, default False.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S
    max_batch_bytes: int | None = None
    start: str = "latest"
    retries: int = DEFAULT_STREAM_RETRIES
    backoff: Backoff = DEFAULT_STREAM_BACKOFF
    bisect_on_error: bool = False
    max_record_age_s: float | None = None
    dead_letter: str | None = None
    concurrency: int = 1
    per_record: bool = False

    @property
    def max_attempts(self) -> int:
        """The first attempt plus the retries."""
        return self.retries + 1

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions``."""
        return {
            "batch_size": self.batch_size,
            "batch_window": self.batch_window_s,
            "max_batch_bytes": self.max_batch_bytes,
            "start": self.start,
            "retries": self.retries,
            "backoff": {"base": self.backoff.base_s, "cap": self.backoff.cap_s},
            "bisect_on_error": self.bisect_on_error,
            "max_record_age": self.max_record_age_s,
            "dead_letter": self.dead_letter,
            "concurrency": self.concurrency,
            "per_record": self.per_record,
        }

    @classmethod
    def build(cls, where: str, **values: Any) -> StreamOptions:
        """Validate the decorator's stream options; ``where`` names the trigger."""
        default = cls()
        age = values.get("max_record_age")
        dead_letter = values.get("dead_letter")
        if dead_letter is not None and (
            not isinstance(dead_letter, str) or not dead_letter
        ):
            raise RegistrationError(
                f"{where}: dead_letter must be a topic or stream name, "
                f"got {dead_letter!r}"
            )
        start = values.get("start", default.start)
        if start not in STARTS:
            raise RegistrationError(
                f"{where}: start must be one of {STARTS}, got {start!r}"
            )
        max_bytes = values.get("max_batch_bytes")
        return cls(
            batch_size=whole(
                values.get("batch_size", default.batch_size), "batch_size",
                1, MAX_BATCH_SIZE, where,
            ),
            batch_window_s=duration(
                values.get("batch_window", default.batch_window_s), "batch_window",
                MAX_BATCH_WINDOW_S, where, allow_zero=True,
            ),
            max_batch_bytes=None if max_bytes is None else whole(
                max_bytes, "max_batch_bytes", 1, 2**31, where
            ),
            start=start,
            retries=whole(
                values.get("retries", default.retries), "retries",
                0, MAX_STREAM_RETRIES, where,
            ),
            backoff=validate_backoff(values.get("backoff", default.backoff), where),
            bisect_on_error=flag(values.get("bisect_on_error", False),
                                 "bisect_on_error", where),
            max_record_age_s=None if age is None else duration(
                age, "max_record_age", 7 * 24 * 3600.0, where
            ),
            dead_letter=dead_letter,
            concurrency=whole(
                values.get("concurrency", default.concurrency), "concurrency",
                1, MAX_STREAM_CONCURRENCY, where,
            ),
            per_record=flag(values.get("per_record", False), "per_record", where),
        )  # fmt: skip


class StreamTrigger(Trigger):
    """A trigger that consumes a stream in batches; see ``StreamOptions``."""

    options: StreamOptions
    group: str | None

    def grouped(self, function: str) -> StreamTrigger:
        """This trigger with its consumer group defaulted to ``function``."""
        if self.group:
            return self
        changed: StreamTrigger = dataclasses.replace(cast(Any, self), group=function)
        return changed


@dataclass(frozen=True, slots=True)
class KafkaTrigger(StreamTrigger):
    """Consume Kafka ``topics`` in consumer group ``group``."""

    topics: tuple[str, ...]
    group: str | None = None
    bootstrap: str | None = None
    create_topics: bool = False
    options: StreamOptions = field(default_factory=StreamOptions)

    source = "kafka"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions`` and ``fnplane list``."""
        return {
            "type": "kafka",
            "topics": list(self.topics),
            "group": self.group,
            "bootstrap": self.bootstrap,
            **self.options.describe(),
        }


@dataclass(frozen=True, slots=True)
class RedisStreamTrigger(StreamTrigger):
    """Consume Redis ``streams`` in consumer group ``group``."""

    streams: tuple[str, ...]
    group: str | None = None
    url: str | None = None
    consumer: str | None = None
    claim_idle_s: float = DEFAULT_CLAIM_IDLE_S
    options: StreamOptions = field(default_factory=StreamOptions)

    source = "redis_streams"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions`` and ``fnplane list``."""
        return {
            "type": "redis_stream",
            "streams": list(self.streams),
            "group": self.group,
            "url": self.url,
            "consumer": self.consumer,
            "claim_idle": self.claim_idle_s,
            **self.options.describe(),
        }


def stream_names(value: Any, what: str, where: str) -> tuple[str, ...]:
    """One name or a list of names, each a non-empty string."""
    listed = (value,) if isinstance(value, str) else tuple(value or ())
    if not listed or not all(isinstance(name, str) and name for name in listed):
        raise RegistrationError(
            f"{where}: give one {what} name or a list of them, got {value!r}"
        )
    if what == "topic":
        bad = [name for name in listed if not KAFKA_TOPIC.match(name)]
        if bad:
            raise RegistrationError(
                f"{where}: invalid Kafka topic name(s) {bad}: use letters, "
                f"digits, '.', '_' and '-' (at most 249)"
            )
    return listed


def optional_name(value: Any, option: str, where: str) -> str | None:
    """None, or a non-empty string."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise RegistrationError(
        f"{where}: {option} must be a non-empty string, got {value!r}"
    )


def redis_url(value: Any, where: str) -> str | None:
    """None, or a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(REDIS_SCHEMES):
        raise RegistrationError(
            f"{where}: url must start with one of {REDIS_SCHEMES}, e.g. "
            f"'redis://localhost:6379/0', got {value!r}"
        )
    return value


def whole(value: Any, option: str, low: int, high: int, where: str) -> int:
    """A whole number in ``[low, high]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise RegistrationError(
            f"{where}: {option} must be a whole number from {low} to {high}, "
            f"got {value!r}"
        )
    return value


def duration(
    value: Any, option: str, high_s: float, where: str, allow_zero: bool = False
) -> float:
    """Seconds (a number or ``timedelta``) in ``(0, high_s]`` (or from 0)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistrationError(
            f"{where}: {option} must be seconds or a timedelta, got {value!r}"
        )
    low_ok = value >= 0 if allow_zero else value > 0
    if math.isnan(value) or not low_ok or value > high_s:
        lowest = "at least 0" if allow_zero else "more than 0"
        raise RegistrationError(
            f"{where}: {option} must be {lowest} and at most {high_s:g} seconds, "
            f"got {value:g}"
        )
    return float(value)


def flag(value: Any, option: str, where: str) -> bool:
    """A bool, strictly."""
    if not isinstance(value, bool):
        raise RegistrationError(
            f"{where}: {option} must be True or False, got {value!r}"
        )
    return value
