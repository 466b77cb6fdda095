"""A TCP proxy in the test's event loop that can cut a broker off its clients.

``TcpProxy`` listens on a port of its own and forwards every connection to a
broker's port. ``cut()`` resets every proxied connection (RST, not a polite
FIN, as when a broker host dies or a network path drops) and closes the
listener, so new connections are refused until ``restore()`` listens again on
the same port. Unlike stopping the broker, the broker and its data live on.

Kafka clients connect wherever the broker's metadata points them, so every
client of a broker advertised on the proxy's port goes through the proxy.
With ``kafka=True`` the proxy reads the ``client_id`` in each connection's
first request header (every Kafka request carries one), and a client named
in ``cut(spare=...)`` keeps its connections: a test producer can go on
writing while the consumers are cut off.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable

CHUNK_BYTES = 65536
# size (int32), api_key (int16), api_version (int16), correlation_id (int32),
# then the client_id's length (int16): the request header of every version.
KAFKA_HEADER = struct.Struct(">ihhih")
# SO_LINGER on, with a timeout of 0: close() sends RST and drops unsent data.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``; ``kafka``
    names each connection by its Kafka ``client_id``."""

    def __init__(self, port: int, target_port: int, *, kafka: bool = False) -> None:
        self.port = port
        self.target_port = target_port
        self.kafka = kafka
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: dict[asyncio.StreamWriter, str | None] = {}

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self, spare: Iterable[str] = ()) -> None:
        """Refuse new connections and reset every open one, except those of
        the Kafka clients whose ``client_id`` is in ``spare`` (with ``kafka``)."""
        spared = set(spare)
        if self._server is not None:
            # close() shuts the listening socket at once. Not wait_closed():
            # since Python 3.12 it waits for the spared connections too.
            self._server.close()
            self._server = None
        for writer, client_id in list(self._writers.items()):
            if client_id not in spared:
                reset(writer)

    async def restore(self) -> None:
        """Accept connections again after a cut."""
        await self.start()

    async def stop(self) -> None:
        """Close the listener and every connection."""
        await self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._writers[client_writer] = None
        try:
            client_id, first = await self._first_request(client_reader)
            broker_reader, broker_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except (OSError, asyncio.IncompleteReadError):
            reset(client_writer)
            self._writers.pop(client_writer, None)
            return
        self._writers[client_writer] = self._writers[broker_writer] = client_id
        broker_writer.write(first)
        pipes = [
            asyncio.create_task(self._pipe(client_reader, broker_writer)),
            asyncio.create_task(self._pipe(broker_reader, client_writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            for writer in (client_writer, broker_writer):
                self._writers.pop(writer, None)
                writer.close()

    async def _first_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str | None, bytes]:
        """With ``kafka``, the client's first request header: its ``client_id``,
        and the bytes read, to be forwarded."""
        if not self.kafka:
            return None, b""
        header = await reader.readexactly(KAFKA_HEADER.size)
        length = KAFKA_HEADER.unpack(header)[-1]
        name = await reader.readexactly(max(length, 0))
        return name.decode(errors="replace"), header + name

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy bytes one way until either side closes; the other side is then
        reset, as a dead peer would leave it."""
        try:
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        reset(writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with RST, dropping whatever was not yet sent."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.is_closing():
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    writer.transport.abort()
