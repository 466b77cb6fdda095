"""The durable async queue: accept, retry, give up, deduplicate, resume."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from fnplane import App
from fnplane.asyncq import DurableAsyncQueue
from fnplane.config import Settings
from fnplane.errors import FnplaneError
from fnplane.events.s3 import FileVersion, S3Event
from fnplane.invoke import Invoker
from fnplane.policy import Backoff

FAST = Backoff(base=0.01, cap=0.02)


async def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it is true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def records(folder: Path) -> list[dict[str, Any]]:
    """Destination records written into ``folder``."""
    if not folder.is_dir():
        return []
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


async def started(app: App, settings: Settings) -> Invoker:
    """An invoker whose queue is running."""
    invoker = Invoker(app, settings)
    await invoker.async_queue.start()
    return invoker


async def test_event_is_stored_before_submit_returns(settings: Settings) -> None:
    """An accepted event is in the SQLite store before its handler finishes."""
    app = App()
    release = asyncio.Event()

    @app.function()
    async def slow(event: Any, context: Any) -> None:
        await release.wait()

    invoker = await started(app, settings)
    await invoker.invoke_async("slow", {"n": 1}, request_id="r-1")
    database = Path(settings.state_dir) / "asyncq.sqlite3"
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT request_id, payload FROM events").fetchall()
    assert rows == [("r-1", '{"n":1}')]

    release.set()
    await invoker.drain(5)
    await invoker.shutdown()


async def test_fails_twice_then_succeeds_in_three_attempts(
    settings: Settings, tmp_path: Path
) -> None:
    """Two failures are retried; the third attempt's success reaches on_success."""
    app = App()
    attempts: list[int] = []

    @app.function(backoff=FAST, on_success=f"folder:{tmp_path / 'ok'}")
    def flaky(event: Any, context: Any) -> str:
        attempts.append(context.attempt)
        if context.attempt < 3:
            raise RuntimeError("not yet")
        return "done"

    invoker = await started(app, settings)
    await invoker.invoke_async("flaky", {"x": 1})
    await wait_for(lambda: records(tmp_path / "ok"))
    [record] = records(tmp_path / "ok")
    assert attempts == [1, 2, 3]
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"] == "done"
    await invoker.shutdown()


async def test_always_failing_event_lands_in_failure_folder(
    settings: Settings, tmp_path: Path
) -> None:
    """After the last retry the record holds the payload, error and timestamps."""
    app = App()

    @app.function(retries=1, backoff=FAST, on_failure=f"folder:{tmp_path / 'dlq'}")
    def broken(event: Any, context: Any) -> None:
        raise ValueError(f"bad order {event['order']}")

    invoker = await started(app, settings)
    request_id = await invoker.invoke_async("broken", {"order": 7})
    await wait_for(lambda: records(tmp_path / "dlq"))
    [record] = records(tmp_path / "dlq")
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:broken:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
    }
    assert record["requestPayload"] == {"order": 7}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "bad order 7"
    assert record["responsePayload"]["stackTrace"]
    assert record["fnplane"]["acceptedAt"] <= record["fnplane"]["lastAttemptAt"]
    await invoker.shutdown()


async def test_event_older_than_max_age_is_not_attempted(
    settings: Settings, tmp_path: Path
) -> None:
    """An event that waited past max_event_age goes to on_failure untried."""
    app = App()
    release = asyncio.Event()
    ran: list[Any] = []

    @app.function(
        concurrency=1, max_event_age=0.2, on_failure=f"folder:{tmp_path / 'old'}"
    )
    async def single(event: Any, context: Any) -> None:
        ran.append(event)
        await release.wait()

    invoker = await started(app, settings)
    await invoker.invoke_async("single", "first")
    await invoker.invoke_async("single", "second")
    await wait_for(lambda: ran == ["first"])
    await asyncio.sleep(0.3)  # the second event ages while the slot is taken
    release.set()
    await wait_for(lambda: records(tmp_path / "old"))
    [record] = records(tmp_path / "old")
    assert ran == ["first"]
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == "second"
    await invoker.shutdown()


