"""A registered function: its handler, its options and the triggers that invoke it."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fnplane.errors import RegistrationError
from fnplane.policy import AsyncPolicy

Handler = Callable[[Any, Any], Any]
Hook = Callable[[], Awaitable[None] | None]

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 900.0
DEFAULT_MEMORY_MB = 128
DEFAULT_INIT_LIMIT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 300.0
ISOLATIONS = ("inline", "process")
# The region and account Step Functions ARNs use too, so ARNs agree.
FUNCTION_ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"


class Trigger:
    """Something outside the platform that invokes a function.

    Each trigger kind names the source that serves it (``source``: the module
    ``fnplane.sources.<source>``, whose ``create_source(invoker)`` builds it);
    the runner starts one source per kind for all the functions that need it.
    """

    source: str = ""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions`` and ``fnplane list``."""
        raise NotImplementedError


@dataclass(slots=True)
class Function:
    """A handler registered with an app, with everything needed to invoke it."""

    name: str
    handler: Handler
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency: int | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    init_hooks: list[Hook] = field(default_factory=list)
    shutdown_hooks: list[Hook] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    async_policy: AsyncPolicy = field(default_factory=AsyncPolicy)
    is_async: bool = False
    isolation: str | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    min_warm: int = 0

    def __post_init__(self) -> None:
        self.is_async = is_coroutine_function(self.handler)

    @property
    def arn(self) -> str:
        """The Lambda-style ARN the context reports as ``invoked_function_arn``."""
        return FUNCTION_ARN_PREFIX + self.name

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the function and its triggers."""
        return {
            "name": self.name,
            "timeout": self.timeout_s,
            "concurrency": self.concurrency,
            "memory": self.memory_mb,
            "isolation": self.isolation,
            "idle_timeout": self.idle_timeout_s,
            "min_warm": self.min_warm,
            "async": self.async_policy.describe(),
            "triggers": [trigger.describe() for trigger in self.triggers],
        }


def is_coroutine_function(handler: Callable[..., Any]) -> bool:
    """True for ``async def`` callables, and objects with an async ``__call__``."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def seconds(value: float | timedelta, option: str, name: str) -> float:
    """Normalise a duration option given as seconds or ``timedelta`` to seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistrationError(
            f"function {name!r}: {option} must be seconds (a number) or a "
            f"timedelta, got {value!r}"
        )
    if math.isnan(value):
        raise RegistrationError(f"function {name!r}: {option} is NaN")
    return float(value)


def validate_timeout(value: float | timedelta, name: str) -> float:
    """Return the timeout in seconds, or raise if it is outside (0, 900]."""
    timeout_s = seconds(value, "timeout", name)
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise RegistrationError(
            f"function {name!r}: timeout must be more than 0 and at most "
            f"{MAX_TIMEOUT_S:g} seconds, got {timeout_s:g}"
        )
    return timeout_s


def validate_concurrency(value: int | None, name: str) -> int | None:
    """Return the reserved concurrency, or raise unless it is None or >= 0.

    0 is Lambda's way to switch a function off: every invocation is throttled.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistrationError(
            f"function {name!r}: concurrency must be a whole number >= 0 or None "
            f"(unbounded), got {value!r}"
        )
    return value


def validate_memory(value: int, name: str) -> int:
    """Return the memory size in MB, or raise unless it is within Lambda's range."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (128 <= value <= 10240)
    ):
        raise RegistrationError(
            f"function {name!r}: memory must be a whole number of MB from 128 to "
            f"10240, got {value!r}"
        )
    return value


def validate_isolation(value: str | None, handler: Handler, name: str) -> str | None:
    """Return the isolation, or raise for an unknown one or a process environment
    a worker could not import (a handler defined inside a function)."""
    if value is None:
        return None
    if value not in ISOLATIONS:
        raise RegistrationError(
            f"function {name!r}: isolation must be one of {ISOLATIONS}, got {value!r}"
        )
    if value == "process" and not importable_by_path(handler):
        raise RegistrationError(
            f"function {name!r}: isolation='process' needs a handler a worker can "
            f"import: define it at module level, not inside a function"
        )
    return value


def importable_by_path(handler: Handler) -> bool:
    """True when the handler is a module-level name a worker process can import."""
    qualname = getattr(handler, "__qualname__", "")
    module = getattr(handler, "__module__", None)
    return bool(module) and bool(qualname) and "<locals>" not in qualname


def validate_min_warm(value: int, concurrency: int | None, name: str) -> int:
    """Return the provisioned environments, or raise unless 0 <= N <= concurrency."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistrationError(
            f"function {name!r}: min_warm must be a whole number >= 0, got {value!r}"
        )
    if concurrency is not None and value > concurrency:
        raise RegistrationError(
            f"function {name!r}: min_warm ({value}) is more than its concurrency "
            f"({concurrency})"
        )
    return value


def validate_hooks(
    hooks: Hook | list[Hook] | None, option: str, name: str
) -> list[Hook]:
    """Return hooks as a list, checking each is callable."""
    if hooks is None:
        return []
    listed = list(hooks) if isinstance(hooks, list | tuple) else [hooks]
    for hook in listed:
        if not callable(hook):
            raise RegistrationError(
                f"function {name!r}: {option} must be a callable or a list of "
                f"callables, got {hook!r}"
            )
    return listed


async def call_hook(hook: Hook) -> None:
    """Run a sync or async hook; sync hooks run in a thread, off the event loop."""
    if is_coroutine_function(hook):
        await hook()  # type: ignore[misc]
    else:
        await asyncio.to_thread(hook)
