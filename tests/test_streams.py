"""BatchRunner: what happens to a batch's records, with the real invoker and
an in-memory dead letter (the point here is the handler's outcome)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fnplane import App
from fnplane.events.stream import RedisBatch, RedisRecord
from fnplane.invoke import Invoker
from fnplane.stream_trigger import StreamOptions
from fnplane.streams import (
    BatchReport,
    BatchRunner,
    DeadRecord,
    stream_handler,
    stream_metrics,
)


def batch_of(values: list[str], age_s: float = 0.0) -> RedisBatch:
    """Redis records with the given values, stamped ``age_s`` ago."""
    stamp = int((time.time() - age_s) * 1000)
    records = [
        RedisRecord("s", f"{stamp}-{n}", {b"value": value.encode()}, 1)
        for n, value in enumerate(values)
    ]
    return RedisBatch(records, {})


def runner_for(app: App, dead: list[DeadRecord], **options: Any) -> BatchRunner:
    """A runner for the app's only function, dead letters into ``dead``."""

    async def sink(records: list[DeadRecord]) -> None:
        dead.extend(records)

    invoker = Invoker(app)
    name = next(iter(app.functions))
    built = StreamOptions.build("test", backoff=(0.0, 0.0), **options)
    return BatchRunner(invoker, name, "test", built, sink, stream_metrics(invoker))


async def test_unknown_item_identifier_fails_the_whole_batch() -> None:
    """As Lambda does, an identifier not in the batch fails every record."""
    app, dead = App(), []
    calls: list[int] = []

    @app.redis_stream("s")
    async def wrong(batch: Any, context: Any) -> Any:
        calls.append(len(batch))
        return {"batchItemFailures": [{"itemIdentifier": "nope"}]}

    done = await runner_for(app, dead, retries=1).run(batch_of(["a", "b"]))

    assert calls == [2, 2]
    assert len(done) == 2 and len(dead) == 2
    assert dead[0].failure.error_type == "Runtime.InvalidBatchItemFailure"


async def test_records_older_than_max_record_age_skip_the_handler() -> None:
    """Expired records go to the dead letter without an invocation."""
    app, dead, seen = App(), [], []

    @app.redis_stream("s", per_record=True)
    def fresh(record: Any, context: Any) -> None:
        seen.append(record.value)

    runner = runner_for(app, dead, max_record_age=60)
    done = await runner.run(batch_of(["old"], age_s=120))
    done += await runner.run(batch_of(["new"]))

    assert seen == [b"new"]
    assert [d.condition for d in dead] == ["RecordAgeExceeded"]
    assert len(done) == 2


async def test_a_whole_batch_failure_without_bisect_fails_every_record() -> None:
    """An exception fails all records; each is retried, then dead-lettered."""
    app, dead = App(), []
    attempts: list[int] = []

    @app.redis_stream("s")
    def broken(batch: Any, context: Any) -> None:
        attempts.append(context.attempt)
        raise KeyError("missing")

    await runner_for(app, dead, retries=2).run(batch_of(["a", "b", "c"]))

    assert attempts == [1, 2, 3]
    assert [d.attempts for d in dead] == [3, 3, 3]
    assert dead[0].failure.error_type == "KeyError"


async def test_stopping_abandons_records_waiting_for_a_retry() -> None:
    """At shutdown a record between attempts is not done: it stays unacked."""
    app, dead = App(), []

    @app.redis_stream("s")
    async def failing(batch: Any, context: Any) -> None:
        raise RuntimeError("down")

    runner = runner_for(app, dead, retries=5)
    runner.stopping.set()
    done = await runner.run(batch_of(["a"]))

    assert done == [] and dead == []


async def test_a_stream_handler_invoked_directly_gets_the_event_as_is() -> None:
    """fnplane invoke with a plain payload bypasses the batch wrapper."""
    wrapped = stream_handler(lambda event, context: {"got": event}, per_record=True)

    assert wrapped({"x": 1}, None) == {"got": {"x": 1}}
    report = stream_handler(lambda event, context: None, per_record=False)(
        batch_of(["a"]), None
    )
    assert report == BatchReport()


def test_per_record_must_agree_across_a_functions_stream_triggers() -> None:
    """Two stream triggers on one handler with different per_record refuse."""
    app = App()

    def handler(event: Any, context: Any) -> None:
        return None

    app.redis_stream("a")(handler)
    with pytest.raises(ValueError, match="per_record"):
        app.redis_stream("b", per_record=True)(handler)