async def test_duplicate_event_id_is_accepted_once(settings: Settings) -> None:
    """The same event id within the window runs once, even after it finished."""
    app = App()
    seen: list[Any] = []

    @app.function()
    def once(event: Any, context: Any) -> None:
        seen.append(event)

    invoker = await started(app, settings)
    with capture_logs() as logs:
        await invoker.invoke_async("once", 1, event_id="order-1")
        await wait_for(lambda: seen == [1])
        await invoker.invoke_async("once", 2, event_id="order-1")
        await invoker.invoke_async("once", 3, event_id="order-2")
        await wait_for(lambda: len(seen) == 2)
    await invoker.drain(5)
    assert seen == [1, 3]
    assert any(log["event"] == "asyncq.duplicate" for log in logs)
    await invoker.shutdown()


async def test_throttled_events_wait_for_a_slot(settings: Settings) -> None:
    """With concurrency 1, queued events run one at a time and none is dropped."""
    app = App()
    running: list[int] = []
    peak: list[int] = [0]
    done: list[int] = []

    @app.function(concurrency=1)
    async def narrow(event: int, context: Any) -> None:
        running.append(event)
        peak[0] = max(peak[0], len(running))
        await asyncio.sleep(0.01)
        running.remove(event)
        done.append(event)

    invoker = await started(app, settings)
    for number in range(20):
        await invoker.invoke_async("narrow", number)
    await wait_for(lambda: len(done) == 20)
    assert sorted(done) == list(range(20))
    assert peak[0] == 1
    await invoker.shutdown()


async def test_suspending_handlers_run_side_by_side_up_to_the_concurrency(
    settings: Settings,
) -> None:
    """Events whose handlers suspend each get a worker of their own, up to
    the function's concurrency, and no more."""
    app = App()
    gate = asyncio.Event()
    running: list[int] = []
    done: list[int] = []

    @app.function(concurrency=4)
    async def wide(event: int, context: Any) -> None:
        running.append(event)
        await gate.wait()
        running.remove(event)
        done.append(event)

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    await queue.submit_many("wide", [(n, f"r-{n}", None) for n in range(10)])
    await wait_for(lambda: len(running) == 4)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(running) == 4

    gate.set()
    await wait_for(lambda: len(done) == 10)
    assert sorted(done) == list(range(10))
    await invoker.shutdown()


async def test_a_timeout_ends_one_invocation_and_delivery_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    """An invocation past its timeout fails alone: the events delivered
    after it, one at a time, all succeed."""
    app = App()
    handled: list[int] = []

    @app.function(
        concurrency=1, timeout=0.1, retries=0, on_failure=f"folder:{tmp_path}"
    )
    async def stuck_once(event: int, context: Any) -> None:
        if event == 0:
            await asyncio.sleep(60)
        handled.append(event)

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    await queue.submit_many("stuck_once", [(n, f"r-{n}", None) for n in range(5)])
    await wait_for(lambda: len(handled) == 4 and records(tmp_path))

    assert handled == [1, 2, 3, 4]
    (failure,) = records(tmp_path)
    assert failure["requestPayload"] == 0
    assert failure["responsePayload"]["errorType"] == "Sandbox.Timedout"
    await invoker.shutdown()


async def test_stored_events_are_delivered_after_restart(settings: Settings) -> None:
    """Events accepted by a queue that stopped mid-way run on the next start."""
    first_app, second_app = App(), App()
    stuck = asyncio.Event()
    delivered: list[int] = []

    @first_app.function(name="work")
    async def hangs(event: int, context: Any) -> None:
        await stuck.wait()

    @second_app.function(name="work")
    async def records_it(event: int, context: Any) -> None:
        delivered.append(event)

    first = await started(first_app, settings)
    for number in range(5):
        await first.invoke_async("work", number)
    await first.shutdown()  # stops mid-way: the claims are left behind

    second = await started(second_app, settings)
    await wait_for(lambda: sorted(delivered) == list(range(5)))
    await second.shutdown()


async def test_function_destination_receives_the_record(settings: Settings) -> None:
    """on_failure='function:NAME' invokes that function with the record."""
    app = App()
    received: list[dict[str, Any]] = []

    @app.function(retries=0, on_failure="function:sink")
    def fails(event: Any, context: Any) -> None:
        raise RuntimeError("boom")

    @app.function()
    def sink(event: dict[str, Any], context: Any) -> None:
        received.append(event)

    invoker = await started(app, settings)
    await invoker.invoke_async("fails", {"id": 1})
    await wait_for(lambda: received)
    assert received[0]["requestPayload"] == {"id": 1}
    assert received[0]["responsePayload"]["errorMessage"] == "boom"
    await invoker.shutdown()


