"""Two ``fnplane run`` processes share a Redis stream; one is killed with
``kill -9`` half-way and the survivor takes over its pending entries."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import redis

from tests.processes import kill_one_of_two_consumers

FUNCTIONS = textwrap.dedent(
    """
    import os
    import time

    from fnplane import App

    app = App()


    @app.redis_stream(
        os.environ["CRASH_STREAM"], group="crash", url=os.environ["CRASH_REDIS"],
        start="earliest", batch_size=100, claim_idle=1.0,
    )
    def consume(batch, context):
        lines = "".join(record.value.decode() + "\\n" for record in batch)
        with open(os.environ["CRASH_LOG"], "a", encoding="utf-8") as log:
            log.write(lines)
        time.sleep(0.02)
    """
)
RECORDS = 20_000
BATCH = 100


def test_survivor_claims_the_killed_consumers_entries(
    tmp_path: Path, redis_url: str
) -> None:
    """20,000 entries, two consumers, one killed half-way: every entry is
    handled, duplicates come only from the killed consumer's batch in flight,
    and nothing stays pending."""
    stream = f"crash-{time.monotonic_ns()}"
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for number in range(RECORDS):
        pipe.xadd(stream, {"value": str(number)})
    pipe.execute()
    functions = tmp_path / "crash_streams.py"
    functions.write_text(FUNCTIONS)
    log = tmp_path / "handled.log"
    env = {"CRASH_STREAM": stream, "CRASH_REDIS": redis_url, "CRASH_LOG": str(log)}
    try:
        lines = kill_one_of_two_consumers(
            tmp_path, functions, env, log, RECORDS,
            lambda: client.xpending(stream, "crash")["pending"] == 0,
        )  # fmt: skip
    finally:
        client.close()

    duplicates = len(lines) - RECORDS
    assert 0 <= duplicates <= BATCH
