"""What both stream sources share: handing a batch to its function, retrying
the records that failed, and dead-lettering those that outlive their retries.

A source fetches a batch, calls ``BatchRunner.run`` and acknowledges what it
returns: the records that succeeded or were dead-lettered. Records it does
not return were abandoned at shutdown and stay unacknowledged, so the
broker delivers them again.

Handlers steer the outcome per record: they return Lambda's
``{"batchItemFailures": [{"itemIdentifier": ...}]}`` or raise
``BatchFailure`` naming the failed records; a ``RecordDecodeError`` (from
``record.json()``) fails its record, and the batch's other records are
tried again without counting an attempt. Any other exception fails the whole batch
(split in halves first with ``bisect_on_error``). A handler registered with
``per_record=True`` is called once per record inside one invocation: a
record that raises fails alone.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from fnplane.errors import BatchFailure, RecordDecodeError, describe_error
from fnplane.events.stream import StreamBatch, StreamRecord
from fnplane.function import Handler, is_coroutine_function

if TYPE_CHECKING:
    from fnplane.invoke import ErrorInfo, Invoker
    from fnplane.stream_trigger import StreamOptions

logger = structlog.get_logger(__name__)

BATCH_ITEM_FAILURES = "batchItemFailures"
ITEM_IDENTIFIER = "itemIdentifier"
RETRIES_EXHAUSTED = "RetriesExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
DEAD_LETTER_RETRY_S = 1.0
PREVIOUS_ATTEMPTS = attrgetter("previous_attempts")


@dataclass(slots=True)
class RecordFailure:
    """Why one record failed."""

    error_type: str
    message: str
    stack_trace: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The error as destination records carry it."""
        return {
            "errorType": self.error_type,
            "errorMessage": self.message,
            "stackTrace": self.stack_trace,
        }


@dataclass(slots=True)
class BatchReport:
    """What a stream handler made of its batch: the records that failed, and
    those it never reached (tried again without counting an attempt)."""

    failures: dict[str, RecordFailure] = field(default_factory=dict)
    unattempted: set[str] = field(default_factory=set)


@dataclass(slots=True)
class DeadRecord:
    """A record given up on, with why and after how many attempts."""

    record: StreamRecord
    failure: RecordFailure
    attempts: int
    condition: str


DeadLetterSink = Callable[[list[DeadRecord]], Awaitable[None]]


def stream_handler(handler: Handler, per_record: bool) -> Handler:
    """Wrap a stream handler so a batch's outcome comes back as a ``BatchReport``.

    Events that are not batches (a direct ``fnplane invoke``) pass through
    unchanged. The wrapper keeps the handler's kind: async stays on the
    loop, plain runs in the thread pool, the whole batch in one hop.
    """
    call_batch = each_record if per_record else whole_batch
    if is_coroutine_function(handler):

        async def call_async(event: Any, context: Any) -> Any:
            if not isinstance(event, StreamBatch):
                return await handler(event, context)
            return await call_batch_async(handler, event, context, per_record)

        # The handler's names: a worker process finds the function by them.
        return functools.update_wrapper(call_async, handler)

    def call(event: Any, context: Any) -> Any:
        if not isinstance(event, StreamBatch):
            return handler(event, context)
        return call_batch(handler, event, context)

    return functools.update_wrapper(call, handler)


def whole_batch(handler: Handler, batch: StreamBatch, context: Any) -> BatchReport:
    """Call a batch handler once; read its partial failures."""
    try:
        return report_from_value(batch, handler(batch, context))
    except (BatchFailure, RecordDecodeError) as exc:
        return report_from_exception(batch, exc)


def each_record(handler: Handler, batch: StreamBatch, context: Any) -> BatchReport:
    """Call a record handler once per record; a record that raises fails alone."""
    report = BatchReport()
    for record in batch:
        try:
            handler(record, context)
        except Exception as exc:
            report.failures[record.item_id] = record_failure(exc, context)
    return report


async def call_batch_async(
    handler: Handler, batch: StreamBatch, context: Any, per_record: bool
) -> BatchReport:
    """``whole_batch`` or ``each_record`` for an ``async def`` handler."""
    if per_record:
        report = BatchReport()
        for record in batch:
            try:
                await handler(record, context)
            except Exception as exc:
                report.failures[record.item_id] = record_failure(exc, context)
        return report
    try:
        return report_from_value(batch, await handler(batch, context))
    except (BatchFailure, RecordDecodeError) as exc:
        return report_from_exception(batch, exc)


def record_failure(exc: BaseException, context: Any) -> RecordFailure:
    """Describe a record's exception, and log it."""
    from fnplane.invoke import error_info

    info = error_info(exc)
    context.logger.warning(
        "stream.record_failed", error_type=info.error_type, error=info.message
    )
    return RecordFailure(info.error_type, info.message, info.stack_trace)


