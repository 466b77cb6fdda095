"""The Kafka source: consumer groups read in batches, committed after success or
dead-lettering.

One ``TopicConsumer`` per ``kafka`` trigger:

- settings: an aiokafka consumer in group ``group`` (default the function's
  name) on ``bootstrap`` (default the ``kafka_bootstrap`` setting), offsets
  committed by hand, a new group starting at ``start``; topics checked (or
  created with ``create_topics``) at start;
- consume loop: ``getmany(max_records=...)`` fills a batch up to
  ``batch_size``, ``max_batch_bytes`` or the end of ``batch_window`` (counted
  from its first record, so a backlog never waits); at most ``concurrency``
  batches run at once and a partition is in at most one of them, so records
  reach the handler in partition order;
- parsing: fetched records become ``KafkaRecord``s in a ``KafkaBatch``
  (Lambda's self-managed Kafka event, built only if read);
- bookkeeping: ``BatchRunner`` retries and dead-letters (a produce of the
  original key, value and headers plus ``fnplane-*`` headers), then one
  commit per batch moves each partition's offset past the records done,
  never past one that is not.

A cluster that is down at start or goes away is retried with backoff; the
consumer resumes from the committed offsets, so nothing is skipped. A cluster
that goes away once the consumer runs is not an error aiokafka raises: it
reconnects by itself, its fetches come back empty and its commits wait
meanwhile. So the source watches the fetch responses of the partitions it
reads, and says when none has come for a whole session, and when one comes
again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from fnplane.errors import RegistrationError, describe_error
from fnplane.events.stream import KafkaBatch, KafkaRecord, StreamRecord
from fnplane.sources.kafka_clients import (
    DeadLetterProducer,
    KafkaDeadLetterError,
    KafkaTopicMissingError,
    aiokafka,
    close_quietly,
    create_topics,
    lag_gauge,
    rebalance_listener,
)
from fnplane.stream_trigger import KafkaTrigger
from fnplane.streams import BatchRunner, stream_metrics

if TYPE_CHECKING:
    from fnplane.function import Function
    from fnplane.invoke import Invoker

__all__ = ["KafkaDeadLetterError", "KafkaSource", "KafkaTopicMissingError"]

logger = structlog.get_logger(__name__)

SOURCE = "kafka"
# How long one idle getmany waits for a first record: bounds how long the
# loop takes to notice a freed slot or the end of intake.
IDLE_POLL_MS = 500
# While every slot is busy the partitions are paused, and an empty getmany
# this often keeps the member in its group past max_poll_interval.
KEEPALIVE_S = 5.0
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
# How long a rebalance waits for the batches of revoked partitions before it
# gives them up (their records go to the next owner uncommitted).
REVOKE_WAIT_S = 10.0
STOP_COMMIT_ATTEMPTS = 3
# aiokafka's commit waits without end for a cluster it cannot reach; a stop
# gives up on its last commit after this (those records come again to the
# partitions' next owner), so a shutdown during an outage still ends.
STOP_COMMIT_TIMEOUT_S = 5.0


def create_source(invoker: Invoker) -> KafkaSource:
    """The Kafka source for every ``kafka`` trigger of the invoker's app."""
    return KafkaSource(invoker)


class KafkaSource:
    """Runs one consumer per ``kafka`` trigger."""

    def __init__(self, invoker: Invoker) -> None:
        self.consumers = [
            TopicConsumer(invoker, function, trigger)
            for function in invoker.app.functions.values()
            for trigger in function.triggers
            if isinstance(trigger, KafkaTrigger)
        ]

    async def start(self) -> None:
        """Check every trigger, then start each consumer.

        Raises ``RegistrationError`` for a dead letter that is one of its own
        topics and ``KafkaTopicMissingError`` for a missing topic; a cluster
        that cannot be reached is not an error: it is retried.
        """
        for consumer in self.consumers:
            consumer.check()
        for consumer in self.consumers:
            await consumer.start()

    def stop_intake(self) -> None:
        """Fetch no new records; batches in flight go on."""
        for consumer in self.consumers:
            consumer.stop_intake()

    async def stop(self, grace_s: float) -> None:
        """Finish in-flight batches within ``grace_s``, commit, leave the groups."""
        await asyncio.gather(*(c.stop(grace_s) for c in self.consumers))


