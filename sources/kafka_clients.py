"""What the Kafka source needs from aiokafka besides its consumer loop: the lazy
import, topic creation, the dead-letter producer, the rebalance listener, the
lag gauge, and the errors it raises instead of aiokafka's.

aiokafka is imported on first use only (about 160 ms, and untyped), so an
app without Kafka triggers never pays for it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from fnplane.errors import FnplaneError, describe_error
from fnplane.events.stream import KafkaRecord
from fnplane.streams import DeadRecord, dead_letter_metadata

if TYPE_CHECKING:
    from fnplane.invoke import Invoker

CREATED_PARTITIONS = 1
CREATED_REPLICATION = 1
TOPIC_ALREADY_EXISTS = 36


class KafkaTopicMissingError(FnplaneError, LookupError):
    """A trigger's topic (or its dead-letter topic) does not exist and
    ``create_topics`` is False."""


class KafkaDeadLetterError(FnplaneError, ConnectionError):
    """The dead-letter topic did not take a record; the record stays
    uncommitted and is tried again."""


def aiokafka(module: str = "") -> Any:
    """aiokafka (or one of its modules), imported on first use."""
    return importlib.import_module("aiokafka" + (f".{module}" if module else ""))


async def close_quietly(client: Any, log: Any) -> None:
    """Stop an aiokafka client; a cluster gone meanwhile is only logged.

    aiokafka lets the cancellation of its own fetch task escape ``stop()``
    when the broker is away; only a cancellation of ours goes on.
    """
    try:
        await client.stop()
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("source.kafka_close_failed", error=repr(exc))
    except (aiokafka("errors").KafkaError, OSError) as exc:
        log.warning("source.kafka_close_failed", error=repr(exc))


class DeadLetterProducer:
    """Produces given-up records to a dead-letter topic, connected on first use."""

    def __init__(self, bootstrap: str, function: str, topic: str | None) -> None:
        self.bootstrap = bootstrap
        self.function = function
        self.topic = topic
        self._producer: Any = None

    async def send(self, dead: list[DeadRecord]) -> None:
        """Produce each record's key, value and headers, plus why (``fnplane-*``
        headers); ``KafkaDeadLetterError`` if the topic does not take them."""
        if self.topic is None:
            return
        errors = aiokafka("errors")
        try:
            producer = await self._started()
            sent = []
            for dead_record in dead:
                record = dead_record.record
                assert isinstance(record, KafkaRecord)
                metadata = dead_letter_metadata(dead_record, self.function)
                headers = record.raw_headers + [
                    (name, value.encode()) for name, value in metadata.items()
                ]
                sent.append(
                    await producer.send(
                        self.topic, value=record.value, key=record.key, headers=headers
                    )
                )
            await asyncio.gather(*sent)
        except (errors.KafkaError, OSError) as exc:
            raise KafkaDeadLetterError(
                f"dead-letter topic {self.topic!r} on {self.bootstrap} did not take "
                f"{len(dead)} record(s): {describe_error(exc)}"
            ) from exc

    async def _started(self) -> Any:
        if self._producer is None:
            # acks="all": a dead letter lets the record's offset be
            # committed, so it must be as durable as the cluster allows.
            producer = aiokafka().AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all"
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def close(self, log: Any) -> None:
        """Stop the producer, if it was started."""
        if self._producer is not None:
            await close_quietly(self._producer, log)
            self._producer = None


def rebalance_listener(
    on_revoked: Callable[[Any], Awaitable[None]], on_assigned: Callable[[Any], None]
) -> Any:
    """An aiokafka ``ConsumerRebalanceListener`` calling back the consumer
    (aiokafka checks the listener's class, so it subclasses theirs)."""

    async def on_partitions_revoked(self: Any, revoked: Any) -> None:
        await on_revoked(revoked)

    async def on_partitions_assigned(self: Any, assigned: Any) -> None:
        on_assigned(assigned)

    listener_type = type(
        "RebalanceListener",
        (aiokafka().ConsumerRebalanceListener,),
        {
            "on_partitions_revoked": on_partitions_revoked,
            "on_partitions_assigned": on_partitions_assigned,
        },
    )
    return listener_type()


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """Create ``names`` with one partition each (an existing one is fine)."""
    admin_module = aiokafka("admin")
    admin = admin_module.AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                admin_module.NewTopic(
                    name,
                    num_partitions=CREATED_PARTITIONS,
                    replication_factor=CREATED_REPLICATION,
                )
                for name in names
            ]
        )
    finally:
        await admin.close()
    for topic, code, message, *_ in response.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise FnplaneError(
                f"could not create Kafka topic {topic!r} on {bootstrap}: "
                f"error {code} {message or ''}".rstrip()
            )


def lag_gauge(invoker: Invoker) -> Gauge:
    """The ``fnplane_kafka_lag`` gauge of this invoker's registry."""
    return invoker.metrics.shared(
        "kafka_lag",
        lambda registry: Gauge(
            "fnplane_kafka_lag",
            "Records behind the partition's end after the last batch fetched.",
            ["function", "topic", "partition"],
            registry=registry,
        ),
    )
