"""The Redis Streams source: consumer groups read in batches, acknowledged after
success or dead-lettering.

One ``StreamConsumer`` per ``redis_stream`` trigger:

- settings: the group (``XGROUP CREATE ... MKSTREAM``; an existing group is
  fine) and a consumer name unique to this process unless configured;
- consume loop: ``XREADGROUP COUNT n BLOCK ms`` fills a batch up to
  ``batch_size`` or ``batch_window``; first, once, the consumer's own pending
  entries (a configured name coming back after a crash); every
  ``claim_idle / 2``, ``XAUTOCLAIM`` takes over entries another consumer
  left pending longer than ``claim_idle`` (a crashed process's work);
- parsing: entries become ``RedisRecord``s in a ``RedisBatch``; the
  delivery count of a claimed entry counts as its earlier attempts, so a
  record that kills every consumer that takes it still reaches the dead
  letter;
- bookkeeping: ``BatchRunner`` retries and dead-letters (``XADD`` of the
  original fields plus ``fnplane-*`` metadata fields), then one multi-id
  ``XACK`` per stream acknowledges what is done. Entries being retried stay
  pending; entries abandoned at shutdown stay pending for the next owner.

A server that is down or goes away is retried with backoff; a group that
vanished with the server's data is created again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as redis
import structlog
from prometheus_client import Gauge
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fnplane.events.stream import RedisBatch, RedisRecord, StreamRecord
from fnplane.stream_trigger import RedisStreamTrigger
from fnplane.streams import (
    BatchRunner,
    DeadRecord,
    dead_letter_metadata,
    stream_metrics,
)

if TYPE_CHECKING:
    from fnplane.function import Function
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)

SOURCE = "redis"
# How long one XREADGROUP may block while no entry is waiting: bounds how
# long a stop request waits for the loop to notice it.
IDLE_BLOCK_MS = 1000
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def create_source(invoker: Invoker) -> RedisStreamSource:
    """The Redis Streams source for every ``redis_stream`` trigger of the app."""
    return RedisStreamSource(invoker)


class RedisStreamSource:
    """Runs one consumer per ``redis_stream`` trigger."""

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker
        self.consumers = [
            StreamConsumer(invoker, function, trigger)
            for function in invoker.app.functions.values()
            for trigger in function.triggers
            if isinstance(trigger, RedisStreamTrigger)
        ]

    async def start(self) -> None:
        """Start every consumer's loop (they connect, and reconnect, on their own)."""
        for consumer in self.consumers:
            consumer.start()

    def stop_intake(self) -> None:
        """Read no new entries; batches in flight go on."""
        for consumer in self.consumers:
            consumer.stop_intake()

    async def stop(self, grace_s: float) -> None:
        """Finish in-flight batches within ``grace_s``, acknowledge, disconnect."""
        await asyncio.gather(*(c.stop(grace_s) for c in self.consumers))


