"""Where accepted asynchronous events live until they are done: the event store.

``EventStore`` is the small interface the async queue needs; ``SqliteEventStore``
is the embedded default (one file under the state folder) and
``fnplane.eventstore_redis.RedisEventStore`` the shared one for several nodes.

An event is *pending* (due at ``due_at_ms``, owned by nobody) or *claimed* by
one owner (a running queue) until it is finished, retried (pending again,
later) or released. An owner that dies leaves its claims behind; they become
pending again when another owner takes over: for SQLite the owner that holds
the state folder's lock, for Redis any node that sees the dead owner's
heartbeat expire. That is what makes delivery at-least-once across ``kill -9``.

The SQLite store runs every statement on one thread of its own so the event
loop never waits on the disk, and commits concurrent writes together (group
commit): 500 accepts arriving at once cost one transaction, not 500. The
database is in WAL mode with ``synchronous=NORMAL``: a commit survives the
process being killed; after a power cut the last commits may be lost.
"""

from __future__ import annotations

import asyncio
import fcntl
import operator
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Protocol

import structlog

from fnplane.errors import FnplaneError

logger = structlog.get_logger(__name__)

DATABASE_NAME = "asyncq.sqlite3"
LOCK_NAME = "asyncq.lock"
FOREVER_MS = 2**62
SEEN_PURGE_INTERVAL_S = 60.0
BUSY_TIMEOUT_S = 30.0


class StoreError(FnplaneError):
    """The event store could not be opened or written."""


@dataclass(slots=True)
class QueuedEvent:
    """One accepted asynchronous event and how far its delivery got."""

    event_id: str
    function: str
    request_id: str
    kind: str
    payload: str
    accepted_at_ms: int
    due_at_ms: int
    attempts: int = 0
    first_attempt_at_ms: int | None = None
    last_attempt_at_ms: int | None = None
    outcome: str | None = None
    # What the handler receives on the first attempt, when the queue has it
    # at hand (see ``codec.reusable_event``); never stored.
    handler_event: Any = field(default=None, repr=False, compare=False)
    # False for an event its source keeps durable itself (a file in its
    # folder), until the queue has to store it (see ``submit_backed``).
    stored: bool = field(default=True, repr=False, compare=False)

    def to_row(self) -> tuple[Any, ...]:
        """The values in column order."""
        row: tuple[Any, ...] = _row_of(self)
        return row


COLUMNS = tuple(
    column.name
    for column in fields(QueuedEvent)
    if column.name not in ("handler_event", "stored")
)
# Reads the columns in C: a quarter of a generator's time, on every write.
_row_of = operator.attrgetter(*COLUMNS)
# One event to store: the event, whether to claim it, how long to remember it.
Addition = tuple[QueuedEvent, bool, int | None]


def now_ms() -> int:
    """Wall-clock time in milliseconds (event ages survive a restart)."""
    return int(time.time() * 1000)


def new_owner_id() -> str:
    """An id for one running queue: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EventStore(Protocol):
    """Durable storage of asynchronous events, shared by every queue using it."""

    owner: str

    async def open(self) -> None:
        """Connect, create what is missing, and take over dead owners' claims."""

    async def close(self) -> None:
        """Release resources; claims of this owner are left for takeover."""

    async def add(
        self, event: QueuedEvent, *, claim: bool, remember_until_ms: int | None
    ) -> bool:
        """Persist ``event``; False if its id is pending or remembered already.

        ``claim`` makes this owner its owner at once (it will run it now);
        ``remember_until_ms`` keeps its id as seen until then, so the same id
        is refused after the event is finished (``None``: only while pending).
        """

    async def add_many(self, additions: list[Addition]) -> list[bool]:
        """``add`` for each ``(event, claim, remember_until_ms)``, all in one
        write; the results in order."""

    async def claim(self, function: str, now_ms: int, limit: int) -> list[QueuedEvent]:
        """Claim up to ``limit`` of ``function``'s events due by ``now_ms``."""

    async def retry(self, event: QueuedEvent) -> None:
        """Store the event's progress and make it pending at ``due_at_ms``."""

    async def finish_many(self, event_ids: list[str]) -> None:
        """Forget finished events (succeeded or sent to a destination), in
        one write."""

    async def release(self, events: list[QueuedEvent]) -> None:
        """Give claimed events that were not started back to the pending set."""

    async def stored_ids(self, event_ids: list[str]) -> set[str]:
        """Those of ``event_ids`` whose events are stored, pending or claimed."""

    async def pending_counts(self) -> dict[str, int]:
        """Events not finished, by function (pending and claimed)."""

    async def heartbeat(self) -> None:
        """Periodic upkeep: liveness, takeover of dead owners, expiring ids."""


