"""A function's asynchronous invocation policy: retries, backoff, age, destinations.

Every decorator accepts the options; they apply whenever the function is
invoked asynchronously (an ``Event`` invoke, ``ctx.invoke_async``, a file
event). Values are validated once, when the decorator runs, and normalised to
seconds here so the queue never meets a ``timedelta``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fnplane.errors import RegistrationError

if TYPE_CHECKING:
    from fnplane.destinations import Destination

DEFAULT_RETRIES = 2
MAX_RETRIES = 100
# Lambda retries an asynchronous event after about one minute, then about two.
DEFAULT_BACKOFF_BASE_S = 60.0
DEFAULT_BACKOFF_CAP_S = 300.0
DEFAULT_MAX_EVENT_AGE_S = 6 * 3600.0
MAX_EVENT_AGE_LIMIT_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between attempts of an async event.

    The n-th retry waits a random time between half and all of
    ``min(cap, base * 2 ** (n - 1))`` seconds ("equal jitter": never a retry
    storm, never much shorter than asked). ``base`` and ``cap`` are seconds or
    ``timedelta``; defaults 60 and 300, close to Lambda's one then two minutes.
    """

    base: float | timedelta = DEFAULT_BACKOFF_BASE_S
    cap: float | timedelta = DEFAULT_BACKOFF_CAP_S

    @property
    def base_s(self) -> float:
        """``base`` in seconds."""
        return _as_seconds(self.base)

    @property
    def cap_s(self) -> float:
        """``cap`` in seconds."""
        return _as_seconds(self.cap)

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        ceiling_s = min(self.cap_s, self.base_s * 2.0 ** max(0, retry - 1))
        return ceiling_s / 2 + random.uniform(0, ceiling_s / 2)


@dataclass(frozen=True, slots=True)
class AsyncPolicy:
    """What happens to a function's asynchronous events after each attempt."""

    retries: int = DEFAULT_RETRIES
    backoff: Backoff = Backoff()
    max_event_age_s: float = DEFAULT_MAX_EVENT_AGE_S
    on_success: Destination | None = None
    on_failure: Destination | None = None

    @property
    def max_attempts(self) -> int:
        """The first attempt plus the retries."""
        return self.retries + 1

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions``."""
        return {
            "retries": self.retries,
            "backoff": {"base": self.backoff.base_s, "cap": self.backoff.cap_s},
            "max_event_age": self.max_event_age_s,
            "on_success": self.on_success.describe() if self.on_success else None,
            "on_failure": self.on_failure.describe() if self.on_failure else None,
        }


def _as_seconds(value: float | timedelta) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def build_async_policy(options: dict[str, Any], name: str) -> AsyncPolicy:
    """Validate the async options of function ``name`` into an ``AsyncPolicy``.

    Raises ``RegistrationError`` naming the option, the value and the range.
    """
    from fnplane.destinations import parse_destination

    default = AsyncPolicy()
    return AsyncPolicy(
        retries=validate_retries(options.get("retries", default.retries), name),
        backoff=validate_backoff(options.get("backoff", default.backoff), name),
        max_event_age_s=validate_max_event_age(
            options.get("max_event_age", default.max_event_age_s), name
        ),
        on_success=parse_destination(options.get("on_success"), "on_success", name),
        on_failure=parse_destination(options.get("on_failure"), "on_failure", name),
    )


def validate_retries(value: Any, name: str) -> int:
    """Return the retry count, or raise unless it is a whole number in range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistrationError(
            f"function {name!r}: retries must be a whole number from 0 to "
            f"{MAX_RETRIES}, got {value!r}"
        )
    if not 0 <= value <= MAX_RETRIES:
        raise RegistrationError(
            f"function {name!r}: retries must be from 0 to {MAX_RETRIES} (Lambda "
            f"allows 0 to 2), got {value}"
        )
    return value


def validate_backoff(value: Any, name: str) -> Backoff:
    """A ``Backoff`` from a ``Backoff``, a base in seconds or ``(base, cap)``."""
    if isinstance(value, Backoff):
        backoff = value
    elif isinstance(value, tuple) and len(value) == 2:
        backoff = Backoff(*value)
    elif isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        base_s = _as_seconds(value)
        backoff = Backoff(base_s, max(base_s, DEFAULT_BACKOFF_CAP_S))
    else:
        raise RegistrationError(
            f"function {name!r}: backoff must be a Backoff(base=, cap=), a base "
            f"in seconds or a (base, cap) pair, got {value!r}"
        )
    for part in (backoff.base, backoff.cap):
        if isinstance(part, bool) or not isinstance(part, int | float | timedelta):
            raise RegistrationError(
                f"function {name!r}: backoff base and cap must be seconds or "
                f"timedelta, got {part!r}"
            )
    if not 0 <= backoff.base_s <= backoff.cap_s:
        raise RegistrationError(
            f"function {name!r}: backoff needs 0 <= base <= cap, got base "
            f"{backoff.base_s:g} s and cap {backoff.cap_s:g} s"
        )
    return Backoff(backoff.base_s, backoff.cap_s)


def validate_max_event_age(value: Any, name: str) -> float:
    """Return the maximum event age in seconds, or raise if it is out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise RegistrationError(
            f"function {name!r}: max_event_age must be seconds or a timedelta, "
            f"got {value!r}"
        )
    age_s = _as_seconds(value)
    if not 0 < age_s <= MAX_EVENT_AGE_LIMIT_S:
        raise RegistrationError(
            f"function {name!r}: max_event_age must be more than 0 and at most "
            f"{MAX_EVENT_AGE_LIMIT_S:g} seconds (7 days), got {age_s:g}"
        )
    return age_s
