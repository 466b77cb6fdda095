"""Two ``fnplane run`` processes share a Kafka consumer group; one is killed with
``kill -9`` half-way and the survivor takes over its partitions from the
last commit."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.processes import kill_one_of_two_consumers

FUNCTIONS = textwrap.dedent(
    """
    import os
    import time

    from fnplane import App

    app = App()


    @app.kafka(os.environ["CRASH_TOPIC"], group="crash", start="earliest",
               batch_size=100, concurrency=2)
    def consume(batch, context):
        lines = "".join(record.value.decode() + "\\n" for record in batch)
        # O_APPEND: each batch's lines land whole, whichever process writes.
        fd = os.open(os.environ["CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        time.sleep(0.01)
    """
)
RECORDS = 20_000
PARTITIONS = 4
BATCH = 100


async def fill_topic(bootstrap: str, topic: str) -> None:
    """Create ``topic`` with several partitions and produce the numbers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for number in range(RECORDS):
            await producer.send(
                topic, str(number).encode(), partition=number % PARTITIONS
            )
        await producer.flush()
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, topic: str) -> int:
    """The sum of the group's committed offsets over the partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="crash")
    await consumer.start()
    try:
        offsets = [
            await consumer.committed(TopicPartition(topic, partition))
            for partition in range(PARTITIONS)
        ]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


def test_survivor_takes_over_the_killed_consumers_partitions(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """20,000 records on 4 partitions, two processes, one killed half-way:
    every record is handled at least once and the group commits to the end."""
    topic = f"crash-{time.monotonic_ns()}"
    asyncio.run(fill_topic(kafka_bootstrap, topic))
    functions = tmp_path / "crash_kafka.py"
    functions.write_text(FUNCTIONS)
    log = tmp_path / "handled.log"
    env = {
        "CRASH_TOPIC": topic,
        "CRASH_LOG": str(log),
        "FNPLANE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FNPLANE_KAFKA_SESSION_TIMEOUT": "2",
    }
    lines = kill_one_of_two_consumers(
        tmp_path, functions, env, log, RECORDS,
        lambda: asyncio.run(committed_total(kafka_bootstrap, topic)) == RECORDS,
    )  # fmt: skip

    # Only what the victim handled since its last commit comes again: its
    # batches in flight (two slots) and those whose commit was on its way.
    duplicates = len(lines) - RECORDS
    assert 0 <= duplicates <= 4 * BATCH