def report_from_value(batch: StreamBatch, value: Any) -> BatchReport:
    """Read Lambda's ``batchItemFailures`` from a handler's return value."""
    report = BatchReport()
    if not isinstance(value, dict) or BATCH_ITEM_FAILURES not in value:
        return report
    known = {record.item_id for record in batch.records}
    for item in value[BATCH_ITEM_FAILURES] or ():
        item_id = item.get(ITEM_IDENTIFIER) if isinstance(item, dict) else None
        if item_id in known:
            report.failures[item_id] = RecordFailure(
                "BatchItemFailure", "the handler reported this record as failed"
            )
        else:
            # Lambda fails the whole batch on an identifier it cannot match.
            failure = RecordFailure(
                "Runtime.InvalidBatchItemFailure",
                f"batchItemFailures names {item_id!r}, which is not in the batch; "
                f"use record.item_id",
            )
            return BatchReport({record.item_id: failure for record in batch.records})
    return report


def report_from_exception(
    batch: StreamBatch, exc: BatchFailure | RecordDecodeError
) -> BatchReport:
    """The report for a handler that raised ``BatchFailure`` or a decode error."""
    failure = RecordFailure(exc.error_type, str(exc))
    if isinstance(exc, BatchFailure):
        return BatchReport(dict.fromkeys(exc.item_ids, failure))
    # The handler stopped at this record, and what it did with the others
    # is unknown (it may parse them all before acting): they come again,
    # with no attempt counted against them.
    others = {record.item_id for record in batch.records} - {exc.item_id}
    return BatchReport({exc.item_id: failure}, others)


def stream_metrics(invoker: Invoker) -> StreamMetrics:
    """The stream metrics of the invoker's registry, shared by every source."""
    return invoker.metrics.shared("streams", StreamMetrics)


