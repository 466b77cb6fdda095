"""The Redis Streams source against a real redis-server: batches, retries, dead
letters, claims of idle entries, reconnects and acknowledgements."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as redis
from structlog.testing import capture_logs

from fnplane import App, BatchFailure
from fnplane.config import Settings
from tests.conftest import free_port
from tests.stream_helpers import unique, wait_until
from tests.tcp_proxy import TcpProxy

WAIT_S = 15.0
# Several of the source's reconnect attempts.
OUTAGE_S = 3.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    """A raw redis-py client on the test server."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def publish(client: Any, stream: str, values: list[Any]) -> list[str]:
    """XADD each value (JSON-encoded unless bytes) as the ``value`` field."""
    ids = []
    async with client.pipeline(transaction=False) as pipe:
        for value in values:
            data = value if isinstance(value, bytes) else json.dumps(value)
            pipe.xadd(stream, {"value": data})
        for entry_id in await pipe.execute():
            ids.append(entry_id.decode())
    return ids


async def eventually(read: Callable[[], Awaitable[Any]], expected: int) -> Any:
    """Await ``read()`` until its value (or its length) is ``expected``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = await read()
        count = value if isinstance(value, int) else len(value)
        if count == expected:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"expected {expected}, still {count}: {value!r}")
        await asyncio.sleep(0.02)


async def pending_count(client: Any, stream: str, group: str) -> int:
    """Entries the group read and did not acknowledge."""
    return int((await client.xpending(stream, group))["pending"])


async def test_batches_respect_size_and_every_record_is_acknowledged(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """250 entries in batches of at most 100, all handled once, none pending."""
    stream, seen, sizes = unique("orders"), [], []
    app = App()

    @app.redis_stream(stream, url=redis_url, start="earliest", batch_size=100)
    async def consume(batch: Any, context: Any) -> None:
        sizes.append(len(batch))
        seen.extend(record.json()["n"] for record in batch)

    await publish(client, stream, [{"n": n} for n in range(250)])
    await start_platform(app)
    await wait_until(lambda: len(seen) >= 250, "250 records")

    assert sorted(seen) == list(range(250))
    assert max(sizes) <= 100
    await eventually(lambda: pending_count(client, stream, "consume"), 0)


async def test_batch_window_gathers_records_that_arrive_within_it(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """Records published 100 ms apart within a 1 s window arrive as one batch."""
    stream, batches = unique("window"), []
    app = App()

    @app.redis_stream(stream, url=redis_url, batch_window=1.0)
    async def gather(batch: Any, context: Any) -> None:
        batches.append([record.json() for record in batch])

    await start_platform(app)
    await asyncio.sleep(0.3)  # let the group be created at "$" before publishing
    for n in range(3):
        await publish(client, stream, [n])
        await asyncio.sleep(0.1)
    await wait_until(lambda: batches, "a batch")

    assert batches == [[0, 1, 2]]


async def test_per_record_handler_sees_records_in_stream_order(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """per_record=True calls the handler once per entry, in the stream's order."""
    stream, seen = unique("ordered"), []
    app = App()

    @app.redis_stream(stream, url=redis_url, start="earliest", per_record=True)
    def one(record: Any, context: Any) -> None:
        seen.append(record.json())

    await publish(client, stream, list(range(300)))
    await start_platform(app)
    await wait_until(lambda: len(seen) == 300, "300 records")

    assert seen == list(range(300))


