"""The file event: its stored form, its notification, and older stored forms."""

from __future__ import annotations

import json

from fnplane.events.codec import S3_KIND, decode_event, encode_event, request_payload
from fnplane.events.s3 import FileVersion, S3Event, file_etag, s3_notification

VERSION = FileVersion(
    path="/data/drop zone/2024/relevé.csv",
    bucket="drop zone",
    key="2024/relevé.csv",
    size=12,
    inode=4242,
    mtime_ns=1_714_557_603_120_456_789,
)


def old_notification() -> dict[str, object]:
    """The notification as earlier versions built and stored it."""
    return s3_notification(
        bucket=VERSION.bucket,
        key=VERSION.key,
        size=VERSION.size,
        etag=file_etag(VERSION.inode, VERSION.size, VERSION.mtime_ns),
        sequencer=f"{VERSION.mtime_ns:016X}",
        event_time_ms=VERSION.mtime_ns // 1_000_000,
        request_id="req-1",
        configuration_id="load",
    )


def test_stored_form_is_the_version_and_decodes_to_the_same_event() -> None:
    """The queue stores the file version's fields, not the notification; the
    decoded event has the same accessors and the same notification."""
    kind, text = encode_event(S3Event(VERSION, "req-1", "load"))
    assert kind == S3_KIND
    assert "Records" not in json.loads(text)
    event = decode_event(kind, text)
    assert isinstance(event, S3Event)
    assert (event.key, event.bucket, event.size) == (VERSION.key, "drop zone", 12)
    assert str(event.path) == VERSION.path
    assert dict(event) == old_notification()
    assert event.etag == file_etag(VERSION.inode, VERSION.size, VERSION.mtime_ns)


def test_notification_is_built_only_when_read() -> None:
    """Accessors answer from the version; the mapping builds it once."""
    event = S3Event(VERSION, "req-1", "load")
    assert event.key == VERSION.key
    assert event._event is None
    record = event["Records"][0]
    assert record["s3"]["object"]["key"] == "2024/relev%C3%A9.csv"
    assert record["eventTime"] == "2024-05-01T10:00:03.120Z"
    assert event.notification is event.notification


def test_event_stored_by_an_earlier_version_still_decodes() -> None:
    """A payload holding the whole notification (the earlier stored form)
    decodes to an event with the same accessors and notification."""
    text = json.dumps({"event": old_notification(), "path": VERSION.path})
    event = decode_event(S3_KIND, text)
    assert (event.key, event.bucket, event.size) == (VERSION.key, "drop zone", 12)
    assert str(event.path) == VERSION.path
    assert dict(event) == old_notification()
    assert request_payload(S3_KIND, text) == old_notification()


def test_destination_record_carries_the_notification() -> None:
    """``requestPayload`` of a file event's destination record is the S3
    notification, as Lambda's is, whichever form was stored."""
    _, text = encode_event(S3Event(VERSION, "req-1", "load"))
    assert request_payload(S3_KIND, text) == old_notification()
