"""Retry and Catch: which retrier or catcher handles an error, and when.

Retriers and catchers are tried in the order written; the first whose
``ErrorEquals`` names the error (or ``States.ALL``) wins. ``States.ALL`` does
not match ``States.Runtime`` or ``States.DataLimitExceeded``: AWS treats
those as terminal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from fnplane.workflows.errors import ALL, TASK_FAILED, UNCATCHABLE_BY_ALL

DEFAULT_INTERVAL_S = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_RATE = 2.0

# AWS: in Retry and Catch, States.TaskFailed "matches any known error name
# except for States.Timeout" (and never the terminal ones).
_NOT_TASK_FAILED = frozenset({"States.Timeout"}) | UNCATCHABLE_BY_ALL


def error_matches(error_equals: list[str], error: str) -> bool:
    """Tell whether an ``ErrorEquals`` list names ``error``."""
    if error in error_equals:
        return True
    if ALL in error_equals:
        return error not in UNCATCHABLE_BY_ALL
    if TASK_FAILED in error_equals:
        return error not in _NOT_TASK_FAILED
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """One retrier of a state's ``Retry`` list, with AWS's defaults."""

    error_equals: tuple[str, ...]
    interval_s: float = DEFAULT_INTERVAL_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_rate: float = DEFAULT_BACKOFF_RATE
    max_delay_s: float | None = None
    jitter: str = "NONE"

    @classmethod
    def from_definition(cls, retrier: dict[str, Any]) -> RetryPolicy:
        """Build a policy from one entry of a state's ``Retry`` field."""
        return cls(
            error_equals=tuple(retrier["ErrorEquals"]),
            interval_s=float(retrier.get("IntervalSeconds", DEFAULT_INTERVAL_S)),
            max_attempts=int(retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)),
            backoff_rate=float(retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE)),
            max_delay_s=retrier.get("MaxDelaySeconds"),
            jitter=retrier.get("JitterStrategy", "NONE"),
        )

    def delay_s(self, retry_count: int) -> float:
        """Return the wait before retry number ``retry_count`` (0 = first)."""
        delay = self.interval_s * self.backoff_rate**retry_count
        if self.max_delay_s is not None:
            delay = min(delay, float(self.max_delay_s))
        if self.jitter == "FULL":
            delay = random.uniform(0, delay)
        return delay


def find_retrier(
    retriers: list[dict[str, Any]], error: str
) -> tuple[int, RetryPolicy] | None:
    """Return the index and policy of the first retrier matching ``error``."""
    for index, retrier in enumerate(retriers):
        if error_matches(retrier["ErrorEquals"], error):
            return index, RetryPolicy.from_definition(retrier)
    return None


def find_catcher(catchers: list[dict[str, Any]], error: str) -> dict[str, Any] | None:
    """Return the first catcher matching ``error``, or None."""
    for catcher in catchers:
        if error_matches(catcher["ErrorEquals"], error):
            return catcher
    return None