@pytest.mark.parametrize("protocol", [2, 3])
async def test_records_carry_every_field_of_their_entry(
    start_platform: Any, client: Any, redis_url: str, protocol: int
) -> None:
    """Read (RESP2 or RESP3 replies) and claimed entries alike give their
    value, key and every field, the one-field entry its only field as value;
    entries handled and awaiting their XACK are not claimed again."""
    stream, seen = unique("fields"), []
    await client.xgroup_create(stream, "fields", "0", mkstream=True)
    await client.xadd(stream, {"value": "v0", "key": "k0", "kind": "a"})
    await client.xreadgroup("fields", "crashed", {stream: ">"}, count=1)
    await client.xadd(stream, {"payload": "v1"})
    await client.xadd(stream, {"a": "1", "b": "2"})
    app = App()

    @app.redis_stream(stream, url=f"{redis_url}?protocol={protocol}", claim_idle=0.2)
    async def fields(batch: Any, context: Any) -> None:
        seen.extend((record.value, record.key, record.fields) for record in batch)

    await asyncio.sleep(0.2)
    await start_platform(app)
    await wait_until(lambda: len(seen) == 3, "the three entries")

    assert sorted(seen, key=repr) == sorted(
        [
            (b"v0", b"k0", {b"value": b"v0", b"key": b"k0", b"kind": b"a"}),
            (b"v1", None, {b"payload": b"v1"}),
            (None, None, {b"a": b"1", b"b": b"2"}),
        ],
        key=repr,
    )
    await eventually(lambda: pending_count(client, stream, "fields"), 0)
    await asyncio.sleep(0.4)  # two claim rounds: none takes a handled entry
    assert len(seen) == 3


async def test_poison_record_is_retried_then_dead_lettered_and_the_rest_handled(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """A record that always fails gets 1 + retries attempts, then lands in the
    dead-letter stream with its fields and the error; the others succeed."""
    stream, dead_letter = unique("poison"), unique("poison-dlq")
    attempts: dict[int, int] = {}
    handled: list[int] = []
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", retries=2, backoff=(0.01, 0.05),
        dead_letter=dead_letter, per_record=True,
    )  # fmt: skip
    def pay(record: Any, context: Any) -> None:
        value = record.json()
        attempts[value] = attempts.get(value, 0) + 1
        if value == 3:
            raise ValueError("card declined")
        handled.append(value)

    ids = await publish(client, stream, list(range(6)))
    await start_platform(app)
    await wait_until(lambda: attempts.get(3) == 3 and len(handled) == 5, "retries")
    entries = await eventually(lambda: client.xrange(dead_letter), 1)

    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"value"] == b"3"
    assert fields[b"fnplane-source"] == f"{stream}@{ids[3]}".encode()
    assert fields[b"fnplane-attempts"] == b"3"
    assert fields[b"fnplane-error-type"] == b"ValueError"
    assert fields[b"fnplane-error-message"] == b"card declined"
    assert fields[b"fnplane-condition"] == b"RetriesExhausted"
    assert sorted(handled) == [0, 1, 2, 4, 5]
    await eventually(lambda: pending_count(client, stream, "pay"), 0)


@pytest.mark.parametrize("style", ["returned", "raised"])
async def test_partial_batch_failure_retries_only_the_named_records(
    start_platform: Any, client: Any, redis_url: str, style: str
) -> None:
    """batchItemFailures (or BatchFailure) names one record: only it comes back."""
    stream = unique("partial")
    calls: list[list[int]] = []
    app = App()

    @app.redis_stream(stream, url=redis_url, start="earliest", backoff=(0.01, 0.05))
    async def settle(batch: Any, context: Any) -> Any:
        values = [record.json() for record in batch]
        calls.append(values)
        if len(calls) > 1:
            return None
        failed = [record for record in batch if record.json() == 2]
        if style == "raised":
            raise BatchFailure(failed, "record 2 failed")
        return {"batchItemFailures": [{"itemIdentifier": r.item_id} for r in failed]}

    await publish(client, stream, list(range(5)))
    await start_platform(app)
    await wait_until(lambda: len(calls) == 2, "the retry")

    assert calls == [[0, 1, 2, 3, 4], [2]]


