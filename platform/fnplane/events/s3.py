"""The file event: an S3 event notification for a file dropped in a watched folder.

``S3Event`` is a ``Mapping`` holding exactly what S3 sends a Lambda function
(``event["Records"][0]["s3"]["object"]["key"]``), so an existing S3-triggered
handler runs unchanged: the bucket is the watched folder's name and the
object key the file's path relative to it, URL-encoded the way S3 encodes
keys in notifications (``unquote_plus`` gives it back). New code uses the
typed accessors instead: ``path``, ``key``, ``size``, ``read_bytes()``,
``open()``.

The ``eTag`` is a digest of the file's identity (inode, size, modification
time), not of its content: hashing every file would cost a full read before
the handler even starts. The ``sequencer`` is the modification time in
nanoseconds, in hex, so later versions of a key sort after earlier ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote_plus, unquote_plus

EVENT_NAME = "ObjectCreated:Put"
AWS_REGION = "local"
PRINCIPAL_ID = "fnplane"


class S3Event(Mapping[str, Any]):
    """A file event in the S3 notification shape, with the local path at hand."""

    def __init__(self, record: dict[str, Any], path: str | Path) -> None:
        self._event = record
        self.path = Path(path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> S3Event:
        """Rebuild the event from what the queue stored (see ``to_payload``)."""
        return cls(payload["event"], payload["path"])

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready form the queue stores: the notification and the path."""
        return {"event": self._event, "path": str(self.path)}

    @property
    def record(self) -> dict[str, Any]:
        """The first (and only) record of the notification."""
        return dict(self._event["Records"][0])

    @property
    def bucket(self) -> str:
        """The watched folder's name."""
        return str(self._event["Records"][0]["s3"]["bucket"]["name"])

    @property
    def key(self) -> str:
        """The file's path relative to the watched folder, decoded."""
        key = self._event["Records"][0]["s3"]["object"]["key"]
        return unquote_plus(key, errors="surrogateescape")

    @property
    def size(self) -> int:
        """The file's size in bytes when it was found complete."""
        return int(self._event["Records"][0]["s3"]["object"]["size"])

    @property
    def etag(self) -> str:
        """The identity digest of the file version (see the module docstring)."""
        return str(self._event["Records"][0]["s3"]["object"]["eTag"])

    def read_bytes(self) -> bytes:
        """The file's content."""
        return self.path.read_bytes()

    def open(self, mode: str = "rb") -> IO[Any]:
        """Open the file (binary by default); use it as a context manager."""
        return self.path.open(mode)

    def __getitem__(self, key: str) -> Any:
        return self._event[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._event)

    def __len__(self) -> int:
        return len(self._event)

    def __repr__(self) -> str:
        return f"<S3Event {self.bucket}/{self.key} size={self.size}>"


def file_etag(inode: int, size: int, mtime_ns: int) -> str:
    """A stable digest of one version of a file, shaped like an S3 ETag."""
    identity = f"{inode}:{size}:{mtime_ns}".encode()
    return hashlib.md5(identity, usedforsecurity=False).hexdigest()


def s3_notification(
    *,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    sequencer: str,
    event_time_ms: int,
    request_id: str,
    configuration_id: str,
) -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification with one record."""
    moment = datetime.fromtimestamp(event_time_ms / 1000, UTC)
    event_time = moment.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": AWS_REGION,
                "eventTime": event_time,
                "eventName": EVENT_NAME,
                "userIdentity": {"principalId": PRINCIPAL_ID},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": request_id,
                    "x-amz-id-2": request_id,
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": PRINCIPAL_ID},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/", errors="surrogateescape"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": sequencer,
                    },
                },
            }
        ]
    }
