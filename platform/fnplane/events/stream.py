"""Stream events: a batch of Kafka or Redis Streams records.

A batch is a ``Mapping`` in the shape Lambda's event source mappings send
(Kafka: the self-managed Kafka event, keys and values base64, records
grouped under ``"topic-partition"``), so an existing handler runs unchanged.
The mapping is built only when a key is read: iterating the batch gives the
typed records directly (``for record in batch``, ``len(batch)``), which is
what new code uses and what costs nothing per record.

Each record has an ``item_id``, the identifier a handler names in a partial
batch failure: ``"topic-partition@offset"`` for Kafka, ``"stream@id"`` for
Redis.
"""

from __future__ import annotations

import base64
import json
from collections.abc import (
    ItemsView,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from typing import Any

from fnplane.errors import RecordDecodeError

KAFKA_EVENT_SOURCE = "SelfManagedKafka"
REDIS_EVENT_SOURCE = "fnplane:redis"
# The field a Redis entry's value is read from when it has several fields.
REDIS_VALUE_FIELD = "value"


class StreamRecord:
    """One record of a batch: its value, key and headers, and where it came from."""

    # Records are built by the hundred per batch: everything but the
    # attempts count is derived on demand.
    __slots__ = ("previous_attempts",)

    previous_attempts: int

    @property
    def item_id(self) -> str:
        """The identifier a partial batch failure names the record by."""
        raise NotImplementedError

    @property
    def timestamp_ms(self) -> int:
        """When the record was written, in epoch milliseconds."""
        raise NotImplementedError

    @property
    def value(self) -> bytes | None:
        """The record's value, raw bytes."""
        raise NotImplementedError

    @property
    def key(self) -> bytes | None:
        """The record's key, raw bytes (None when it has none)."""
        raise NotImplementedError

    @property
    def headers(self) -> dict[str, bytes]:
        """The record's headers (Kafka) or its other fields (Redis)."""
        raise NotImplementedError

    def text(self) -> str:
        """The value as UTF-8 text; ``RecordDecodeError`` if it is not."""
        try:
            return (self.value or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordDecodeError(
                f"record {self.item_id}: value is not valid UTF-8 ({exc})",
                self.item_id,
            ) from None

    def json(self) -> Any:
        """The value parsed as JSON; ``RecordDecodeError`` if it is not JSON."""
        try:
            return json.loads(self.value or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordDecodeError(
                f"record {self.item_id}: value is not valid JSON ({exc})",
                self.item_id,
            ) from None

    def describe(self) -> dict[str, Any]:
        """The record in its batch event's shape (JSON-ready)."""
        raise NotImplementedError


class KafkaRecord(StreamRecord):
    """A Kafka record, wrapping what the consumer fetched."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record
        self.previous_attempts = 0

    @property
    def item_id(self) -> str:
        """``"topic-partition@offset"``."""
        record = self._record
        return f"{record.topic}-{record.partition}@{record.offset}"

    @property
    def timestamp_ms(self) -> int:
        """The record's Kafka timestamp."""
        return int(self._record.timestamp)

    @property
    def topic(self) -> str:
        """The topic the record was read from."""
        return str(self._record.topic)

    @property
    def partition(self) -> int:
        """Its partition."""
        return int(self._record.partition)

    @property
    def offset(self) -> int:
        """Its offset in the partition."""
        return int(self._record.offset)

    @property
    def value(self) -> bytes | None:
        """The record's value, raw bytes."""
        value: bytes | None = self._record.value
        return value

    @property
    def key(self) -> bytes | None:
        """The record's key, raw bytes (None when it has none)."""
        key: bytes | None = self._record.key
        return key

    @property
    def headers(self) -> dict[str, bytes]:
        """The record's headers; a repeated header keeps its last value."""
        return {name: value for name, value in self._record.headers or ()}

    @property
    def raw_headers(self) -> list[tuple[str, bytes]]:
        """The headers as sent, in order, repeats included."""
        return list(self._record.headers or ())

    def describe(self) -> dict[str, Any]:
        """The record as Lambda's Kafka event holds it."""
        record = self._record
        return {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "timestampType": timestamp_type(record.timestamp_type),
            "key": b64(record.key),
            "value": b64(record.value),
            "headers": [
                {name: list(value or b"")} for name, value in record.headers or ()
            ],
        }


class RedisRecord(StreamRecord):
    """A Redis stream entry: its stream, id and fields.

    ``fields`` is a mapping of raw names to raw values, or the flat
    ``[name, value, name, value...]`` list the server sends: the source
    passes the list as read, and the dict is built only when ``fields`` (or
    ``headers``, ``key``...) is first read.
    """

    # Records are built by the hundred per batch, and many handlers read only
    # the value: the field dict is built for those that ask for it.
    __slots__ = ("stream", "raw_id", "_flat_fields", "_fields")

    def __init__(
        self,
        stream: str,
        entry_id: bytes | str,
        fields: Mapping[bytes, bytes] | list[bytes],
        deliveries: int = 1,
    ) -> None:
        self.stream = stream
        self.raw_id = entry_id
        self._flat_fields: list[bytes]
        self._fields: dict[bytes, bytes] | None
        if isinstance(fields, list):
            self._flat_fields, self._fields = fields, None
        else:
            self._fields = dict(fields)
            self._flat_fields = [part for pair in fields.items() for part in pair]
        self.previous_attempts = deliveries - 1 if deliveries > 1 else 0

    @property
    def fields(self) -> dict[bytes, bytes]:
        """The entry's fields, raw names to raw values."""
        if self._fields is None:
            names_and_values = iter(self._flat_fields)
            self._fields = dict(zip(names_and_values, names_and_values, strict=True))
        return self._fields

    @property
    def size(self) -> int:
        """Bytes of field names and values together."""
        return sum(map(len, self._flat_fields))

    @property
    def id(self) -> str:
        """The entry's id, ``"<ms>-<seq>"``."""
        raw = self.raw_id
        return raw.decode() if isinstance(raw, bytes) else raw

    @property
    def item_id(self) -> str:
        """``"stream@id"``."""
        return f"{self.stream}@{self.id}"

    @property
    def timestamp_ms(self) -> int:
        """The time part of the entry's id."""
        return int(self.id.partition("-")[0])

    @property
    def value(self) -> bytes | None:
        """The ``value`` field, or the only field of a one-field entry."""
        flat_fields = self._flat_fields
        if len(flat_fields) == 2:
            # One field: the value whatever its name.
            return flat_fields[1]
        return self.fields.get(REDIS_VALUE_FIELD.encode())

    @property
    def key(self) -> bytes | None:
        """The ``key`` field, if the entry has one."""
        return self.fields.get(b"key")

    @property
    def headers(self) -> dict[str, bytes]:
        """Every field, names decoded."""
        return {
            name.decode("utf-8", "replace"): value
            for name, value in self.fields.items()
        }

    def json(self) -> Any:
        """The value parsed as JSON; an entry with no value field gives its
        fields as a dict of strings."""
        if self.value is None and self.fields:
            return {name: value.decode("utf-8", "replace")
                    for name, value in self.headers.items()}  # fmt: skip
        return super().json()

    def describe(self) -> dict[str, Any]:
        """The entry as a Redis batch event holds it (fields as text)."""
        return {
            "stream": self.stream,
            "id": self.id,
            "fields": {
                name: value.decode("utf-8", "replace")
                for name, value in self.headers.items()
            },
        }


class StreamBatch(Mapping[str, Any]):
    """A batch of records; iterating it gives the records, indexing it the event.

    ``batch["records"]`` and the other keys give the AWS-shaped event (built
    on first use); ``for record in batch`` and ``len(batch)`` are about the
    records. ``keys()``, ``items()`` and ``dict(batch)`` give the event.
    """

    def __init__(self, records: Sequence[StreamRecord], source: dict[str, Any]) -> None:
        self.records = records
        self._source = source
        self._event: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[StreamRecord]:  # type: ignore[override]
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> Any:
        return self.event[key]

    def keys(self) -> KeysView[str]:
        """The event's keys (not the records: iterate the batch for those)."""
        return self.event.keys()

    def items(self) -> ItemsView[str, Any]:
        """The event's items."""
        return self.event.items()

    def values(self) -> ValuesView[Any]:
        """The event's values."""
        return self.event.values()

    def __contains__(self, key: object) -> bool:
        return key in self.event

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.records)} records>"

    @property
    def event(self) -> dict[str, Any]:
        """The batch as the AWS-shaped dict, built once."""
        if self._event is None:
            self._event = self._build()
        return self._event

    def _build(self) -> dict[str, Any]:
        raise NotImplementedError

    def subset(self, records: Sequence[StreamRecord]) -> StreamBatch:
        """A batch of the same source holding only ``records``."""
        return type(self)(records, self._source)


class KafkaBatch(StreamBatch):
    """A batch from Kafka, in the shape of Lambda's self-managed Kafka event."""

    def _build(self) -> dict[str, Any]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            assert isinstance(record, KafkaRecord)
            where = f"{record.topic}-{record.partition}"
            grouped.setdefault(where, []).append(record.describe())
        return {
            "eventSource": KAFKA_EVENT_SOURCE,
            "bootstrapServers": self._source.get("bootstrap", ""),
            "records": grouped,
        }


class RedisBatch(StreamBatch):
    """A batch from Redis streams: ``{"eventSource", "group", "records": [...]}``."""

    def _build(self) -> dict[str, Any]:
        return {
            "eventSource": REDIS_EVENT_SOURCE,
            "group": self._source.get("group", ""),
            "records": [record.describe() for record in self.records],
        }


def b64(data: bytes | None) -> str | None:
    """Base64 text of ``data``, as Lambda encodes keys and values."""
    return None if data is None else base64.b64encode(data).decode("ascii")


def timestamp_type(kind: int) -> str:
    """Kafka's timestamp type number as Lambda names it."""
    return "LOG_APPEND_TIME" if kind == 1 else "CREATE_TIME"