async def test_bisect_isolates_the_bad_record_in_a_batch_of_100(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """A batch that raises is split until the one bad record fails alone."""
    stream, dead_letter = unique("bisect"), unique("bisect-dlq")
    handled: set[int] = set()
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", batch_size=100, batch_window=2.0,
        retries=0, bisect_on_error=True, dead_letter=dead_letter,
    )  # fmt: skip
    async def strict(batch: Any, context: Any) -> None:
        values = [record.json() for record in batch]
        if 57 in values:
            raise RuntimeError("57 is not allowed")
        handled.update(values)

    await publish(client, stream, list(range(100)))
    await start_platform(app)
    await wait_until(lambda: len(handled) == 99, "99 handled records")
    entries = await eventually(lambda: client.xrange(dead_letter), 1)

    assert 57 not in handled
    assert [fields[b"value"] for _, fields in entries] == [b"57"]
    assert entries[0][1][b"fnplane-error-type"] == b"RuntimeError"


async def test_invalid_json_is_a_record_failure_dead_lettered(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """record.json() on a bad value fails that record alone: it is
    dead-lettered after its retries and the good records are handled."""
    stream, dead_letter = unique("json"), unique("json-dlq")
    handled: list[Any] = []
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", retries=1, backoff=(0.01, 0.02),
        dead_letter=dead_letter,
    )  # fmt: skip
    async def parse(batch: Any, context: Any) -> None:
        for record in batch:
            handled.append(record.json())

    await publish(client, stream, [1, b"{not json", b"\xff\xfe", 4])
    await start_platform(app)
    await wait_until(lambda: 4 in handled, "the record after the bad ones")
    entries = await eventually(lambda: client.xrange(dead_letter), 2)

    assert [fields[b"value"] for _, fields in entries] == [b"{not json", b"\xff\xfe"]
    assert {fields[b"fnplane-error-type"] for _, fields in entries} == {
        b"RecordDecodeError"
    }
    # The batch's good records come again while a bad one is retried.
    assert set(handled) == {1, 4}


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """Entries read by a consumer that never acknowledged are taken over
    after claim_idle, and their delivery count counts as attempts."""
    stream, seen = unique("claim"), []
    await client.xgroup_create(stream, "claimer", "0", mkstream=True)
    await publish(client, stream, list(range(10)))
    await client.xreadgroup("claimer", "crashed", {stream: ">"}, count=10)
    app = App()

    @app.redis_stream(stream, url=redis_url, claim_idle=0.3)
    async def claimer(batch: Any, context: Any) -> None:
        seen.extend((record.json(), context.attempt) for record in batch)

    await asyncio.sleep(0.3)
    await start_platform(app)
    await wait_until(lambda: len(seen) == 10, "the claimed records")

    assert sorted(value for value, _ in seen) == list(range(10))
    assert {attempt for _, attempt in seen} == {2}


