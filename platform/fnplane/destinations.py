"""Where an asynchronous event's outcome goes: another function, a folder,
a Kafka topic or a Redis stream.

A destination receives one JSON record per event in the shape Lambda sends
to its own destinations (``requestContext``, ``requestPayload``,
``responseContext``, ``responsePayload``), with fnplane's timestamps under
``fnplane``. Decorators take a ``Destination`` or a string:

- ``"function:NAME"`` — invoke function ``NAME`` asynchronously with the record;
- ``"folder:PATH"`` — write ``PATH/<time>-<request id>.json``;
- ``"kafka://HOST:PORT/TOPIC"`` — produce to ``TOPIC``, keyed by request id;
- ``"redis://HOST:PORT/DB?stream=NAME"`` — ``XADD NAME * record <json>``.

Broker clients are imported and connected on first use, so an app that
never sends to Kafka never imports aiokafka.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog

from fnplane.errors import FnplaneError, RegistrationError, describe_error

if TYPE_CHECKING:
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)

RECORD_VERSION = "1.0"
FUNCTION_PREFIX = "function:"
FOLDER_PREFIX = "folder:"
REDIS_RECORD_FIELD = "record"


class DestinationError(FnplaneError):
    """A destination could not take a record (broker down, folder unwritable)."""


class Destination:
    """Somewhere an async event's outcome record is sent."""

    kind = ""

    def describe(self) -> str:
        """The destination as the string form decorators accept."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class FunctionDestination(Destination):
    """Invoke another function asynchronously with the record as its event."""

    name: str
    kind = "function"

    def describe(self) -> str:
        """``function:NAME``."""
        return FUNCTION_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class FolderDestination(Destination):
    """Write each record as its own JSON file in ``path`` (created if missing)."""

    path: str
    kind = "folder"

    def describe(self) -> str:
        """``folder:PATH``."""
        return FOLDER_PREFIX + self.path


@dataclass(frozen=True, slots=True)
class KafkaDestination(Destination):
    """Produce each record to ``topic`` at ``bootstrap_servers``, key: request id."""

    topic: str
    bootstrap_servers: str
    kind = "kafka"

    def describe(self) -> str:
        """``kafka://HOST:PORT/TOPIC``."""
        return f"kafka://{self.bootstrap_servers}/{self.topic}"


@dataclass(frozen=True, slots=True)
class RedisStreamDestination(Destination):
    """Append each record to the Redis stream ``stream`` at ``url``."""

    stream: str
    url: str
    kind = "redis"

    def describe(self) -> str:
        """``redis://HOST:PORT/DB?stream=NAME``."""
        return f"{self.url}?stream={self.stream}"


def parse_destination(value: Any, option: str, name: str) -> Destination | None:
    """A ``Destination`` from an option value, or ``RegistrationError`` saying why."""
    if value is None or isinstance(value, Destination):
        return value
    if not isinstance(value, str):
        raise RegistrationError(
            f"function {name!r}: {option} must be a Destination or a string like "
            f"'function:NAME', 'folder:PATH', 'kafka://HOST:PORT/TOPIC' or "
            f"'redis://HOST:PORT/0?stream=NAME', got {value!r}"
        )
    if value.startswith(FUNCTION_PREFIX) and value[len(FUNCTION_PREFIX) :]:
        return FunctionDestination(value[len(FUNCTION_PREFIX) :])
    if value.startswith(FOLDER_PREFIX) and value[len(FOLDER_PREFIX) :]:
        return FolderDestination(value[len(FOLDER_PREFIX) :])
    parts = urlsplit(value)
    if parts.scheme == "kafka" and parts.netloc and parts.path.strip("/"):
        return KafkaDestination(parts.path.strip("/"), parts.netloc)
    if parts.scheme in ("redis", "rediss") and parts.netloc:
        stream = parse_qs(parts.query).get("stream", [""])[0]
        if stream:
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
            return RedisStreamDestination(stream, url)
    raise RegistrationError(
        f"function {name!r}: {option} {value!r} is not a destination; use "
        f"'function:NAME', 'folder:PATH', 'kafka://HOST:PORT/TOPIC' or "
        f"'redis://HOST:PORT/0?stream=NAME'"
    )