class StreamMetrics:
    """Counters every stream source keeps, per function and source."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["function", "source"]
        self.records = Counter("fnplane_stream_records", "Records handed to "
                               "functions.", labels, registry=registry)  # fmt: skip
        self.batches = Counter("fnplane_stream_batches", "Batches handed to "
                               "functions.", labels, registry=registry)  # fmt: skip
        self.failures = Counter("fnplane_stream_record_failures", "Record "
                                "attempts that failed.", labels,
                                registry=registry)  # fmt: skip
        self.retries = Counter("fnplane_stream_retries", "Records tried again.",
                               labels, registry=registry)  # fmt: skip
        self.dead_lettered = Counter("fnplane_stream_dead_lettered", "Records "
                                     "given up on.", labels,
                                     registry=registry)  # fmt: skip
        self.batch_size = Histogram(
            "fnplane_stream_batch_size", "Records per batch.", labels,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 5000, 10000), registry=registry,
        )  # fmt: skip
        self.batch_duration = Histogram(
            "fnplane_stream_batch_duration_seconds", "Time to handle a batch, "
            "retries included.", labels, registry=registry,
        )  # fmt: skip


class BatchRunner:
    """Runs batches of one function's records to their end: success or dead letter."""

    def __init__(
        self,
        invoker: Invoker,
        function: str,
        source: str,
        options: StreamOptions,
        dead_letter: DeadLetterSink,
        metrics: StreamMetrics,
    ) -> None:
        self.invoker = invoker
        self.function = function
        self.options = options
        self.dead_letter = dead_letter
        self.stopping = asyncio.Event()
        labels = (function, source)
        self._records = metrics.records.labels(*labels)
        self._batches = metrics.batches.labels(*labels)
        self._failures = metrics.failures.labels(*labels)
        self._retries = metrics.retries.labels(*labels)
        self._dead_lettered = metrics.dead_lettered.labels(*labels)
        self._batch_size = metrics.batch_size.labels(*labels)
        self._batch_duration = metrics.batch_duration.labels(*labels)

    async def run(self, batch: StreamBatch) -> list[StreamRecord]:
        """Handle ``batch``; return the records that are done with.

        Done means succeeded or dead-lettered. On shutdown (``stopping``) the
        records still waiting for a retry are abandoned: not returned. Each
        record's ``previous_attempts`` counts its failed attempts.
        """
        started = time.perf_counter()
        self._batches.inc()
        self._records.inc(len(batch))
        self._batch_size.observe(len(batch))
        done: list[StreamRecord] = []
        pending = await self._dead_letter_expired(batch.records, done)
        while pending:
            report = await self._attempt(
                batch if pending is batch.records else batch.subset(pending)
            )
            if not report.failures and not report.unattempted:
                done.extend(pending)
                break
            retry, dead = self._sort_out(pending, report, done)
            if dead:
                await self._send_dead(dead)
                done.extend(dead_record.record for dead_record in dead)
            if retry and not await self._back_off(retry):
                break
            pending = await self._dead_letter_expired(retry, done)
        self._batch_duration.observe(time.perf_counter() - started)
        return done

    async def _attempt(self, batch: StreamBatch) -> BatchReport:
        """One invocation; a failed one splits in halves with ``bisect_on_error``."""
        attempt = 1 + max(map(PREVIOUS_ATTEMPTS, batch.records))
        result = await self.invoker.invoke(
            self.function, batch, attempt=attempt, wait_for_slot=True
        )
        if result.ok:
            report = result.value
            return report if isinstance(report, BatchReport) else BatchReport()
        if (
            self.options.bisect_on_error
            and len(batch) > 1
            and not self.stopping.is_set()
        ):
            middle = len(batch) // 2
            first = await self._attempt(batch.subset(batch.records[:middle]))
            second = await self._attempt(batch.subset(batch.records[middle:]))
            first.failures.update(second.failures)
            first.unattempted |= second.unattempted
            return first
        failure = failure_of(result.error)
        return BatchReport({record.item_id: failure for record in batch.records})

    def _sort_out(
        self,
        pending: Sequence[StreamRecord],
        report: BatchReport,
        done: list[StreamRecord],
    ) -> tuple[list[StreamRecord], list[DeadRecord]]:
        """Split the attempted records into done, to retry and to dead-letter."""
        retry: list[StreamRecord] = []
        dead: list[DeadRecord] = []
        for record in pending:
            item_id = record.item_id
            failure = report.failures.get(item_id)
            if failure is None:
                if item_id in report.unattempted:
                    retry.append(record)
                else:
                    done.append(record)
                continue
            self._failures.inc()
            record.previous_attempts += 1
            if record.previous_attempts >= self.options.max_attempts:
                dead.append(
                    DeadRecord(
                        record, failure, record.previous_attempts, RETRIES_EXHAUSTED
                    )
                )
            else:
                retry.append(record)
        return retry, dead

    async def _back_off(self, retry: list[StreamRecord]) -> bool:
        """Wait before the retry; False when shutdown comes first."""
        self._retries.inc(len(retry))
        failed_attempts = max(record.previous_attempts for record in retry)
        delay_s = self.options.backoff.delay_s(failed_attempts)
        logger.warning(
            "stream.retrying",
            function=self.function,
            records=len(retry),
            attempt=failed_attempts + 1,
            delay_s=round(delay_s, 3),
        )
        try:
            async with asyncio.timeout(delay_s):
                await self.stopping.wait()
        except TimeoutError:
            return True
        return False

    async def _dead_letter_expired(
        self, pending: Sequence[StreamRecord], done: list[StreamRecord]
    ) -> Sequence[StreamRecord]:
        """Dead-letter the records older than ``max_record_age``; return the rest."""
        max_age_s = self.options.max_record_age_s
        if max_age_s is None:
            return pending
        oldest_ms = time.time() * 1000 - max_age_s * 1000
        expired = [record for record in pending if record.timestamp_ms < oldest_ms]
        if not expired:
            return pending
        failure = RecordFailure(
            RECORD_AGE_EXCEEDED, f"record older than max_record_age ({max_age_s:g} s)"
        )
        await self._send_dead(
            [
                DeadRecord(
                    record, failure, record.previous_attempts, RECORD_AGE_EXCEEDED
                )
                for record in expired
            ]
        )
        done.extend(expired)
        return [record for record in pending if record.timestamp_ms >= oldest_ms]

    async def _send_dead(self, dead: list[DeadRecord]) -> None:
        """Hand records to the dead letter, retrying until it takes them.

        A record is acknowledged only once its dead letter is written, so a
        dead-letter broker that is down holds the partition rather than
        losing records; at shutdown the records are left unacknowledged.
        """
        while True:
            try:
                await self.dead_letter(dead)
            except Exception as exc:
                logger.error(
                    "stream.dead_letter_failed",
                    function=self.function,
                    records=len(dead),
                    error=describe_error(exc),
                )
                if self.stopping.is_set():
                    raise
                await asyncio.sleep(DEAD_LETTER_RETRY_S)
                continue
            self._dead_lettered.inc(len(dead))
            for dead_record in dead:
                logger.error(
                    "stream.dead_lettered",
                    function=self.function,
                    record=dead_record.record.item_id,
                    attempts=dead_record.attempts,
                    condition=dead_record.condition,
                    error_type=dead_record.failure.error_type,
                    error=dead_record.failure.message,
                )
            return


def failure_of(error: ErrorInfo | None) -> RecordFailure:
    """A whole-batch failure as each of its records carries it."""
    if error is None:
        return RecordFailure("Runtime.Error", "the invocation failed")
    return RecordFailure(error.error_type, error.message, error.stack_trace)


def dead_letter_metadata(dead: DeadRecord, function: str) -> dict[str, str]:
    """What a dead letter says besides the original record, as text fields."""
    return {
        "fnplane-function": function,
        "fnplane-source": dead.record.item_id,
        "fnplane-condition": dead.condition,
        "fnplane-attempts": str(dead.attempts),
        "fnplane-error-type": dead.failure.error_type,
        "fnplane-error-message": dead.failure.message[:4096],
        "fnplane-dead-lettered-at": str(int(time.time() * 1000)),
    }
