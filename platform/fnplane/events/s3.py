"""The file event: an S3 event notification for a file dropped in a watched folder.

``S3Event`` is a ``Mapping`` holding exactly what S3 sends a Lambda function
(``event["Records"][0]["s3"]["object"]["key"]``), so an existing S3-triggered
handler runs unchanged: the bucket is the watched folder's name and the
object key the file's path relative to it, URL-encoded the way S3 encodes
keys in notifications (``unquote_plus`` gives it back). New code uses the
typed accessors instead: ``path``, ``key``, ``size``, ``read_bytes()``,
``open()``.

The event is made from a ``FileVersion`` (what a ``stat`` said about the
file) and builds the notification only when it is read as a mapping: a
handler that uses the accessors never pays for it, and the queue stores the
few fields of the version rather than the whole notification.

The ``eTag`` is a digest of the file's identity (inode, size, modification
time), not of its content: hashing every file would cost a full read before
the handler even starts. The ``sequencer`` is the modification time in
nanoseconds, in hex, so later versions of a key sort after earlier ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote_plus, unquote_plus

EVENT_NAME = "ObjectCreated:Put"
AWS_REGION = "local"
PRINCIPAL_ID = "fnplane"


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of a file, found complete: the facts its event reports."""

    path: str
    bucket: str
    key: str
    size: int
    inode: int
    mtime_ns: int


class S3Event(Mapping[str, Any]):
    """A file event in the S3 notification shape, with the local path at hand."""

    def __init__(
        self, version: FileVersion, request_id: str, configuration_id: str
    ) -> None:
        self.version = version
        self.request_id = request_id
        self.configuration_id = configuration_id
        self._event: dict[str, Any] | None = None
        self._path: Path | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> S3Event:
        """Rebuild the event from what the queue stored (see ``to_payload``).

        Events stored as a whole notification (by earlier fnplane versions)
        are rebuilt from it, so they are still delivered after an upgrade.
        """
        if "event" in payload:
            return cls._from_notification(payload["event"], payload["path"])
        version = FileVersion(
            payload["path"],
            payload["bucket"],
            payload["key"],
            payload["size"],
            payload["inode"],
            payload["mtimeNs"],
        )
        return cls(version, payload["requestId"], payload["configurationId"])

    @classmethod
    def _from_notification(cls, notification: dict[str, Any], path: str) -> S3Event:
        s3 = notification["Records"][0]["s3"]
        key = unquote_plus(s3["object"]["key"], errors="surrogateescape")
        version = FileVersion(
            path, s3["bucket"]["name"], key, s3["object"]["size"], 0, 0
        )
        request_id = notification["Records"][0]["responseElements"]["x-amz-request-id"]
        event = cls(version, request_id, s3["configurationId"])
        event._event = notification
        return event

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready form the queue stores: the file version and the ids."""
        version = self.version
        return {
            "path": version.path,
            "bucket": version.bucket,
            "key": version.key,
            "size": version.size,
            "inode": version.inode,
            "mtimeNs": version.mtime_ns,
            "requestId": self.request_id,
            "configurationId": self.configuration_id,
        }

    @property
    def notification(self) -> dict[str, Any]:
        """The whole S3 notification, built on first use."""
        if self._event is None:
            version = self.version
            self._event = s3_notification(
                bucket=version.bucket,
                key=version.key,
                size=version.size,
                etag=file_etag(version.inode, version.size, version.mtime_ns),
                sequencer=f"{version.mtime_ns:016X}",
                event_time_ms=version.mtime_ns // 1_000_000,
                request_id=self.request_id,
                configuration_id=self.configuration_id,
            )
        return self._event

    @property
    def path(self) -> Path:
        """The file's local path."""
        if self._path is None:
            self._path = Path(self.version.path)
        return self._path

    @property
    def record(self) -> dict[str, Any]:
        """The first (and only) record of the notification."""
        return dict(self.notification["Records"][0])

    @property
    def bucket(self) -> str:
        """The watched folder's name."""
        return self.version.bucket

    @property
    def key(self) -> str:
        """The file's path relative to the watched folder, decoded."""
        return self.version.key

    @property
    def size(self) -> int:
        """The file's size in bytes when it was found complete."""
        return self.version.size

    @property
    def etag(self) -> str:
        """The identity digest of the file version (see the module docstring)."""
        return str(self.notification["Records"][0]["s3"]["object"]["eTag"])

    def read_bytes(self) -> bytes:
        """The file's content."""
        with open(self.version.path, "rb") as file:
            return file.read()

    def open(self, mode: str = "rb") -> IO[Any]:
        """Open the file (binary by default); use it as a context manager."""
        return self.path.open(mode)

    def __getitem__(self, key: str) -> Any:
        return self.notification[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.notification)

    def __len__(self) -> int:
        return len(self.notification)

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