def iso_ms(epoch_ms: float) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as Lambda writes them."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class DestinationSender:
    """Sends records to destinations, holding one client per broker."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker
        self._producers: dict[str, Any] = {}
        self._redis: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def send(self, destination: Destination, record: dict[str, Any]) -> None:
        """Deliver ``record``; raise ``DestinationError`` if it could not be."""
        try:
            await self._send(destination, record)
        except DestinationError:
            raise
        except Exception as exc:
            raise DestinationError(
                f"could not send to destination {destination.describe()}: "
                f"{describe_error(exc)}"
            ) from exc

    async def _send(self, destination: Destination, record: dict[str, Any]) -> None:
        request_id = record["requestContext"]["requestId"]
        if isinstance(destination, FunctionDestination):
            # The record's request id is the source event's; the destination's
            # invocation gets its own, derived so a redelivery is deduplicated.
            await self._invoker.invoke_async(
                destination.name, record, event_id=f"{request_id}:{destination.name}"
            )
        elif isinstance(destination, FolderDestination):
            await asyncio.to_thread(write_record, Path(destination.path), record)
        elif isinstance(destination, KafkaDestination):
            producer = await self._producer(destination.bootstrap_servers)
            await producer.send_and_wait(
                destination.topic, dump(record), key=request_id.encode()
            )
        elif isinstance(destination, RedisStreamDestination):
            client = await self._redis_client(destination.url)
            await client.xadd(destination.stream, {REDIS_RECORD_FIELD: dump(record)})
        else:
            raise DestinationError(f"unknown destination {destination!r}")

    async def _producer(self, bootstrap: str) -> Any:
        async with self._lock:
            producer = self._producers.get(bootstrap)
            if producer is None:
                # Imported by name: loaded only when a Kafka destination is
                # used (aiokafka costs ~160 ms to import), and untyped.
                aiokafka = importlib.import_module("aiokafka")
                producer = aiokafka.AIOKafkaProducer(
                    bootstrap_servers=bootstrap, acks="all"
                )
                await producer.start()
                self._producers[bootstrap] = producer
            return producer

    async def _redis_client(self, url: str) -> Any:
        client = self._redis.get(url)
        if client is None:
            import redis.asyncio as redis

            client = self._redis[url] = redis.Redis.from_url(url)
        return client

    async def close(self) -> None:
        """Close every broker client opened so far."""
        for producer in self._producers.values():
            await producer.stop()
        for client in self._redis.values():
            await client.aclose()
        self._producers.clear()
        self._redis.clear()


def dump(record: dict[str, Any]) -> bytes:
    """A record as compact UTF-8 JSON.

    A surrogate (from a file name that is not UTF-8) is written as its JSON
    escape, so the record stays valid JSON.
    """
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` into ``folder`` atomically (a temp file, then a rename).

    A reader never sees half a record, and a crash leaves at worst a hidden
    ``.tmp`` file behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    request_id = record["requestContext"]["requestId"].replace("/", "_")
    final = folder / f"{stamp}-{request_id}.json"
    temporary = folder / f".{final.name}.tmp"
    with temporary.open("wb") as file:
        file.write(dump(record))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, final)
    return final


def check_destinations(invoker: Invoker) -> None:
    """Raise if a function destination names a function that is not registered."""
    functions = invoker.app.functions
    for function in functions.values():
        policy = function.async_policy
        for option, destination in (
            ("on_success", policy.on_success),
            ("on_failure", policy.on_failure),
        ):
            if isinstance(destination, FunctionDestination) and (
                destination.name not in functions
            ):
                raise FnplaneError(
                    f"function {function.name!r}: {option} names function "
                    f"{destination.name!r}, which is not registered (known: "
                    f"{', '.join(sorted(functions))})"
                )