class WriteBatcher:
    """Group commit: writes requested while one batch is being applied wait and
    go together in the next, so concurrent callers share one round trip."""

    def __init__(self, apply: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self._apply = apply
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._flushing = False

    async def submit(self, operation: Any) -> Any:
        """Queue ``operation`` for the next batch; return its result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def submit_many(self, operations: list[Any]) -> list[Any]:
        """Queue every operation for the same batch; their results in order.

        Raises the first operation's error if the batch failed.
        """
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in operations]
        self._pending.extend(zip(operations, futures, strict=True))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        await asyncio.wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._apply([op for op, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flushing = False


class SqliteEventStore:
    """The embedded event store: one SQLite database in the state folder."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DATABASE_NAME
        self.owner = new_owner_id()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fnplane-sqlite")
        self._db: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._holds_lock = False
        self._batcher = WriteBatcher(self._apply_batch)
        self._purged_at = 0.0

    async def open(self) -> None:
        """Create the folder and database, then take over if no one else runs."""
        try:
            await self._run(self._open)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the async event store {self.path}: {exc}; check the "
                f"state folder (--state-dir) is writable"
            ) from exc
        await self.heartbeat()

    def _open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._db = db
        self._lock_file = (self.state_dir / LOCK_NAME).open("ab")

    async def close(self) -> None:
        """Close the database and give up the state folder's lock."""
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def add(
        self, event: QueuedEvent, *, claim: bool, remember_until_ms: int | None
    ) -> bool:
        """Persist ``event`` in the next group commit; False for a duplicate id."""
        owner = self.owner if claim else None
        accepted: bool = await self._write(("add", event, owner, remember_until_ms))
        return accepted

    async def add_many(self, additions: list[Addition]) -> list[bool]:
        """Persist every event in the same group commit; False for duplicates."""
        operations = [
            ("add", event, self.owner if claim else None, remember_until_ms)
            for event, claim, remember_until_ms in additions
        ]
        results: list[bool] = await self._batcher.submit_many(operations)
        return results

    async def claim(self, function: str, now_ms: int, limit: int) -> list[QueuedEvent]:
        """Claim up to ``limit`` due events of ``function``, oldest due first."""
        # Through the write batcher: a claim shares the thread hop and the
        # transaction of the finishes and accepts waiting with it.
        rows = await self._write(("claim", function, now_ms, limit))
        events = [QueuedEvent(*row) for row in rows]
        events.sort(key=lambda event: event.due_at_ms)
        return events

    async def retry(self, event: QueuedEvent) -> None:
        """Store progress and make the event pending again at its due time."""
        await self._write(("retry", event))

    async def finish_many(self, event_ids: list[str]) -> None:
        """Delete finished events in the next group commit."""
        await self._write(("finish", event_ids))

    async def release(self, events: list[QueuedEvent]) -> None:
        """Make claimed, unstarted events pending again."""
        for event in events:
            await self._write(("retry", event))

    async def stored_ids(self, event_ids: list[str]) -> set[str]:
        """Those of ``event_ids`` whose events are in the database."""
        marks = ", ".join("?" * len(event_ids))
        query = f"SELECT event_id FROM events WHERE event_id IN ({marks})"
        rows = await self._run(
            lambda: self._connection().execute(query, event_ids).fetchall()
        )
        return {event_id for (event_id,) in rows}

    async def pending_counts(self) -> dict[str, int]:
        """Unfinished events by function."""
        rows = await self._run(
            lambda: (
                self._connection()
                .execute("SELECT function, count(*) FROM events GROUP BY function")
                .fetchall()
            )
        )
        return {function: count for function, count in rows}

    async def heartbeat(self) -> None:
        """Take over when the lock frees up; purge expired remembered ids."""
        await self._run(self._upkeep)

    def _upkeep(self) -> None:
        db = self._connection()
        if not self._holds_lock and self._try_lock():
            # Whoever holds the lock is the one live owner responsible for
            # claims that no running process can still be working on.
            cursor = db.execute(
                "UPDATE events SET owner = NULL WHERE owner IS NOT NULL AND owner != ?",
                (self.owner,),
            )
            if cursor.rowcount:
                logger.info("asyncq.claims_recovered", events=cursor.rowcount)
        if time.monotonic() - self._purged_at > SEEN_PURGE_INTERVAL_S:
            db.execute("DELETE FROM seen WHERE expires_at_ms <= ?", (now_ms(),))
            self._purged_at = time.monotonic()

    def _try_lock(self) -> bool:
        assert self._lock_file is not None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holds_lock = True
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the async event store {self.path} is not open")
        return self._db

    async def _run(self, call: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call, *args)

    async def _write(self, operation: tuple[Any, ...]) -> Any:
        return await self._batcher.submit(operation)

    async def _apply_batch(self, operations: list[tuple[Any, ...]]) -> list[Any]:
        try:
            results: list[Any] = await self._run(self._apply, operations)
        except sqlite3.Error as exc:
            raise StoreError(f"async event store write failed: {exc}") from exc
        return results

    def _apply(self, operations: list[tuple[Any, ...]]) -> list[Any]:
        db = self._connection()
        results: list[Any] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for operation in operations:
                results.append(self._apply_one(db, operation))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return results

    def _apply_one(self, db: sqlite3.Connection, operation: tuple[Any, ...]) -> Any:
        match operation:
            case ("add", event, owner, remember_until_ms):
                return self._insert(db, event, owner, remember_until_ms)
            case ("retry", event):
                db.execute(RETRY_SQL, (*event.to_row()[6:], event.event_id))
            case ("finish", event_ids):
                rows = [(event_id,) for event_id in event_ids]
                db.executemany("DELETE FROM events WHERE event_id = ?", rows)
            case ("claim", function, now_ms, limit):
                args = (self.owner, function, now_ms, limit)
                return db.execute(CLAIM_SQL, args).fetchall()
        return None

    def _insert(
        self,
        db: sqlite3.Connection,
        event: QueuedEvent,
        owner: str | None,
        remember_until_ms: int | None,
    ) -> bool:
        if remember_until_ms is not None:
            db.execute(
                "DELETE FROM seen WHERE event_id = ? AND expires_at_ms <= ?",
                (event.event_id, now_ms()),
            )
            cursor = db.execute(
                "INSERT OR IGNORE INTO seen (event_id, expires_at_ms) VALUES (?, ?)",
                (event.event_id, remember_until_ms),
            )
            if not cursor.rowcount:
                return False
        cursor = db.execute(INSERT_SQL, (*event.to_row(), owner))
        return bool(cursor.rowcount)


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    request_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    accepted_at_ms INTEGER NOT NULL,
    due_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_at_ms INTEGER,
    last_attempt_at_ms INTEGER,
    outcome TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS events_ready ON events (function, owner, due_at_ms);
CREATE TABLE IF NOT EXISTS seen (
    event_id TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);
"""

_COLUMN_LIST = ", ".join(COLUMNS)
INSERT_SQL = (
    f"INSERT OR IGNORE INTO events ({_COLUMN_LIST}, owner) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
CLAIM_SQL = (
    "UPDATE events SET owner = ? WHERE event_id IN ("
    "SELECT event_id FROM events WHERE function = ? AND owner IS NULL "
    "AND due_at_ms <= ? ORDER BY due_at_ms LIMIT ?) "
    f"RETURNING {_COLUMN_LIST}"
)
# Columns from due_at_ms on are the ones delivery changes.
RETRY_SQL = (
    "UPDATE events SET due_at_ms = ?, attempts = ?, first_attempt_at_ms = ?, "
    "last_attempt_at_ms = ?, outcome = ?, owner = NULL WHERE event_id = ?"
)
