"""Two ``fnplane run`` processes share a Redis stream; one is killed with
``kill -9`` half-way and the survivor takes over its pending entries."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import redis

from tests.processes import FnplaneProcess, wait_until

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


def handled(log: Path) -> list[str]:
    """Every value the handlers recorded, repeats included."""
    if not log.exists():
        return []
    return log.read_text(encoding="utf-8").split()


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
    victim = FnplaneProcess(tmp_path, functions, env, name="victim")
    survivor = FnplaneProcess(tmp_path, functions, env, name="survivor")
    try:
        victim.start()
        survivor.start()
        wait_until(lambda: len(handled(log)) >= RECORDS // 2, "half of the records")
        victim.kill()
        assert len(set(handled(log))) < RECORDS, "the kill came too late to prove it"

        expected = {str(number) for number in range(RECORDS)}
        wait_until(lambda: set(handled(log)) >= expected, "every record handled")
        wait_until(
            lambda: client.xpending(stream, "crash")["pending"] == 0,
            "every entry acknowledged",
        )
    finally:
        victim.stop()
        assert survivor.stop() == 0
        client.close()

    duplicates = len(handled(log)) - RECORDS
    assert 0 <= duplicates <= BATCH
