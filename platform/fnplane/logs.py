"""structlog setup for the CLI, and per-invocation log capture.

Library modules only call ``structlog.get_logger()``; ``configure`` is called
by the CLI alone. The capture processor copies each log line emitted while an
invocation runs into that invocation's buffer, found through a context
variable, so ``X-Amz-Log-Type: Tail`` can return the invocation's own log.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

TAIL_LIMIT_BYTES = 4096
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

SKIPPED_IN_TAIL = frozenset(
    {"event", "timestamp", "function", "request_id", "exc_info"}
)

log_capture: ContextVar[list[str] | None] = ContextVar("log_capture", default=None)


def capture_for_tail(
    _: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Copy the line into the running invocation's buffer, if it asked for one."""
    buffer = log_capture.get()
    if buffer is not None:
        fields = " ".join(
            f"{key}={value}"
            for key, value in event_dict.items()
            if key not in SKIPPED_IN_TAIL
        )
        buffer.append(f"[{method.upper()}] {event_dict.get('event')} {fields}".rstrip())
        error = event_dict.get("exc_info")
        if isinstance(error, BaseException):
            buffer.append("".join(traceback.format_exception(error)).rstrip())
    return event_dict


def bound_if_enabled(logger: Any, level: int) -> Any | None:
    """``logger`` bound (a lazy proxy assembled), or None when it drops ``level``.

    Asked each time, so a reconfiguration (tests capture logs that way)
    takes effect at once; a wrapper class that cannot say is taken as
    enabled. Log through the returned logger: binding a proxy again costs
    as much as the check.
    """
    bound = logger.bind()
    is_enabled_for = getattr(bound, "is_enabled_for", None)
    if is_enabled_for is None or is_enabled_for(level):
        return bound
    return None


def tail(lines: list[str]) -> str:
    """The last 4 KB of an invocation's log, as Lambda's ``LogResult`` holds."""
    text = "\n".join(lines) + "\n"
    encoded = text.encode()
    if len(encoded) <= TAIL_LIMIT_BYTES:
        return text
    return encoded[-TAIL_LIMIT_BYTES:].decode(errors="ignore")


def configure(
    log_format: str = "console", level: str = "info", cache_loggers: bool = True
) -> None:
    """Set up structlog: console lines for people, JSON lines for machines.

    ``cache_loggers=False`` keeps loggers reconfigurable (tests need that to
    capture logs after this call).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {LOG_FORMATS}")
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {LOG_LEVELS}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            capture_for_tail,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if log_format == "json"
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache_loggers,
    )