async def test_unknown_function_destination_fails_at_start(settings: Settings) -> None:
    """A destination naming an unregistered function stops the start, naming it."""
    app = App()

    @app.function(on_failure="function:missing")
    def fails(event: Any, context: Any) -> None:
        raise RuntimeError

    invoker = Invoker(app, settings)
    with pytest.raises(FnplaneError, match="'missing', which is not registered"):
        await invoker.async_queue.start()


async def test_kafka_destination(settings: Settings, kafka_bootstrap: str) -> None:
    """on_failure='kafka://.../TOPIC' produces the record, keyed by request id."""
    from aiokafka import AIOKafkaConsumer

    topic = f"failures-{uuid.uuid4().hex[:8]}"
    app = App()

    @app.function(retries=0, on_failure=f"kafka://{kafka_bootstrap}/{topic}")
    def fails(event: Any, context: Any) -> None:
        raise RuntimeError("to kafka")

    invoker = await started(app, settings)
    request_id = await invoker.invoke_async("fails", {"k": 1})
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    record = json.loads(message.value)
    assert message.key == request_id.encode()
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"] == {"k": 1}
    await invoker.shutdown()


async def test_redis_stream_destination(settings: Settings, redis_url: str) -> None:
    """on_success='redis://...?stream=NAME' appends the record to the stream."""
    import redis.asyncio as redis

    stream = f"outcomes-{uuid.uuid4().hex[:8]}"
    app = App()

    @app.function(on_success=f"{redis_url}?stream={stream}")
    def works(event: Any, context: Any) -> dict[str, int]:
        return {"total": event["a"] + 1}

    invoker = await started(app, settings)
    await invoker.invoke_async("works", {"a": 41})
    client = redis.Redis.from_url(redis_url)
    try:
        entries: list[Any] = []
        deadline = time.monotonic() + 10
        while not entries and time.monotonic() < deadline:
            entries = await client.xrange(stream)
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    record = json.loads(entries[0][1][b"record"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == {"total": 42}
    await invoker.shutdown()


async def test_redis_backed_queue_retries_and_resumes(
    tmp_path: Path, redis_url: str
) -> None:
    """The Redis store delivers, retries, and a second node resumes the events
    of one that stopped without finishing them."""
    queue_url = f"{redis_url}?prefix=test-{uuid.uuid4().hex[:8]}"
    settings = Settings(state_dir=str(tmp_path), async_queue=queue_url)
    first_app, second_app = App(), App()
    stuck = asyncio.Event()
    attempts: list[int] = []

    @first_app.function(name="job")
    async def hangs(event: int, context: Any) -> None:
        await stuck.wait()

    @second_app.function(name="job", backoff=FAST)
    async def flaky(event: int, context: Any) -> None:
        attempts.append(event)
        if context.attempt == 1:
            raise RuntimeError("once")

    first = await started(first_app, settings)
    for number in range(3):
        await first.invoke_async("job", number)
    await first.shutdown()

    second = Invoker(second_app, settings)
    queue = second.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    queue.store.owner_timeout_s = 0.0  # type: ignore[attr-defined]
    await queue.start()
    await wait_for(lambda: len(attempts) == 6)
    assert sorted(attempts) == [0, 0, 1, 1, 2, 2]
    await second.shutdown()


async def test_http_event_invocation_is_accepted_then_run(
    start_platform: Any,
) -> None:
    """X-Fnplane-Invocation-Type: Event answers 202, and the handler gets the
    HttpRequest rebuilt from the stored payload."""
    app = App()
    got: list[Any] = []

    @app.http("POST", "/orders/{order_id}")
    def order(event: Any, context: Any) -> None:
        got.append((event.path_params["order_id"], event.json(), event["rawPath"]))

    platform = await start_platform(app)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{platform.port}/orders/9",
            json={"qty": 2},
            headers={"X-Fnplane-Invocation-Type": "Event"},
        ) as response:
            assert response.status == 202
    await wait_for(lambda: got)
    assert got == [("9", {"qty": 2}, "/orders/9")]


async def test_handler_invokes_another_function(settings: Settings) -> None:
    """ctx.invoke returns the other function's result; ctx.invoke_async queues."""
    app = App()
    notified: list[Any] = []

    @app.function()
    async def double(event: int, context: Any) -> int:
        return event * 2

    @app.function()
    async def notify(event: Any, context: Any) -> None:
        notified.append(event)

    @app.function()
    async def main(event: int, context: Any) -> int:
        value: int = await context.invoke("double", event)
        await context.invoke_async("notify", {"value": value})
        return value

    invoker = await started(app, settings)
    result = await invoker.invoke("main", 21)
    assert result.value == 42
    await wait_for(lambda: notified == [{"value": 42}])
    await invoker.shutdown()


async def test_queue_metrics_are_exposed(settings: Settings) -> None:
    """Received, queued, age, retries, duplicates and dropped events are in
    /metrics."""
    app = App()

    @app.function(retries=1, backoff=FAST)
    def fails(event: Any, context: Any) -> None:
        raise RuntimeError

    invoker = await started(app, settings)
    text = ""

    def finished() -> bool:
        nonlocal text
        text = invoker.metrics.render().decode()
        return 'fnplane_async_events_queued{function="fails"} 0.0' in text

    with capture_logs() as logs:
        await invoker.invoke_async("fails", 1, event_id="once")
        await invoker.invoke_async("fails", 1, event_id="once")
        await wait_for(finished)
    # Nothing keeps the failed event: the log says so.
    assert any(log["event"] == "asyncq.event_discarded" for log in logs)
    assert 'fnplane_async_events_received_total{function="fails"} 1.0' in text
    assert 'fnplane_async_retries_total{function="fails"} 1.0' in text
    assert 'dropped_total{condition="RetriesExhausted",function="fails"} 1.0' in text
    assert 'fnplane_async_duplicates_total{function="fails"} 1.0' in text
    # Two attempts, each observed at its start.
    assert 'fnplane_async_event_age_seconds_count{function="fails"} 2.0' in text
    assert 'event_age_seconds_bucket{function="fails",le="+Inf"} 2.0' in text
    await invoker.shutdown()


async def test_submit_many_stores_a_burst_in_one_write(settings: Settings) -> None:
    """A burst larger than the lane's room is stored before submit_many
    returns; those beyond the room wait in the store; duplicates (in the
    burst or of stored events) are refused; every new event runs once."""
    app = App()
    release = asyncio.Event()
    seen: list[int] = []

    @app.function(concurrency=4)
    async def burst(event: int, context: Any) -> None:
        await release.wait()
        seen.append(event)

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    await queue.submit("burst", -1, "r-first", "e-first")
    submissions = [(n, f"r-{n}", f"e-{n}") for n in range(300)]
    submissions += [(1000, "r-again", "e-7"), (1001, "r-old", "e-first")]
    accepted = await queue.submit_many("burst", submissions)
    assert accepted == [True] * 300 + [False, False]

    database = Path(settings.state_dir) / "asyncq.sqlite3"
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT count(*) FROM events").fetchone()
        (unclaimed,) = db.execute(
            "SELECT count(*) FROM events WHERE owner IS NULL"
        ).fetchone()
    assert stored == 301
    assert unclaimed > 0  # beyond the lane's room: left in the store

    release.set()
    await wait_for(lambda: len(seen) == 301)
    assert sorted(seen) == [-1, *range(300)]
    await invoker.shutdown()


async def test_finished_events_are_deleted_in_batches_before_shutdown(
    settings: Settings,
) -> None:
    """Deletes of finished events go to the store in batches behind the
    deliveries; shutting down as the last handler returns still writes them
    all, and the queued gauge counts only what was deleted."""
    app = App()
    seen: list[int] = []
    all_seen = asyncio.Event()

    @app.function()
    async def quick(event: int, context: Any) -> None:
        seen.append(event)
        if len(seen) == 1000:
            all_seen.set()

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    await queue.submit_many("quick", [(n, f"r-{n}", None) for n in range(1000)])
    await asyncio.wait_for(all_seen.wait(), 10)
    await invoker.shutdown()

    database = Path(settings.state_dir) / "asyncq.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
    queued = invoker.metrics.registry.get_sample_value(
        "fnplane_async_events_queued", {"function": "quick"}
    )
    assert queued == 0


async def test_first_attempt_of_a_file_event_skips_decoding_retries_decode(
    settings: Settings, tmp_path: Path
) -> None:
    """An S3Event's first attempt receives the event as submitted (no hold
    remains on it); its retry receives one decoded from the store, equal to
    it."""
    app = App()
    received: list[S3Event] = []

    @app.function(retries=1, backoff=FAST)
    async def load(event: S3Event, context: Any) -> None:
        received.append(event)
        if len(received) == 1:
            raise RuntimeError("first attempt fails")

    invoker = await started(app, settings)
    version = FileVersion(str(tmp_path / "a.csv"), "inbox", "a.csv", 3, 7, 11)
    submitted = S3Event(version, "r-file", "load")
    await invoker.async_queue.submit("load", submitted, "r-file", "e-file")
    await wait_for(lambda: len(received) == 2)

    assert received[0] is submitted
    assert received[1] is not submitted
    assert received[1].version == version
    assert dict(received[1]) == dict(submitted)
    await invoker.shutdown()


async def test_an_event_changed_after_submit_runs_as_submitted(
    settings: Settings,
) -> None:
    """A dict event changed by its submitter after submit returned reaches
    the handler as it was when stored."""
    app = App()
    release = asyncio.Event()
    received: list[Any] = []

    @app.function()
    async def record(event: Any, context: Any) -> None:
        await release.wait()
        received.append(event)

    invoker = await started(app, settings)
    event = {"n": 1}
    await invoker.invoke_async("record", event)
    event["n"] = 2
    release.set()
    await wait_for(lambda: received)

    assert received == [{"n": 1}]
    await invoker.shutdown()


async def test_submit_many_stores_nothing_if_one_event_is_not_json(
    settings: Settings,
) -> None:
    """One event that cannot be stored fails the whole call before any write."""
    app = App()

    @app.function()
    def sink(event: Any, context: Any) -> None:
        return None

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await queue.submit_many("sink", [(1, "r-1", None), ({1, 2}, "r-2", None)])
    database = Path(settings.state_dir) / "asyncq.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
    await invoker.shutdown()


async def test_redis_backed_queue_accepts_a_burst_with_submit_many(
    tmp_path: Path, redis_url: str
) -> None:
    """The Redis store takes a burst in one pipeline: duplicates refused,
    events beyond the lane's room left due, every new event delivered once."""
    queue_url = f"{redis_url}?prefix=test-{uuid.uuid4().hex[:8]}"
    settings = Settings(state_dir=str(tmp_path), async_queue=queue_url)
    app = App()
    seen: list[int] = []

    @app.function(concurrency=2)
    async def burst(event: int, context: Any) -> None:
        seen.append(event)

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    submissions = [(n, f"r-{n}", f"e-{n}") for n in range(50)]
    accepted = await queue.submit_many("burst", [*submissions, (99, "r-x", "e-3")])
    assert accepted == [True] * 50 + [False]
    await wait_for(lambda: len(seen) == 50)
    assert sorted(seen) == list(range(50))
    await invoker.shutdown()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_backed_events_are_stored_only_to_wait_for_a_retry(
    tmp_path: Path, redis_url: str, backend: str
) -> None:
    """submit_backed runs events with no store write; one that fails is
    stored for its retry; once draining, nothing is taken (the source keeps
    its events)."""
    queue_url = f"{redis_url}?prefix=test-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        state_dir=str(tmp_path),
        async_queue=queue_url if backend == "redis" else "sqlite",
    )
    app = App()
    release = asyncio.Event()
    attempts: list[tuple[int, int]] = []

    @app.function(backoff=FAST)
    async def backed(event: int, context: Any) -> None:
        attempts.append((event, context.attempt))
        if event == 1 and context.attempt == 1:
            raise RuntimeError("once")
        await release.wait()

    invoker = await started(app, settings)
    queue = invoker.async_queue
    assert isinstance(queue, DurableAsyncQueue)
    assert await queue.wait_for_room("backed") == 2 * 256
    submissions = [(0, "r-0", "e-0"), (1, "r-1", "e-1")]
    assert await queue.submit_backed("backed", "json", submissions)
    await wait_for(lambda: (1, 2) in attempts)
    # Event 0 is running too, and was never stored.
    assert await queue.stored_ids(["e-0", "e-1"]) == {"e-1"}

    release.set()
    await wait_for_store_empty(queue, ["e-0", "e-1"])
    assert sorted(attempts) == [(0, 1), (1, 1), (1, 2)]

    await queue.drain()
    assert await queue.wait_for_room("backed") == 0
    assert not await queue.submit_backed("backed", "json", [(2, "r-2", "e-2")])
    assert await queue.stored_ids(["e-2"]) == set()
    await invoker.shutdown()


async def wait_for_store_empty(queue: DurableAsyncQueue, event_ids: list[str]) -> None:
    """Wait until none of ``event_ids`` is stored."""
    deadline = time.monotonic() + 10.0
    while await queue.stored_ids(event_ids):
        if time.monotonic() > deadline:
            raise AssertionError(f"{event_ids} still stored")
        await asyncio.sleep(0.01)
