"""Stream batch events: Lambda's Kafka shape, the Redis shape, typed records."""

from __future__ import annotations

import base64
import pickle

import pytest
from aiokafka.structs import ConsumerRecord

from fnplane.events.stream import (
    KafkaBatch,
    KafkaRecord,
    RecordDecodeError,
    RedisBatch,
    RedisRecord,
)


def kafka_record(
    offset: int, value: bytes | None, key: bytes | None = None
) -> KafkaRecord:
    """A record as aiokafka hands it over."""
    return KafkaRecord(
        ConsumerRecord(
            topic="orders", partition=2, offset=offset, timestamp=1_700_000_000_000,
            timestamp_type=0, key=key, value=value, checksum=None,
            serialized_key_size=0, serialized_value_size=0,
            headers=[("trace", b"abc")],
        )
    )  # fmt: skip


def test_kafka_batch_reads_as_lambdas_self_managed_kafka_event() -> None:
    """Keys and values base64, records grouped under "topic-partition"."""
    batch = KafkaBatch([kafka_record(7, b'{"a": 1}', b"k")], {"bootstrap": "b:9092"})

    assert batch["eventSource"] == "SelfManagedKafka"
    assert batch["bootstrapServers"] == "b:9092"
    [record] = batch["records"]["orders-2"]
    assert record["offset"] == 7
    assert base64.b64decode(record["value"]) == b'{"a": 1}'
    assert base64.b64decode(record["key"]) == b"k"
    assert record["headers"] == [{"trace": list(b"abc")}]
    assert record["timestampType"] == "CREATE_TIME"
    assert dict(batch) == batch.event


def test_iterating_a_batch_gives_typed_records() -> None:
    """for record in batch, len(batch), record.json(), item_id."""
    batch = KafkaBatch([kafka_record(1, b"[1]"), kafka_record(2, b"2")], {})

    assert len(batch) == 2
    assert [record.json() for record in batch] == [[1], 2]
    assert [record.item_id for record in batch] == ["orders-2@1", "orders-2@2"]
    assert next(iter(batch)).headers == {"trace": b"abc"}


@pytest.mark.parametrize("value", [b"{bad", b"\xff", None])
def test_a_bad_value_raises_record_decode_error_naming_the_record(
    value: bytes | None,
) -> None:
    """json() on malformed JSON, invalid UTF-8 or no value is a record error."""
    record = kafka_record(9, value)

    with pytest.raises(RecordDecodeError, match="orders-2@9") as raised:
        record.json()
    assert raised.value.item_id == "orders-2@9"


def test_redis_record_value_is_the_value_field_or_the_only_field() -> None:
    """value: the "value" field, else a one-field entry's field; json() of an
    entry without one gives its fields."""
    with_value = RedisRecord("s", "5-0", {b"value": b"1", b"key": b"k"}, 1)
    single = RedisRecord("s", "6-0", {b"payload": b'{"x": 2}'}, 3)
    several = RedisRecord("s", "7-1", {b"a": b"1", b"b": b"2"}, 1)

    assert with_value.value == b"1" and with_value.key == b"k"
    assert single.json() == {"x": 2}
    assert single.previous_attempts == 2
    assert several.json() == {"a": "1", "b": "2"}
    assert several.timestamp_ms == 7
    assert several.item_id == "s@7-1"


@pytest.mark.parametrize(
    "fields",
    [
        {b"value": b'{"x": 1}', b"key": b"k"},
        {b"payload": b'{"x": 2}'},
        {b"a": b"1", b"b": b"\xff"},
    ],
)
def test_redis_record_from_the_server_field_list_reads_like_one_from_a_dict(
    fields: dict[bytes, bytes],
) -> None:
    """A record built from the flat [name, value...] list the server sends
    gives the same value, key, fields, headers, JSON, size and event shape as
    one built from the dict, and survives a pickle (process isolation)."""
    flat = [part for pair in fields.items() for part in pair]
    from_dict = RedisRecord("s", b"9-1", fields)
    from_wire = RedisRecord("s", b"9-1", flat)
    unpickled = pickle.loads(pickle.dumps(from_wire, pickle.HIGHEST_PROTOCOL))

    for record in (from_wire, unpickled):
        assert record.value == from_dict.value
        assert record.key == from_dict.key
        assert record.fields == fields
        assert record.headers == from_dict.headers
        assert record.json() == from_dict.json()
        assert record.size == from_dict.size == sum(map(len, flat))
        assert record.describe() == from_dict.describe()
        assert record.item_id == "s@9-1"


def test_redis_batch_shape() -> None:
    """{"eventSource", "group", "records": [{stream, id, fields}]}."""
    batch = RedisBatch([RedisRecord("s", "1-0", {b"value": b"v"}, 1)], {"group": "g"})

    assert batch["eventSource"] == "fnplane:redis"
    assert batch["group"] == "g"
    assert batch["records"] == [{"stream": "s", "id": "1-0", "fields": {"value": "v"}}]
    assert "records" in batch and list(batch.keys()) == [
        "eventSource",
        "group",
        "records",
    ]
