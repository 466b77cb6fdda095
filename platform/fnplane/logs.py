"""structlog setup for the CLI, and per-invocation log capture.

Library modules only call ``structlog.get_logger()``; ``configure`` is called
by the CLI alone, and routes the standard ``logging`` module's records
(libraries', handlers') through the same renderer. The capture processor
copies each log line emitted while an invocation runs into that invocation's
buffer, found through a context variable, so ``X-Amz-Log-Type: Tail`` can
return the invocation's own log.
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

STANDARD_LOGGING_HANDLER = "fnplane"
# aiokafka logs an ERROR for every failed bootstrap attempt; each fnplane
# caller reports that failure itself (source.kafka_unavailable, a
# destination's or a dead letter's error) with what it was doing, so the
# library's line only repeats it, at a level that cries wolf while a broker
# is merely late.
AIOKAFKA_BOOTSTRAP_LOGGER = "aiokafka"
AIOKAFKA_BOOTSTRAP_FAILURE = 'Unable connect to "%s:%s": %s'

SKIPPED_IN_TAIL = frozenset(
    {"event", "timestamp", "function", "request_id", "exc_info", "logger"}
)

log_capture: ContextVar[list[str] | None] = ContextVar("log_capture", default=None)
# The Context of the inline invocation running, if any.
running_invocation: ContextVar[Any] = ContextVar("running_invocation", default=None)


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


def add_invocation(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Name the function and request id of the invocation that logged the
    line, for lines of the ``logging`` module (the platform's own name them)."""
    context = running_invocation.get()
    if context is not None:
        event_dict.setdefault("function", context.function_name)
        event_dict.setdefault("request_id", context.aws_request_id)
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
    exception_renderer = (
        structlog.processors.format_exc_info
        if log_format == "json"
        else structlog.processors.StackInfoRenderer()
    )
    level_number = logging.getLevelNamesMapping()[level.upper()]
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        capture_for_tail,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared_processors, exception_renderer, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache_loggers,
    )
    route_standard_logging(
        shared_processors, [exception_renderer, renderer], level_number
    )


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to whatever ``sys.stderr`` is when a record
    comes (as ``logging``'s own last-resort handler does), so a stream
    swapped later (pytest's capture) is never written after it closed."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def route_standard_logging(
    pre_chain: list[Any], renderers: list[Any], level_number: int
) -> None:
    """Send records of the standard ``logging`` module (aiokafka's, aiohttp's,
    a handler's own ``logging.getLogger()``) through the same renderer.

    Without a handler of its own, ``logging`` prints bare text lines to
    stderr, which break a JSON log stream. Loggers without a level of their
    own show WARNING and above (the chosen level if stricter), as in
    Lambda's Python runtime; a logger given a level (``setLevel(INFO)``)
    keeps it. A second call replaces the handler the first one added.
    aiokafka's per-attempt bootstrap failures are filtered out here too
    (``drop_aiokafka_bootstrap_failures``).
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            add_invocation,
            *pre_chain,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *renderers,
        ],
    )
    handler = StderrHandler()
    handler.set_name(STANDARD_LOGGING_HANDLER)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == STANDARD_LOGGING_HANDLER:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(max(level_number, logging.WARNING))
    logging.getLogger(AIOKAFKA_BOOTSTRAP_LOGGER).addFilter(
        drop_aiokafka_bootstrap_failures
    )


def drop_aiokafka_bootstrap_failures(record: logging.LogRecord) -> bool:
    """False for aiokafka's line about a failed bootstrap attempt (see
    ``AIOKAFKA_BOOTSTRAP_FAILURE``); a logger filter, so no handler sees it."""
    return record.msg != AIOKAFKA_BOOTSTRAP_FAILURE
