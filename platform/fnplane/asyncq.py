"""The asynchronous invocation queue: accepted means persisted, then delivered.

Every asynchronous path (HTTP ``Event`` invocations, the Invoke API's
``Event`` type, ``fnplane invoke --async``, ``ctx.invoke_async``, file events)
calls ``AsyncQueue.submit``, which returns once the event is in the event
store. A dispatcher then invokes the function, waiting for a concurrency slot
rather than dropping the event, and after each attempt follows the
function's ``AsyncPolicy``: retry with backoff, or give up after the last
retry or past the maximum event age, sending a Lambda-shaped record to the
on-success or on-failure destination.

Memory stays bounded: each function has a lane holding at most twice its
concurrency (256 running, 512 held, when unbounded) of claimed events; the
backlog stays in the store and is claimed as lanes free up. Delivery is
at-least-once: an event leaves the store only after its outcome reached its
destination. Finished events are deleted in batches, one store write for
all the events that finished while the previous write was under way.

A source whose events stay durable without the queue's help (a file waits
in its folder, and a scan at start finds it again) hands them over with
``submit_backed``: they are stored only when they have to wait, for a retry
or for a destination that is down. A burst of files then costs no store
write at all.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from fnplane.asyncq_finishes import FinishedEvents
from fnplane.asyncq_metrics import AsyncQueueMetrics
from fnplane.destinations import (
    DestinationError,
    DestinationSender,
    check_destinations,
)
from fnplane.errors import FnplaneError
from fnplane.events.codec import decode_event, encode_event, reusable_event
from fnplane.eventstore import EventStore, QueuedEvent, now_ms
from fnplane.records import (
    EVENT_AGE_EXCEEDED,
    RETRIES_EXHAUSTED,
    SUCCESS,
    outcome_record,
)

if TYPE_CHECKING:
    from fnplane.config import Settings
    from fnplane.function import Function
    from fnplane.invoke import InvocationResult, Invoker

logger = structlog.get_logger(__name__)

# Measured on a 10,000-file burst: 256 against 64 cost a fifth less CPU a
# file (bigger claims and finish batches) and cut latency by a third.
UNBOUNDED_LANE_WINDOW = 256
# One event to submit: the event, its request id, its event id (or None).
Submission = tuple[Any, str, str | None]
POLL_INTERVAL_S = 1.0
# A worker gives the loop a turn after this many deliveries in a row: a
# full window, as one loop turn ran when each event had a task. After 64,
# new submissions cut in and accept -> handler start grew fourfold.
WORKER_TURN = 256
# A destination that cannot take a record is retried at this pace, forever:
# the record is the only trace of the event, so it is never dropped.
DESTINATION_RETRY_S = 5.0


class AsyncQueue(Protocol):
    """Accepts events for asynchronous invocation."""

    async def start(self) -> None:
        """Open the store, resume pending events and start dispatching."""

    async def submit(
        self,
        function: str,
        event: Any,
        request_id: str,
        event_id: str | None = None,
        remember_s: float | None = None,
    ) -> bool:
        """Accept the event once persisted; False for a duplicate event id."""

    async def submit_many(
        self,
        function: str,
        submissions: list[Submission],
        remember_s: float | None = None,
    ) -> list[bool]:
        """Accept many events of one function in one write; ``submit``'s
        result for each."""

    async def wait_for_room(self, function: str) -> int:
        """Wait until the function's lane can take an event; how many it can
        take (0 when the queue is draining)."""

    async def submit_backed(
        self, function: str, kind: str, submissions: list[Submission]
    ) -> bool:
        """Take events their source keeps durable itself; False, taking
        none, when draining."""

    async def stored_ids(self, event_ids: list[str]) -> set[str]:
        """Those of ``event_ids`` whose events are in the store."""

    async def drain(self) -> None:
        """Stop claiming new work; wait for the events already running."""

    async def close(self) -> None:
        """Stop dispatching and release the store; pending events stay stored."""


class DeliveryHooks(Protocol):
    """What a source does around the delivery of its own kind of event."""

    async def before(self, event: QueuedEvent) -> bool:
        """Return False to skip the event (finished without an attempt)."""

    async def after_success(self, event: QueuedEvent) -> None:
        """Called after a successful attempt, before the event is finished."""

    async def after_failure(self, event: QueuedEvent, record: dict[str, Any]) -> bool:
        """Called when the event gives up, with its destination record;
        True if the source kept the record (a file's, in ``failed/``)."""


@dataclass(slots=True)
class Lane:
    """One function's claimed events: waiting to start, and running.

    ``running`` counts the lane's workers, each delivering one event at a
    time; ``starting`` is true while the newest has not taken an event yet.
    """

    function: Function
    window: int
    ready: deque[QueuedEvent] = field(default_factory=deque)
    running: int = 0
    starting: bool = False
    reserved: int = 0
    backlog: bool = True
    # Set when a source waits in ``wait_for_room``.
    room_waiter: asyncio.Future[None] | None = None

    @property
    def room(self) -> int:
        """How many more events the lane may hold."""
        return 2 * self.window - self.running - len(self.ready) - self.reserved


class DurableAsyncQueue:
    """The async queue over an ``EventStore`` (SQLite by default, Redis shared)."""

    def __init__(self, invoker: Invoker, store: EventStore) -> None:
        self._invoker = invoker
        self.store = store
        self.metrics = AsyncQueueMetrics(invoker.metrics.registry)
        self._sender = DestinationSender(invoker)
        self._hooks: dict[str, DeliveryHooks] = {}
        self._lanes: dict[str, Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._finished = FinishedEvents(store, self.metrics)
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._draining = False
        self._closed = False

    def add_hooks(self, kind: str, hooks: DeliveryHooks) -> None:
        """Let a source act before and after delivery of events of ``kind``."""
        self._hooks[kind] = hooks

    async def start(self) -> None:
        """Open the store, count what is pending and start the dispatcher."""
        async with self._start_lock:
            if self._started:
                return
            check_destinations(self._invoker)
            await self.store.open()
            self._lanes = {
                name: Lane(function, lane_window(function))
                for name, function in self._invoker.app.functions.items()
            }
            await self._count_pending()
            self._dispatcher = asyncio.create_task(self._dispatch())
            self._started = True

    async def _count_pending(self) -> None:
        counts = await self.store.pending_counts()
        for name, count in counts.items():
            if name in self._lanes:
                self.metrics.function(name).queued = count
            else:
                logger.warning(
                    "asyncq.unknown_function",
                    function=name,
                    events=count,
                    hint="events stay stored until a function of that name runs",
                )

    async def submit(
        self,
        function: str,
        event: Any,
        request_id: str,
        event_id: str | None = None,
        remember_s: float | None = None,
    ) -> bool:
        """Persist the event, then return; it runs now if its lane has room.

        ``event_id`` (default: the request id) is accepted once: while the
        event is stored, and for ``remember_s`` seconds after it was accepted
        (default: the ``async_dedup_window`` setting when an id is given;
        ``math.inf`` for ever). Returns False for a duplicate, which is not
        stored again. Raises ``EventEncodingError`` if the event is not JSON.
        """
        if not self._started:
            await self.start()
        queued = queued_event(function, event, request_id, event_id, now_ms())
        lane = self._lanes[function]
        # The lane's room is reserved before the write, but the event joins
        # the lane only once stored: nothing may run before it is durable.
        claim = not self._draining and lane.room > 0
        lane.reserved += claim
        try:
            accepted = await self.store.add(
                queued,
                claim=claim,
                remember_until_ms=self._remember_until(event_id, remember_s),
            )
        finally:
            lane.reserved -= claim
        self._accepted(lane, queued, accepted, claim)
        if not accepted:
            logger.info(
                "asyncq.duplicate",
                function=function,
                event_id=queued.event_id,
                request_id=queued.request_id,
            )
        self._count_received(function, int(accepted))
        self._pump(lane)
        return accepted

    async def submit_many(
        self,
        function: str,
        submissions: list[Submission],
        remember_s: float | None = None,
    ) -> list[bool]:
        """Persist many events of one function in one write, then return.

        What ``submit`` does for each ``(event, request_id, event_id)``, with
        one store round trip and no task per event: a source that finds
        events in bursts (the file source) submits them this way. Raises
        ``EventEncodingError`` before storing anything if one is not JSON.
        """
        if not self._started:
            await self.start()
        accepted_ms = now_ms()
        queued = [
            queued_event(function, event, request_id, event_id, accepted_ms)
            for event, request_id, event_id in submissions
        ]
        lane = self._lanes[function]
        claims = 0 if self._draining else max(0, min(lane.room, len(queued)))
        additions = [
            (event, index < claims, self._remember_until(event_id, remember_s))
            for index, (event, (_, _, event_id)) in enumerate(
                zip(queued, submissions, strict=True)
            )
        ]
        lane.reserved += claims
        try:
            accepted = await self.store.add_many(additions)
        finally:
            lane.reserved -= claims
        for (event, claim, _), stored in zip(additions, accepted, strict=True):
            self._accepted(lane, event, stored, claim)
        received = sum(accepted)
        if received < len(accepted):
            # A source finds the same events again (a file left in place is
            # found by every scan and start): a line each would flood the log.
            logger.debug(
                "asyncq.duplicates", function=function,
                events=len(accepted) - received,
            )  # fmt: skip
        self._count_received(function, received)
        self._pump(lane)
        return accepted

    async def wait_for_room(self, function: str) -> int:
        """Wait until the function's lane has room; how much (0 if draining).

        A source submitting with ``submit_backed`` asks first: its events
        wait where they are (files in their folder) rather than in memory.
        """
        if not self._started:
            await self.start()
        lane = self._lanes[function]
        while lane.room <= 0 and not self._draining:
            lane.room_waiter = asyncio.get_running_loop().create_future()
            try:
                await lane.room_waiter
            finally:
                lane.room_waiter = None
        return 0 if self._draining else lane.room

    async def submit_backed(
        self, function: str, kind: str, submissions: list[Submission]
    ) -> bool:
        """Take events whose source keeps them durable itself; run them.

        For a source whose events outlive the process without the queue (a
        file stays in its folder until its disposition, and a scan at start
        finds it again): nothing is written before the first attempt. An
        event is stored when it has to wait for a retry or for a destination
        that is down, and from then on it is delivered as any other.

        The source's ``before`` hook for ``kind`` turns each submitted event
        into the handler's (``handler_event``), and may give it its final
        ``event_id``, before the first attempt; with no hook for ``kind``
        the handler gets the event as submitted. Returns False, taking
        nothing, when the queue is draining (the source finds its events
        again at the next start). Call ``wait_for_room`` first: this adds
        every submission to the lane.
        """
        if not self._started:
            await self.start()
        if self._draining:
            return False
        lane = self._lanes[function]
        accepted_ms = now_ms()
        for event, request_id, event_id in submissions:
            lane.ready.append(
                QueuedEvent(
                    event_id or request_id,
                    function,
                    request_id,
                    kind,
                    "",  # encoded only if stored or recorded (encode_payload)
                    accepted_ms,
                    0,
                    handler_event=event,
                    stored=False,
                )
            )
        self._count_received(function, len(submissions))
        self._pump(lane)
        return True

    async def stored_ids(self, event_ids: list[str]) -> set[str]:
        """Those of ``event_ids`` whose events are in the store."""
        if not self._started:
            await self.start()
        return await self.store.stored_ids(event_ids)

    def _accepted(
        self, lane: Lane, queued: QueuedEvent, accepted: bool, claim: bool
    ) -> None:
        if not accepted:
            self.metrics.function(queued.function).duplicates += 1
        elif claim:
            lane.ready.append(queued)
        else:
            lane.backlog = True

    def _count_received(self, function: str, count: int) -> None:
        stats = self.metrics.function(function)
        stats.received += count
        stats.queued += count

    def _remember_until(
        self, event_id: str | None, remember_s: float | None
    ) -> int | None:
        if remember_s is None:
            if event_id is None:
                # A generated request id never repeats: nothing to remember.
                return None
            remember_s = self._invoker.settings.async_dedup_window
        if remember_s <= 0:
            return None
        if math.isinf(remember_s):
            return 2**62
        return now_ms() + int(remember_s * 1000)

    def _pump(self, lane: Lane) -> None:
        """Have a worker on its way while ready events wait and the lane has
        free concurrency; wake the dispatcher if the lane has room."""
        if lane.ready and not lane.starting and lane.running < lane.window:
            lane.running += 1
            lane.starting = True
            task = asyncio.create_task(self._work(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if lane.room > 0:
            if lane.backlog and not self._draining:
                self._wake.set()
            if lane.room_waiter is not None and not lane.room_waiter.done():
                lane.room_waiter.set_result(None)

    async def _work(self, lane: Lane) -> None:
        """Deliver the lane's ready events one after another, then end.

        A task per event cost about 3.5 µs. A worker delivers an event whose
        handler does not suspend within its own step and takes the next at
        once; before each delivery it has another worker started while
        events wait, so events whose handlers suspend still run side by
        side, up to the lane's window.
        """
        lane.starting = False
        delivered = 0
        try:
            while lane.ready:
                event = lane.ready.popleft()
                self._pump(lane)
                await self._deliver(lane.function, event)
                delivered += 1
                if delivered % WORKER_TURN == 0:
                    # Let the loop read files and requests between deliveries.
                    await asyncio.sleep(0)
        finally:
            lane.running -= 1
            self._pump(lane)

    async def _dispatch(self) -> None:
        """Claim due events from the store into lanes with room, forever."""
        while not self._draining:
            self._wake.clear()
            for lane in self._lanes.values():
                if lane.backlog and lane.room > 0:
                    await self._refill(lane)
            try:
                async with asyncio.timeout(POLL_INTERVAL_S):
                    await self._wake.wait()
            except TimeoutError:
                await self._poll()

    async def _refill(self, lane: Lane) -> None:
        room = lane.room
        try:
            claimed = await self.store.claim(lane.function.name, now_ms(), room)
        except FnplaneError as exc:
            logger.error(
                "asyncq.claim_failed", function=lane.function.name, error=str(exc)
            )
            return
        if len(claimed) < room:
            lane.backlog = False
        if self._draining:
            await self.store.release(claimed)
            return
        lane.ready.extend(claimed)
        self._pump(lane)

    async def _poll(self) -> None:
        # Other nodes (Redis) and expired claims add work nobody announced.
        try:
            await self.store.heartbeat()
        except FnplaneError as exc:
            logger.error("asyncq.heartbeat_failed", error=str(exc))
        for lane in self._lanes.values():
            lane.backlog = True

    async def _deliver(self, function: Function, event: QueuedEvent) -> None:
        try:
            await self._attempt(function, event)
        except Exception as exc:
            # The event stays claimed in the store; a restart or takeover
            # delivers it again.
            logger.error(
                "asyncq.delivery_failed",
                function=event.function,
                event_id=event.event_id,
                exc_info=exc,
            )

    async def _attempt(self, function: Function, event: QueuedEvent) -> None:
        if event.outcome is not None:
            await self._resend(function, event)
            return
        # The source's check comes first: it skips events whose subject is
        # gone, and completes events from submit_backed.
        hooks = self._hooks.get(event.kind)
        if hooks is not None and not await hooks.before(event):
            self._finished.add(event)
            return
        policy = function.async_policy
        started_ms = now_ms()
        age_s = (started_ms - event.accepted_at_ms) / 1000
        self.metrics.function(function.name).event_age.observe(age_s)
        if age_s > policy.max_event_age_s:
            await self._give_up(function, event, EVENT_AGE_EXCEEDED, None)
            return

        event.attempts += 1
        event.first_attempt_at_ms = event.first_attempt_at_ms or started_ms
        event.last_attempt_at_ms = started_ms
        handler_event = event.handler_event
        if handler_event is None:
            handler_event = decode_event(event.kind, event.payload)
        elif event.stored:
            # A retry decodes the stored document, as after a restart. (An
            # unstored event keeps it: it is encoded from it if stored.)
            event.handler_event = None
        result = await self._invoker.invoke(
            function.name,
            handler_event,
            request_id=event.request_id,
            attempt=event.attempts,
            wait_for_slot=True,
        )
        if result.ok:
            await self._succeed(function, event, result)
        elif event.attempts >= policy.max_attempts:
            await self._give_up(function, event, RETRIES_EXHAUSTED, result)
        else:
            await self._retry(function, event, result)

    async def _succeed(
        self, function: Function, event: QueuedEvent, result: InvocationResult
    ) -> None:
        hooks = self._hooks.get(event.kind)
        if hooks is not None:
            await hooks.after_success(event)
        destination = function.async_policy.on_success
        if destination is None:
            self._finished.add(event)
            return
        encode_payload(event)
        record = outcome_record(function, event, SUCCESS, result)
        await self._send(function, event, record, success=True)

    async def _retry(
        self, function: Function, event: QueuedEvent, result: InvocationResult
    ) -> None:
        delay_s = function.async_policy.backoff.delay_s(event.attempts)
        event.due_at_ms = now_ms() + int(delay_s * 1000)
        self.metrics.function(function.name).retried += 1
        logger.warning(
            "asyncq.retry_scheduled",
            function=function.name,
            request_id=event.request_id,
            attempt=event.attempts,
            outcome=result.outcome.value,
            delay_s=round(delay_s, 3),
        )
        await self._keep(event)
        self._schedule(self._lanes[function.name], delay_s)

    async def _give_up(
        self,
        function: Function,
        event: QueuedEvent,
        condition: str,
        result: InvocationResult | None,
    ) -> None:
        encode_payload(event)
        record = outcome_record(function, event, condition, result)
        self.metrics.function(function.name).given_up(condition)
        hooks = self._hooks.get(event.kind)
        kept = hooks is not None and await hooks.after_failure(event, record)
        if function.async_policy.on_failure is None:
            if not kept:
                logger.error(
                    "asyncq.event_discarded",
                    function=function.name,
                    request_id=event.request_id,
                    condition=condition,
                    attempts=event.attempts,
                    hint="give the function on_failure= to keep failed events",
                )
            self._finished.add(event)
            return
        await self._send(function, event, record, success=False)

    async def _send(
        self,
        function: Function,
        event: QueuedEvent,
        record: dict[str, Any],
        success: bool,
    ) -> None:
        policy = function.async_policy
        destination = policy.on_success if success else policy.on_failure
        assert destination is not None
        try:
            await self._sender.send(destination, record)
        except DestinationError as exc:
            logger.error(
                "asyncq.destination_failed",
                function=function.name,
                request_id=event.request_id,
                destination=destination.describe(),
                error=str(exc),
                retry_in_s=DESTINATION_RETRY_S,
            )
            event.outcome = json.dumps({"success": success, "record": record})
            event.due_at_ms = now_ms() + int(DESTINATION_RETRY_S * 1000)
            await self._keep(event)
            self._schedule(self._lanes[function.name], DESTINATION_RETRY_S)
            return
        self._finished.add(event)

    async def _keep(self, event: QueuedEvent) -> None:
        """Store the event's progress; it is pending again at ``due_at_ms``.
        An event not stored yet (``submit_backed``) is stored now."""
        if event.stored:
            await self.store.retry(event)
            return
        encode_payload(event)
        event.stored = True
        if not await self.store.add(event, claim=False, remember_until_ms=None):
            # Only another process sharing the store can have stored it
            # meanwhile (two nodes watching one folder): its copy runs.
            logger.warning(
                "asyncq.stored_elsewhere",
                function=event.function,
                event_id=event.event_id,
            )

    async def _resend(self, function: Function, event: QueuedEvent) -> None:
        assert event.outcome is not None
        pending = json.loads(event.outcome)
        await self._send(function, event, pending["record"], pending["success"])

    def _schedule(self, lane: Lane, delay_s: float) -> None:
        def due() -> None:
            self._timers.discard(timer)
            lane.backlog = True
            self._wake.set()

        timer = asyncio.get_running_loop().call_later(delay_s, due)
        self._timers.add(timer)

    async def drain(self) -> None:
        """Stop claiming; give unstarted events back; wait for running ones."""
        if not self._started:
            return
        self._draining = True
        self._wake.set()
        # Unstored ones stay with their source (files in their folder).
        unstarted = [
            event
            for lane in self._lanes.values()
            for event in lane.ready
            if event.stored
        ]
        for lane in self._lanes.values():
            lane.ready.clear()
            self._pump(lane)
        if unstarted:
            await self.store.release(unstarted)
        while self._tasks:
            # asyncio.wait, not gather: the caller's grace timeout cancels
            # this wait only, and the invocations still running stay
            # counted as abandoned until close() cancels them.
            await asyncio.wait(list(self._tasks))
        await self._finished.written()

    async def close(self) -> None:
        """Stop the dispatcher and timers, close destinations and the store."""
        if not self._started or self._closed:
            return
        self._closed = True
        self._draining = True
        for timer in self._timers:
            timer.cancel()
        tasks = [*self._tasks, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._finished.written()
        await self._sender.close()
        await self.store.close()


def queued_event(
    function: str, event: Any, request_id: str, event_id: str | None, at_ms: int
) -> QueuedEvent:
    """The stored form of an event accepted at ``at_ms``."""
    kind, payload = encode_event(event)
    queued = QueuedEvent(
        event_id or request_id, function, request_id, kind, payload, at_ms, 0
    )
    queued.handler_event = reusable_event(event)
    return queued


def encode_payload(event: QueuedEvent) -> None:
    """Encode the payload of an event from ``submit_backed`` on first need."""
    if not event.payload:
        event.kind, event.payload = encode_event(event.handler_event)


def lane_window(function: Function) -> int:
    """How many of a function's events may run at once from the queue."""
    if function.concurrency is None:
        return UNBOUNDED_LANE_WINDOW
    return min(function.concurrency, UNBOUNDED_LANE_WINDOW)


def create_async_queue(invoker: Invoker, settings: Settings) -> DurableAsyncQueue:
    """The queue the settings ask for: SQLite in the state folder, or Redis."""
    backend = settings.async_queue
    if backend == "sqlite":
        from fnplane.eventstore import SqliteEventStore

        return DurableAsyncQueue(invoker, SqliteEventStore(settings.state_dir))
    if backend.startswith(("redis://", "rediss://", "unix://")):
        from fnplane.eventstore_redis import RedisEventStore

        return DurableAsyncQueue(invoker, RedisEventStore(backend))
    raise FnplaneError(
        f"async_queue must be 'sqlite' or a redis:// URL, got {backend!r}"
    )