class StreamConsumer:
    """One trigger's consumer: its group, its loop and its acknowledgements."""

    def __init__(
        self, invoker: Invoker, function: Function, trigger: RedisStreamTrigger
    ) -> None:
        self.function = function.name
        self.trigger = trigger
        self.options = trigger.options
        self.url = trigger.url or invoker.settings.redis_url
        self.group = trigger.group or function.name
        self.consumer = trigger.consumer or default_consumer_name()
        self.streams = trigger.streams
        self.client: Any = entries_as_sent(redis.Redis.from_url(self.url))
        metrics = stream_metrics(invoker)
        self.runner = BatchRunner(
            invoker, function.name, SOURCE, self.options, self._dead_letter, metrics
        )
        self._pending_gauge = pending_gauge(invoker)
        self._intake = True
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Each batch in flight, by its task: claims must skip their entries.
        self._batches: dict[asyncio.Task[None], list[RedisRecord]] = {}
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._unacked: dict[str, list[bytes | str]] = {}
        self._carried: list[RedisRecord] = []
        self._next_claim_at = 0.0
        self._log = logger.bind(
            function=self.function, group=self.group, consumer=self.consumer
        )

    def start(self) -> None:
        """Start the consume loop."""
        self._loop_task = asyncio.create_task(self._consume(), name=self.function)
        self._heartbeat_task = asyncio.create_task(self._heartbeat())

    def stop_intake(self) -> None:
        """Stop reading; in-flight batches go on."""
        self._intake = False

    async def stop(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for batches, abandon the rest, leave, disconnect."""
        self._intake = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._batches:
            _, late = await asyncio.wait(self._batches, timeout=grace_s)
            if late:
                # Stop retrying: what is not done stays pending for another
                # consumer (or this one, by name) to take.
                self.runner.stopping.set()
                await asyncio.wait(late, timeout=1.0)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        await self._flush_acks()
        await self._leave()
        await self.client.aclose()
        self._log.info("source.redis_stopped")

    async def _consume(self) -> None:
        """Read, hand over and acknowledge batches until intake stops."""
        delay_s = RECONNECT_BASE_S
        recovered = False
        first_id = "$" if self.options.start == "latest" else "0"
        while self._intake:
            try:
                if not recovered:
                    await self._create_groups(first_id)
                    await self._recover_own_pending()
                    recovered = True
                    delay_s = RECONNECT_BASE_S
                    self._log.info("source.redis_started", streams=self.streams)
                await self._slots.acquire()
                try:
                    records = await self._next_batch()
                except BaseException:
                    self._slots.release()
                    raise
                if not records:
                    self._slots.release()
                    continue
                self._spawn(records)
                delay_s = RECONNECT_BASE_S
            except UNAVAILABLE as exc:
                self._log.warning(
                    "source.redis_unavailable", url=self.url, error=str(exc),
                    retry_in_s=round(delay_s, 2),
                )  # fmt: skip
                # Entries read but not handed over (a batch still filling,
                # a reply lost with the connection) are pending under this
                # consumer: read them again once the server answers.
                recovered = False
                await asyncio.sleep(delay_s)
                delay_s = min(RECONNECT_CAP_S, delay_s * 2)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The server lost its data (a restart without persistence):
                    # the group is created again, reading the stream from its
                    # start so that entries added meanwhile are not skipped.
                    self._log.warning("source.redis_group_missing", error=str(exc))
                    recovered = False
                    first_id = "0"
                    continue
                # A key that is not a stream, a server refusing the command:
                # nothing this consumer can mend, so it says so and tries
                # again slowly rather than ending without a word.
                self._log.error(
                    "source.redis_refused", streams=self.streams, error=str(exc),
                    hint="check that each name is a stream (TYPE key) and the "
                    "server is Redis 6.2 or newer",
                    retry_in_s=RECONNECT_CAP_S,
                )  # fmt: skip
                await asyncio.sleep(RECONNECT_CAP_S)

    async def _create_groups(self, first_id: str) -> None:
        """``XGROUP CREATE`` each stream's group (``MKSTREAM``) at ``first_id``;
        an existing group is fine."""
        for stream in self.streams:
            try:
                await self.client.xgroup_create(
                    stream, self.group, first_id, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _recover_own_pending(self) -> None:
        """Hand over entries pending under this consumer's own name that no
        batch holds.

        At start only a configured name finds any (what it had read and not
        acknowledged when it stopped or crashed); after a reconnect, what was
        read but never handed over.
        """
        for stream in self.streams:
            after_id: bytes | str = "0"
            while self._intake:
                reply = await self._read(
                    {stream: after_id}, self.options.batch_size, None
                )
                entries = only_stream_entries(reply)
                if not entries:
                    break
                after_id = entries[-1][0]
                self._forget_deleted(stream, entries)
                records = parse_entries(stream, entries)
                busy = self._busy_ids()
                idle = [r for r in records if r.item_id not in busy]
                if idle:
                    await self._slots.acquire()
                    self._spawn(await self._with_deliveries(idle))
                    await self._drain_batches()

    def _forget_deleted(self, stream: str, entries: Any) -> None:
        """Acknowledge pending entries deleted since they were read (``XDEL``,
        ``MAXLEN`` trimming): nothing is left to hand over, and unacknowledged
        they would stay pending forever."""
        deleted = [entry_id for entry_id, fields in entries if fields is None]
        if deleted:
            self._log.warning(
                "source.redis_pending_entries_deleted",
                stream=stream,
                entries=len(deleted),
            )
            self._unacked.setdefault(stream, []).extend(deleted)

    async def _next_batch(self) -> list[RedisRecord]:
        """Claimed entries if any are due, else new ones, up to the batch limits."""
        if time.monotonic() >= self._next_claim_at:
            self._next_claim_at = time.monotonic() + self.trigger.claim_idle_s / 2
            claimed = await self._claim_idle()
            if claimed:
                return claimed
        records, self._carried = self._carried, []
        window_ends: float | None = None
        while self._intake and len(records) < self.options.batch_size:
            if window_ends is None:
                block_ms = IDLE_BLOCK_MS
            else:
                block_ms = int((window_ends - time.monotonic()) * 1000)
                if block_ms < 1:
                    break
            reply = await self._read(
                dict.fromkeys(self.streams, ">"),
                self.options.batch_size - len(records), block_ms,
            )  # fmt: skip
            fetched = parse_reply(reply)
            if not fetched:
                if window_ends is None and not records:
                    return []
                if window_ends is not None:
                    break
            records.extend(fetched)
            if window_ends is None and records:
                window_ends = time.monotonic() + self.options.batch_window_s
        return self._within_bytes(records)

    def _within_bytes(self, records: list[RedisRecord]) -> list[RedisRecord]:
        """Cut the batch at ``max_batch_bytes``; the rest opens the next one."""
        limit = self.options.max_batch_bytes
        if limit is None:
            return records
        size = 0
        for index, record in enumerate(records):
            size += record.size
            if size > limit and index > 0:
                self._carried = records[index:]
                return records[:index]
        return records

    async def _claim_idle(self) -> list[RedisRecord]:
        """``XAUTOCLAIM`` entries idle past ``claim_idle``, skipping our own
        in-flight ones, with their delivery counts."""
        idle_ms = int(self.trigger.claim_idle_s * 1000)
        claimed: list[RedisRecord] = []
        for stream in self.streams:
            reply = await self.client.xautoclaim(
                stream, self.group, self.consumer, idle_ms, "0-0",
                count=self.options.batch_size,
            )  # fmt: skip
            claimed.extend(parse_entries(stream, reply[1]))
            await self._report_pending(stream)
        busy = self._busy_ids()
        claimed = [r for r in claimed if r.item_id not in busy]
        if claimed:
            self._log.info("source.redis_claimed", records=len(claimed))
        return await self._with_deliveries(claimed)

    async def _heartbeat(self) -> None:
        """Keep the entries of batches in flight from looking idle.

        A batch may run (with its retries) past ``claim_idle``; without this
        another consumer would claim its entries and handle them twice.
        ``XCLAIM ... JUSTID`` to ourselves resets their idle time and leaves
        the delivery count alone.
        """
        idle_ms = int(self.trigger.claim_idle_s * 1000)
        while True:
            await asyncio.sleep(self.trigger.claim_idle_s / 3)
            by_stream: dict[str, list[bytes | str]] = {}
            for records in list(self._batches.values()):
                for record in records:
                    by_stream.setdefault(record.stream, []).append(record.raw_id)
            try:
                for stream, ids in by_stream.items():
                    await self.client.xclaim(
                        stream, self.group, self.consumer, idle_ms // 3, ids,
                        justid=True,
                    )  # fmt: skip
            except (*UNAVAILABLE, ResponseError) as exc:
                self._log.warning("source.redis_heartbeat_failed", error=str(exc))

    def _busy_ids(self) -> set[str]:
        """The item ids of the batches in flight, and of the records done
        whose ``XACK`` waits for the next read: to ``XAUTOCLAIM`` those look
        idle too, and claiming them would hand them over twice."""
        busy = {r.item_id for records in self._batches.values() for r in records}
        for stream, ids in self._unacked.items():
            busy.update(
                f"{stream}@{i.decode() if isinstance(i, bytes) else i}" for i in ids
            )
        return busy

    async def _with_deliveries(self, records: list[RedisRecord]) -> list[RedisRecord]:
        """Set each record's earlier attempts from its delivery count."""
        if not records:
            return records
        async with self.client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.xpending_range(record.stream, self.group, record.id, record.id, 1)
            replies = await pipe.execute()
        for record, reply in zip(records, replies, strict=True):
            if reply:
                record.previous_attempts = max(0, reply[0]["times_delivered"] - 1)
        return records

    async def _report_pending(self, stream: str) -> None:
        summary = await self.client.xpending(stream, self.group)
        self._pending_gauge.labels(self.function, stream).set(summary["pending"])

    def _spawn(self, records: list[RedisRecord]) -> None:
        """Run a batch in its own task; its slot frees when it is acknowledged."""
        task = asyncio.create_task(self._handle(records))
        self._batches[task] = records
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self._batches[task]

    async def _drain_batches(self) -> None:
        if self._batches:
            await asyncio.wait(set(self._batches))

    async def _handle(self, records: list[RedisRecord]) -> None:
        """Run one batch to its end; what is done is acknowledged with the
        next read."""
        try:
            done = await self.runner.run(RedisBatch(records, {"group": self.group}))
            self._owe_acks(done)
        except Exception:
            self._log.exception("source.redis_batch_failed", records=len(records))
        finally:
            self._slots.release()

    def _owe_acks(self, done: list[StreamRecord]) -> None:
        """Queue the done records' ids for the next ``XACK``."""
        records = cast(list[RedisRecord], done)
        if len(self.streams) == 1:
            owed = self._unacked.setdefault(self.streams[0], [])
            owed.extend([record.raw_id for record in records])
            return
        for record in records:
            self._unacked.setdefault(record.stream, []).append(record.raw_id)

    async def _read(
        self, streams: dict[str, bytes | str], count: int, block_ms: int | None
    ) -> Any:
        """``XREADGROUP``, sent in one round trip after the ``XACK``s owed.

        The acknowledgements run first on the server, so an entry is never
        read again because its ``XACK`` waited; if the round trip fails they
        stay owed (``XACK`` twice is harmless).
        """
        if not self._unacked:
            return await self.client.xreadgroup(
                self.group, self.consumer, streams, count=count, block=block_ms
            )
        owed, self._unacked = self._unacked, {}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for stream, ids in owed.items():
                    pipe.xack(stream, self.group, *ids)
                pipe.xreadgroup(
                    self.group, self.consumer, streams, count=count, block=block_ms
                )
                replies = await pipe.execute()
        except BaseException:
            for stream, ids in owed.items():
                self._unacked.setdefault(stream, []).extend(ids)
            raise
        return replies[-1]

    async def _flush_acks(self) -> None:
        """Send the ``XACK``s owed (at stop), retrying briefly while the server
        is away; what stays unacknowledged is only delivered again."""
        for attempt in range(3):
            owed, self._unacked = self._unacked, {}
            try:
                for stream, ids in list(owed.items()):
                    await self.client.xack(stream, self.group, *ids)
                    del owed[stream]
                return
            except UNAVAILABLE as exc:
                self._unacked = owed
                self._log.warning("source.redis_ack_retry", error=str(exc))
                await asyncio.sleep(RECONNECT_BASE_S * 2**attempt)

    async def _dead_letter(self, dead: list[DeadRecord]) -> None:
        """``XADD`` each record to the dead-letter stream: its fields and why."""
        target = self.options.dead_letter
        if target is None:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for dead_record in dead:
                record = dead_record.record
                assert isinstance(record, RedisRecord)
                fields: dict[Any, Any] = dict(record.fields)
                fields.update(dead_letter_metadata(dead_record, self.function))
                pipe.xadd(target, fields)
            await pipe.execute()

    async def _leave(self) -> None:
        """Remove this consumer from its groups if it holds no pending entry."""
        try:
            for stream in self.streams:
                consumers = await self.client.xinfo_consumers(stream, self.group)
                mine = [c for c in consumers if c["name"].decode() == self.consumer]
                if mine and mine[0]["pending"] == 0:
                    await self.client.xgroup_delconsumer(
                        stream, self.group, self.consumer
                    )
        except (*UNAVAILABLE, ResponseError) as exc:
            self._log.info("source.redis_leave_skipped", error=str(exc))


def default_consumer_name() -> str:
    """Host, pid and a random suffix: unique per process, even a reused pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def entries_as_sent(client: Any) -> Any:
    """``client``, its ``XREADGROUP`` and ``XAUTOCLAIM`` replies left as the
    server sent them.

    redis-py turns each entry's fields into a dict and each entry into a
    tuple, which costs more than everything else fnplane does per record;
    ``RedisRecord`` takes the flat field list and builds the dict only when
    a handler reads it.
    """
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        client.set_response_callback(command, unparsed)
    return client


def unparsed(reply: Any, **options: Any) -> Any:
    """The reply as the protocol parser gave it."""
    return reply


def parse_reply(reply: Any) -> list[RedisRecord]:
    """Records from an ``XREADGROUP`` reply: ``[[stream, [[id, fields]...]]...]``
    (RESP2) or ``{stream: [[id, fields]...]}`` (RESP3)."""
    records: list[RedisRecord] = []
    if isinstance(reply, dict):
        reply = reply.items()
    for stream, entries in reply or ():
        records.extend(parse_entries(stream, entries))
    return records


def only_stream_entries(reply: Any) -> Any:
    """The ``[id, fields]`` entries of an ``XREADGROUP`` reply for one stream."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]


def parse_entries(stream: bytes | str, entries: Any) -> list[RedisRecord]:
    """``RedisRecord``s from one stream's ``[id, [name, value...]]`` entries; an
    entry deleted meanwhile (no fields) is skipped."""
    name = stream.decode() if isinstance(stream, bytes) else stream
    return [
        RedisRecord(name, entry_id, fields)
        for entry_id, fields in entries
        if fields is not None
    ]


def pending_gauge(invoker: Invoker) -> Gauge:
    """The ``fnplane_redis_pending`` gauge of this invoker's registry."""
    return invoker.metrics.shared(
        "redis_pending",
        lambda registry: Gauge(
            "fnplane_redis_pending", "Entries read by the group and not acknowledged.",
            ["function", "stream"], registry=registry,
        ),
    )  # fmt: skip