async def test_a_configured_consumer_takes_back_its_own_pending_entries(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """A stable consumer name finds what it read before a crash at once."""
    stream, seen = unique("own"), []
    await client.xgroup_create(stream, "own", "0", mkstream=True)
    await publish(client, stream, list(range(5)))
    await client.xreadgroup("own", "worker-1", {stream: ">"}, count=5)
    app = App()

    @app.redis_stream(stream, url=redis_url, consumer="worker-1", claim_idle=3600)
    async def own(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    await start_platform(app)
    await wait_until(lambda: len(seen) == 5, "the pending records")

    assert seen == list(range(5))


async def test_own_pending_entries_deleted_meanwhile_are_acknowledged(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """Entries read before a crash and deleted since (XDEL, trimming) have
    nothing to hand over: they are acknowledged, the others handled, and
    nothing stays pending."""
    stream, seen = unique("deleted"), []
    await client.xgroup_create(stream, "own", "0", mkstream=True)
    ids = await publish(client, stream, list(range(6)))
    await client.xreadgroup("own", "worker-1", {stream: ">"}, count=6)
    await client.xdel(stream, ids[0], ids[3], ids[4])
    app = App()

    @app.redis_stream(
        stream, url=redis_url, consumer="worker-1", claim_idle=3600, batch_size=2
    )
    async def own(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    with capture_logs() as logs:
        await start_platform(app)
        await wait_until(lambda: len(seen) == 3, "the records left")
        await eventually(lambda: pending_count(client, stream, "own"), 0)

    assert seen == [1, 2, 5]
    deleted = [e for e in logs if e["event"] == "source.redis_pending_entries_deleted"]
    assert sum(e["entries"] for e in deleted) == 3


async def test_consumption_resumes_after_the_connection_is_killed(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """CLIENT KILL of the consumer's connections loses and skips nothing."""
    stream, seen = unique("reconnect"), []
    app = App()

    @app.redis_stream(stream, url=redis_url, start="earliest", per_record=True)
    async def steady(record: Any, context: Any) -> None:
        seen.append(record.json())

    await publish(client, stream, list(range(50)))
    await start_platform(app)
    await wait_until(lambda: len(seen) == 50, "the first records")
    await client.client_kill_filter(_type="normal", skipme=True)
    await publish(client, stream, list(range(50, 100)))
    await wait_until(lambda: len(seen) >= 100, "records after the kill")

    assert sorted(set(seen)) == list(range(100))


async def test_consumption_resumes_after_the_server_restarts(
    start_platform: Any, redis_server: Any
) -> None:
    """The server goes away and comes back empty: the group is created again
    and entries added after the restart are all handled."""
    stream, seen = unique("restart"), []
    app = App()

    @app.redis_stream(stream, url=redis_server.url, start="earliest")
    async def survivor(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    connection = redis.Redis.from_url(redis_server.url)
    try:
        await publish(connection, stream, [1, 2])
        await start_platform(app)
        await wait_until(lambda: len(seen) == 2, "records before the restart")
        redis_server.stop()
        await asyncio.sleep(0.5)
        redis_server.start()
        await publish(connection, stream, [3, 4])
        await wait_until(lambda: len(seen) == 4, "records after the restart")
    finally:
        await connection.aclose()

    assert seen == [1, 2, 3, 4]


@pytest.fixture
async def proxied_redis(redis_server: Any) -> AsyncIterator[tuple[str, TcpProxy]]:
    """A server of the test's own reached through a ``TcpProxy``: the proxy's
    URL, and the proxy (``redis_server.url`` bypasses it)."""
    proxy = TcpProxy(free_port(), redis_server.port)
    await proxy.start()
    yield f"redis://127.0.0.1:{proxy.port}/0", proxy
    await proxy.stop()


async def test_consumption_resumes_after_the_server_is_cut_off(
    proxied_redis: tuple[str, TcpProxy], start_platform: Any, redis_server: Any
) -> None:
    """The consumer's connections are reset and refused for a few seconds as a
    batch ends and entries arrive, the server keeping its data: it warns, then
    handles every entry once at least, in order, and acknowledges them all."""
    url, proxy = proxied_redis
    stream, first = unique("cut"), []
    in_flight, release = asyncio.Event(), asyncio.Event()
    app = App()

    @app.redis_stream(stream, url=url, start="earliest", batch_size=10)
    async def cut_off(batch: Any, context: Any) -> None:
        for record in batch:
            n = record.json()
            if n == 25 and not release.is_set():
                in_flight.set()
                await release.wait()
            # At-least-once allows an entry again: order is that of the
            # first deliveries.
            if n not in first:
                first.append(n)

    client = redis.Redis.from_url(redis_server.url)
    try:
        await publish(client, stream, list(range(30)))
        with capture_logs() as logs:
            await start_platform(app)
            await wait_until(in_flight.is_set, "a batch in flight")
            cut_at = time.monotonic()
            await proxy.cut()
            # The batch ends during the outage: its XACK has to wait for the
            # server to come back.
            release.set()
            await publish(client, stream, list(range(30, 60)))
            await asyncio.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))
            await proxy.restore()
            await wait_until(lambda: len(first) == 60, "every entry after the outage")
            await eventually(lambda: pending_count(client, stream, "cut_off"), 0)
    finally:
        await client.aclose()

    assert first == list(range(60))
    warning = next(e for e in logs if e["event"] == "source.redis_unavailable")
    assert warning["log_level"] == "warning"
    assert warning["url"] == url


async def test_graceful_stop_acknowledges_what_was_handled(
    start_platform: Any, client: Any, redis_url: str, settings: Settings
) -> None:
    """After a stop, a new platform in the same group gets nothing again."""
    stream, first, second = unique("graceful"), [], []

    def app_with(seen: list[int]) -> App:
        app = App()

        @app.redis_stream(stream, url=redis_url, group="graceful", start="earliest")
        async def handle(batch: Any, context: Any) -> None:
            seen.extend(record.json() for record in batch)

        return app

    await publish(client, stream, list(range(20)))
    platform = await start_platform(app_with(first))
    await wait_until(lambda: len(first) == 20, "the first run")
    await platform.stop()
    assert await pending_count(client, stream, "graceful") == 0

    await start_platform(app_with(second))
    await publish(client, stream, [20])
    await wait_until(lambda: second, "the new record")

    assert second == [20]


def test_stream_options_are_validated_at_registration() -> None:
    """Bad stream options fail when the decorator runs, naming the option."""
    app = App()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_window": -1}, "batch_window"),
        ({"start": "middle"}, "start"),
        ({"retries": -1}, "retries"),
        ({"concurrency": 0}, "concurrency"),
        ({"dead_letter": ""}, "dead_letter"),
        ({"claim_idle": 0}, "claim_idle"),
        ({"per_record": "yes"}, "per_record"),
        ({"on_failure": "folder:x"}, "on_failure"),
        ({"url": "http://x"}, "url"),
    ]
    for options, named in cases:
        with pytest.raises(ValueError, match=named):
            app.redis_stream("s", **options)(lambda event, context: None)
    with pytest.raises(ValueError, match="stream name"):
        app.redis_stream([])
    with pytest.raises(ValueError, match="redis_url must start with redis://"):
        Settings(redis_url="garbage")


async def test_metrics_count_records_batches_and_dead_letters(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """/metrics shows records, batches, failures and dead-lettered records."""
    stream = unique("metrics")
    done = asyncio.Event()
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", retries=0, per_record=True
    )
    def counted(record: Any, context: Any) -> None:
        if record.json() == 1:
            done.set()
            raise ValueError("no")

    await publish(client, stream, [0, 1])
    platform = await start_platform(app)
    await asyncio.wait_for(done.wait(), WAIT_S)
    labels = '{function="counted",source="redis"}'
    dead_lettered = f"fnplane_stream_dead_lettered_total{labels} 1.0"
    await wait_until(
        lambda: dead_lettered.encode() in platform.invoker.metrics.render(),
        "the dead letter's count",
    )
    text = platform.invoker.metrics.render().decode()

    assert f"fnplane_stream_records_total{labels} 2.0" in text
    assert f"fnplane_stream_record_failures_total{labels} 1.0" in text
    assert f"fnplane_stream_dead_lettered_total{labels} 1.0" in text


async def test_a_long_batch_keeps_its_entries_from_other_consumers(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """A batch running well past claim_idle is not claimed by a second
    consumer of the group: every record is handled exactly once."""
    stream, seen = unique("long"), []
    release = asyncio.Event()

    def app_for(name: str) -> App:
        app = App()

        @app.redis_stream(
            stream, url=redis_url, group="long", start="earliest", claim_idle=0.6,
            name=name,
        )  # fmt: skip
        async def slow(batch: Any, context: Any) -> None:
            seen.extend(record.json() for record in batch)
            await release.wait()

        return app

    await publish(client, stream, list(range(10)))
    await start_platform(app_for("first"))
    await wait_until(lambda: len(seen) == 10, "the first batch")
    await start_platform(app_for("second"))
    await asyncio.sleep(2.0)  # more than three claim_idle periods
    release.set()
    await eventually(lambda: pending_count(client, stream, "long"), 0)

    assert sorted(seen) == list(range(10))


async def test_max_batch_bytes_cuts_batches(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """No batch holds more than max_batch_bytes of fields (unless one record
    alone is larger); nothing is dropped at the cut."""
    stream, batches = unique("bytes"), []
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", batch_size=100, max_batch_bytes=100,
    )  # fmt: skip
    async def sized(batch: Any, context: Any) -> None:
        batches.append([record.value for record in batch])

    await publish(client, stream, [b"x" * 40 for _ in range(10)])
    await start_platform(app)
    await wait_until(lambda: sum(map(len, batches)) == 10, "every record")

    assert max(map(len, batches)) == 2  # "value" + 40 bytes = 45 each


async def test_concurrency_runs_batches_at_once(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """concurrency=2: a second batch starts while the first still runs."""
    stream, running, most = unique("parallel"), [0], [0]
    both = asyncio.Event()
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", batch_size=5, concurrency=2,
    )  # fmt: skip
    async def parallel(batch: Any, context: Any) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        if running[0] == 2:
            both.set()
        await asyncio.wait_for(both.wait(), WAIT_S)
        running[0] -= 1

    await publish(client, stream, list(range(10)))
    await start_platform(app)
    await asyncio.wait_for(both.wait(), WAIT_S)

    assert most[0] == 2


async def test_a_key_that_is_not_a_stream_is_reported_and_retried(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """A name holding a plain string logs source.redis_refused; once the key
    is a stream the consumer goes on by itself."""
    name, seen = unique("wrongtype"), []
    await client.set(name, "not a stream")
    app = App()

    @app.redis_stream(name, url=redis_url, start="earliest")
    async def typed(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    with capture_logs() as logs:
        await start_platform(app)
        await wait_until(
            lambda: any(e["event"] == "source.redis_refused" for e in logs),
            "the refusal in the log",
        )
    await client.delete(name)
    await publish(client, name, [1])

    await wait_until(lambda: seen == [1], "the entry once the key is a stream")


async def test_entries_read_before_a_lost_connection_are_not_held_back(
    start_platform: Any, client: Any, redis_url: str
) -> None:
    """An entry read into a batch still filling when the connection dies is
    handed over after the reconnect, not after claim_idle."""
    stream, seen = unique("half"), []
    app = App()

    @app.redis_stream(
        stream, url=redis_url, start="earliest", batch_window=3.0, claim_idle=3600,
    )  # fmt: skip
    async def patient(batch: Any, context: Any) -> None:
        seen.extend(record.json() for record in batch)

    await start_platform(app)
    await asyncio.sleep(0.3)  # the group exists and the consumer is reading
    await publish(client, stream, [7])
    await eventually(lambda: pending_count(client, stream, "patient"), 1)
    assert seen == []
    await client.client_kill_filter(_type="normal", skipme=True)
    await wait_until(lambda: seen == [7], "the entry read before the kill")


isolated = App("redis-streams-isolated")
ISOLATED_STREAM = "fnplane-test-isolated"


@isolated.redis_stream(
    ISOLATED_STREAM, start="earliest", retries=0, dead_letter=ISOLATED_STREAM + "-dead",
    isolation="process",
)  # fmt: skip
def isolated_batch(batch: Any, context: Any) -> None:
    """Runs in a worker process: fails the "bad" record, naming its pid."""
    bad = [record for record in batch if record.value == b"bad"]
    if bad:
        raise BatchFailure(bad, f"failed in {os.getpid()}")


async def test_a_stream_function_runs_in_a_process_environment(
    start_platform: Any, client: Any, redis_url: str, settings: Settings
) -> None:
    """isolation="process": the batch crosses to a worker and its partial
    failure comes back; the good records are acknowledged."""
    await client.delete(ISOLATED_STREAM, ISOLATED_STREAM + "-dead")
    await publish(client, ISOLATED_STREAM, [b"good", b"bad", b"fine"])
    await start_platform(isolated, settings.replace(redis_url=redis_url))

    [(_, fields)] = await eventually(
        lambda: client.xrange(ISOLATED_STREAM + "-dead"), 1
    )
    await eventually(
        lambda: pending_count(client, ISOLATED_STREAM, "isolated_batch"), 0
    )

    assert fields[b"value"] == b"bad"
    worker_pid = int(fields[b"fnplane-error-message"].split()[-1])
    assert worker_pid != os.getpid()