class TopicConsumer:
    """One trigger's consumer: its group, its loop and its commits."""

    def __init__(
        self, invoker: Invoker, function: Function, trigger: KafkaTrigger
    ) -> None:
        self.function = function.name
        self.trigger = trigger
        self.options = trigger.options
        self.topics = trigger.topics
        self.bootstrap = trigger.bootstrap or invoker.settings.kafka_bootstrap
        self.group = trigger.group or function.name
        self.session_timeout_ms = int(invoker.settings.kafka_session_timeout * 1000)
        self._dead_letters = DeadLetterProducer(
            self.bootstrap, self.function, self.options.dead_letter
        )
        self.runner = BatchRunner(
            invoker,
            function.name,
            SOURCE,
            self.options,
            self._dead_letters.send,
            stream_metrics(invoker),
        )
        self._lag = lag_gauge(invoker)
        self._lag_children: dict[Any, Any] = {}
        self._event_source = {"bootstrap": self.bootstrap}
        self._consumer: Any = None
        self._intake = True
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: dict[Any, asyncio.Task[None]] = {}
        self._paused: set[Any] = set()
        self._owed: dict[Any, int] = {}
        self._freed = asyncio.Event()
        self._committer: asyncio.Task[bool] | None = None
        # Counts revocations: records fetched before one may belong to a
        # partition that moved, and are fetched again from the commit.
        self._generation = 0
        # Wall-clock seconds, as aiokafka's fetch timestamps are: when the
        # partitions read last (re)started fetching, and when the cluster
        # last answered before a silence (None while it answers).
        self._fetching_since_s = time.time()
        self._silent_since_s: float | None = None
        self._log = logger.bind(function=self.function, group=self.group)

    def check(self) -> None:
        """Refuse a dead letter that is one of the consumed topics."""
        dead_letter = self.options.dead_letter
        if dead_letter in self.topics:
            raise RegistrationError(
                f"function {self.function!r}: dead_letter {dead_letter!r} is one "
                f"of its own topics, so a failing record would come back to it "
                f"forever; name another topic"
            )

    async def start(self) -> None:
        """Connect and subscribe, or retry in the background if the cluster is
        down; a missing topic raises ``KafkaTopicMissingError``."""
        errors = aiokafka("errors")
        connected = False
        try:
            await self._connect()
            connected = True
        except (errors.KafkaError, OSError) as exc:
            self._unavailable(exc, RECONNECT_BASE_S)
        self._loop_task = asyncio.create_task(
            self._run(connected), name=f"kafka-{self.function}"
        )

    def stop_intake(self) -> None:
        """Stop fetching; in-flight batches go on."""
        self._intake = False

    async def stop(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for batches, abandon the rest, commit what is
        done (within ``STOP_COMMIT_TIMEOUT_S``) and leave the group."""
        self._intake = False
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            if late:
                # Stop retrying: what is not done stays uncommitted for the
                # next owner of its partition.
                self.runner.stopping.set()
                await asyncio.wait(late, timeout=1.0)
        if self._consumer is not None:
            await self._commit_at_stop()
            await close_quietly(self._consumer, self._log)
        await self._dead_letters.close(self._log)
        self._log.info("source.kafka_stopped")

    async def _commit_at_stop(self) -> None:
        """Commit what is owed, within ``STOP_COMMIT_TIMEOUT_S``."""
        try:
            async with asyncio.timeout(STOP_COMMIT_TIMEOUT_S):
                await self._commit_in_flight()
                for _ in range(STOP_COMMIT_ATTEMPTS):
                    if await self._commit_owed():
                        return
                    await asyncio.sleep(RECONNECT_BASE_S)
        except TimeoutError:
            self._log.warning(
                "source.kafka_commit_abandoned",
                bootstrap=self.bootstrap,
                partitions=len(self._owed),
                timeout_s=STOP_COMMIT_TIMEOUT_S,
            )

    async def _connect(self) -> None:
        """Start a consumer, check the topics, subscribe with our listener."""
        consumer = aiokafka().AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.options.start,
            session_timeout_ms=self.session_timeout_ms,
            # A third of the session, as Kafka advises: two heartbeats may be
            # lost before the group gives the partitions away.
            heartbeat_interval_ms=self.session_timeout_ms // 3,
        )
        try:
            await consumer.start()
            await self._ensure_topics(consumer)
        except BaseException:
            await consumer.stop()
            raise
        listener = rebalance_listener(self.revoked, self.assigned)
        consumer.subscribe(list(self.topics), listener=listener)
        self._consumer = consumer
        self._log.info(
            "source.kafka_started", bootstrap=self.bootstrap, topics=self.topics
        )

    async def _ensure_topics(self, consumer: Any) -> None:
        """Raise (or create, with ``create_topics``) for missing topics."""
        wanted = [*self.topics, *filter(None, [self.options.dead_letter])]
        existing = await consumer.topics()
        missing = [topic for topic in wanted if topic not in existing]
        if not missing:
            return
        if not self.trigger.create_topics:
            raise KafkaTopicMissingError(
                f"function {self.function!r}: Kafka topic(s) {missing} do not "
                f"exist on {self.bootstrap}; create them, or pass "
                f"create_topics=True to @app.kafka to create them at start"
            )
        await create_topics(self.bootstrap, missing)
        self._log.info("source.kafka_topics_created", topics=missing)

    def _unavailable(self, exc: BaseException, retry_in_s: float) -> None:
        self._log.warning(
            "source.kafka_unavailable",
            bootstrap=self.bootstrap,
            error=describe_error(exc),
            retry_in_s=round(retry_in_s, 2),
        )

    async def _run(self, connected: bool) -> None:
        """Connect (retrying with backoff), then consume until intake stops."""
        errors = aiokafka("errors")
        delay_s = RECONNECT_BASE_S
        while not connected and self._intake:
            await asyncio.sleep(delay_s)
            try:
                await self._connect()
                connected = True
            except KafkaTopicMissingError as exc:
                self._log.error("source.kafka_topic_missing", error=str(exc))
                delay_s = RECONNECT_CAP_S
            except (errors.KafkaError, OSError) as exc:
                delay_s = min(RECONNECT_CAP_S, delay_s * 2)
                self._unavailable(exc, delay_s)
        delay_s = RECONNECT_BASE_S
        while self._intake:
            try:
                await self._step()
                delay_s = RECONNECT_BASE_S
            except errors.KafkaError as exc:
                self._unavailable(exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(RECONNECT_CAP_S, delay_s * 2)
            except Exception:
                # Whatever went wrong, a consumer that ended without a word
                # would leave its partitions unread: say it, and go on.
                self._log.exception("source.kafka_loop_failed")
                await asyncio.sleep(RECONNECT_CAP_S)

    async def _step(self) -> None:
        """Wait for a free slot, or fetch a batch and hand it over."""
        if len(self._tasks) >= self.options.concurrency:
            await self._wait_for_slot()
            return
        self._steer()
        fetched = await self._fill()
        if fetched:
            self._dispatch(fetched)

    async def _wait_for_slot(self) -> None:
        self._freed.clear()
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                await self._freed.wait()
        except TimeoutError:
            # A batch runs long: with every partition paused this fetches
            # nothing, and counts as the poll that keeps us in the group.
            self._pause(self._consumer.assignment())
            await self._consumer.getmany(timeout_ms=0)

    def _steer(self) -> None:
        """Pause the partitions with a batch in flight, resume the others.

        Pausing drops what aiokafka prefetched for a partition, so it is
        done only when needed: with one slot nothing is in flight here.
        """
        assigned = self._consumer.assignment()
        busy = {tp for tp in self._busy if tp in assigned}
        self._pause(busy)
        idle = [tp for tp in self._paused if tp not in busy and tp in assigned]
        if idle:
            self._consumer.resume(*idle)
            self._fetching_since_s = time.time()
        self._paused = busy

    def _pause(self, partitions: Any) -> None:
        fresh = [tp for tp in partitions if tp not in self._paused]
        if fresh:
            self._consumer.pause(*fresh)
            self._paused.update(fresh)

    async def _fill(self) -> dict[Any, list[Any]]:
        """Records by partition, up to the batch's size, window and bytes."""
        consumer, size = self._consumer, self.options.batch_size
        fetched: dict[Any, list[Any]] = {}
        count = 0
        generation = self._generation
        window_ends: float | None = None
        while self._intake and count < size:
            if window_ends is None:
                timeout_ms = IDLE_POLL_MS
            else:
                timeout_ms = int((window_ends - time.monotonic()) * 1000)
                if timeout_ms <= 0:
                    break
            got = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=size - count
            )
            if generation != self._generation:
                # A rebalance ran meanwhile: what came before it is fetched
                # again from the committed offsets by whoever owns it now.
                generation, fetched, count = self._generation, {}, 0
            if not got:
                if window_ends is None:
                    self._watch_contact()
                    return fetched
                continue
            for tp, records in got.items():
                fetched.setdefault(tp, []).extend(records)
                count += len(records)
            if window_ends is None:
                window_ends = time.monotonic() + self.options.batch_window_s
        return self._within_bytes(fetched)

    def _watch_contact(self) -> None:
        """After an empty fetch: warn once no partition read has had a fetch
        response for a session (the group gives them away then), and say when
        one comes again.

        A partition is fetched about every ``fetch_max_wait_ms`` (500 ms)
        even when nothing arrives, so a whole session without a response
        means the cluster is out of reach, not that the topic is quiet.
        Paused partitions are not fetched and say nothing either way.
        """
        fetching = set(self._consumer.assignment()) - self._paused
        if not fetching:
            return
        heard_at_s = max(
            self._fetching_since_s,
            *((self._consumer.last_poll_timestamp(tp) or 0) / 1000 for tp in fetching),
        )
        silent_s = time.time() - heard_at_s
        if silent_s * 1000 >= self.session_timeout_ms:
            if self._silent_since_s is None:
                self._silent_since_s = heard_at_s
                self._log.warning(
                    "source.kafka_unavailable",
                    bootstrap=self.bootstrap,
                    error=f"no fetch response for {silent_s:.1f} s",
                    partitions=len(fetching),
                )
        elif self._silent_since_s is not None:
            self._log.info(
                "source.kafka_reconnected",
                bootstrap=self.bootstrap,
                silent_s=round(heard_at_s - self._silent_since_s, 1),
            )
            self._silent_since_s = None

    def _within_bytes(self, fetched: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Cut the batch at ``max_batch_bytes`` (keys and values); the partitions
        cut are rewound so the rest is fetched again for the next batch."""
        limit = self.options.max_batch_bytes
        if limit is None:
            return fetched
        kept: dict[Any, list[Any]] = {}
        size = 0
        for tp, records in fetched.items():
            for index, record in enumerate(records):
                size += len(record.value or b"") + len(record.key or b"")
                if size > limit and (kept or index > 0):
                    if index > 0:
                        kept[tp] = records[:index]
                    self._consumer.seek(tp, record.offset)
                    break
            else:
                kept[tp] = records
        return kept

    def _dispatch(self, fetched: dict[Any, list[Any]]) -> None:
        """Run a batch in its own task; its partitions are busy until it ends."""
        by_partition = {
            tp: list(map(KafkaRecord, records)) for tp, records in fetched.items()
        }
        records: list[StreamRecord] = []
        for tp, wrapped in by_partition.items():
            records += wrapped
            self._report_lag(tp, wrapped[-1].offset + 1)
        task = asyncio.create_task(self._handle(records, by_partition))
        self._tasks.add(task)
        for tp in by_partition:
            self._busy[tp] = task
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        for tp in [tp for tp, owner in self._busy.items() if owner is task]:
            del self._busy[tp]
        self._freed.set()

    def _report_lag(self, tp: Any, position: int) -> None:
        highwater = self._consumer.highwater(tp)
        if highwater is None:
            return
        child = self._lag_children.get(tp)
        if child is None:
            child = self._lag.labels(self.function, tp.topic, str(tp.partition))
            self._lag_children[tp] = child
        child.set(max(0, highwater - position))

    async def _handle(
        self, records: list[StreamRecord], by_partition: dict[Any, list[KafkaRecord]]
    ) -> None:
        """Run one batch to its end, then owe a commit of what is done.

        The commit goes out in the background: the partitions are free for
        their next batch meanwhile, since a commit only ever covers records
        done, and a commit that fails is covered by the next one.
        """
        generation = self._generation
        try:
            done = await self.runner.run(KafkaBatch(records, self._event_source))
        except Exception:
            self._log.exception("source.kafka_batch_failed", records=len(records))
            done = []
        rewind = self._owe(by_partition, done, len(records))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_while_owed())
        if rewind and not self._stopping and generation == self._generation:
            # Records left undone outside a shutdown (the batch failed in an
            # unexpected way) are fetched again rather than skipped.
            assigned = self._consumer.assignment()
            for tp, offset in rewind.items():
                if tp in assigned:
                    self._consumer.seek(tp, offset)

    def _owe(
        self, by_partition: dict[Any, list[KafkaRecord]], done: list[StreamRecord],
        total: int,
    ) -> dict[Any, int]:  # fmt: skip
        """Owe each partition a commit past its records done, in offset order;
        return the first undone offset of the partitions that have one."""
        rewind: dict[Any, int] = {}
        if len(done) == total:
            for tp, wrapped in by_partition.items():
                self._owed[tp] = wrapped[-1].offset + 1
            return rewind
        finished = {id(record) for record in done}
        for tp, wrapped in by_partition.items():
            next_offset = None
            for record in wrapped:
                if id(record) not in finished:
                    rewind[tp] = record.offset
                    break
                next_offset = record.offset + 1
            if next_offset is not None:
                self._owed[tp] = next_offset
        return rewind

    async def _commit_while_owed(self) -> bool:
        """Commit until nothing is owed (batches may end during a commit);
        a failed commit stops here and the next batch's end tries again."""
        while self._owed:
            if not await self._commit_owed():
                return False
        return True

    async def _commit_in_flight(self) -> None:
        """Wait for the background commit, if one is on its way."""
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)

    async def _commit_owed(self, only: Any = None) -> bool:
        """Commit the offsets owed for partitions still ours; False if the
        commit failed (they stay owed). Owed offsets of partitions that moved
        are dropped: their next owner starts from the last commit, and the
        records since are delivered again."""
        assigned = self._consumer.assignment()
        for tp in [tp for tp in self._owed if tp not in assigned]:
            del self._owed[tp]
        owed = {
            tp: offset
            for tp, offset in self._owed.items()
            if only is None or tp in only
        }
        if not owed:
            return True
        try:
            await self._consumer.commit(owed)
        except aiokafka("errors").KafkaError as exc:
            self._log.warning(
                "source.kafka_commit_failed",
                error=describe_error(exc),
                partitions=len(owed),
            )
            return False
        for tp, offset in owed.items():
            if self._owed.get(tp) == offset:
                del self._owed[tp]
        return True

    async def revoked(self, revoked: Any) -> None:
        """Before partitions move: let their batches end (within a bound), and
        commit what is done while they are still ours."""
        self._generation += 1
        tasks = {self._busy[tp] for tp in revoked if tp in self._busy}
        if tasks:
            wait_s = 0.0 if self._stopping else REVOKE_WAIT_S
            _, late = await asyncio.wait(tasks, timeout=wait_s) if wait_s else (
                set(), tasks)  # fmt: skip
            if late:
                self._log.warning("source.kafka_revoke_abandoned", batches=len(late))
        await self._commit_in_flight()
        await self._commit_owed(only=set(revoked))
        self._paused -= set(revoked)

    def assigned(self, assigned: Any) -> None:
        """After a rebalance: a fresh assignment is unpaused, so the next fetch
        re-pauses what is still in flight."""
        self._paused = set()
        self._fetching_since_s = time.time()
        self._log.info(
            "source.rebalanced",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
        )
