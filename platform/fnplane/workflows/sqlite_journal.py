"""The embedded journal: one SQLite file under the platform's state folder.

What must be durable is what the outside world can observe, or what a re-run
would change: a step outcome (a task result, a Wait deadline), the position
before a Task's function is invoked (``flush``), the final status, and the
history before the API reads it. Those writes commit at once. Everything in
between (history events and the top-level checkpoint after each Pass,
Choice, ... transition) is buffered and committed in the same transaction as
the next durable write. After a crash the buffered steps are recomputed from
the last durable checkpoint: they are pure functions of the journaled state,
and nobody outside saw the lost values (see the README, "Workflows").

WAL mode with ``synchronous=NORMAL``: a committed transaction survives the
process being killed (``kill -9``); a power loss or OS crash can take the
last commits (SQLite's documented trade-off for WAL+NORMAL), and the
database stays consistent.
"""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnplane.errors import FnplaneError

FILE_NAME = "workflows.sqlite3"
# History events go in batches, one row per execution per commit (the list
# of events from ``first_id`` on): one insert and one encoder call for a
# whole run of Pass states instead of one of each per event. The list is a
# pickle, read back by an unpickler that refuses every class and function
# (plain data only): eight times cheaper to write than JSON, which was the
# largest cost of a Standard transition.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS state_machines (arn TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    arn TEXT PRIMARY KEY, status TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status);
CREATE TABLE IF NOT EXISTS event_batches (
    arn TEXT NOT NULL, first_id INTEGER NOT NULL, events BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS event_batches_arn ON event_batches (arn, first_id);
CREATE TABLE IF NOT EXISTS steps (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (arn, key));
CREATE TABLE IF NOT EXISTS checkpoints (arn TEXT PRIMARY KEY, position TEXT NOT NULL);
"""
_INSERT_BATCH = "INSERT INTO event_batches VALUES (?, ?, ?)"
# Buffered events past which a checkpoint commits anyway: it bounds the work
# a crash throws away and the size of one transaction.
MAX_BUFFERED_EVENTS = 1000

_dump = json.JSONEncoder(separators=(",", ":")).encode
Write = Callable[[sqlite3.Connection], None]


class JournalDataError(FnplaneError, ValueError):
    """A stored event batch holds something other than plain data."""


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers, booleans and None only."""

    def find_class(self, module_name: str, name: str) -> Any:
        raise JournalDataError(
            f"event batch refers to {module_name}.{name}: only plain data is stored"
        )


def _pack(events: list[dict[str, Any]]) -> bytes:
    return pickle.dumps(events, protocol=5)


def _unpack(batch: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = _PlainData(io.BytesIO(batch)).load()
    return events


def _nothing(db: sqlite3.Connection) -> None:
    pass


def _statement(sql: str, parameters: tuple[Any, ...]) -> Write:
    def write(db: sqlite3.Connection) -> None:
        db.execute(sql, parameters)

    return write


def _migrate_event_rows(db: sqlite3.Connection) -> None:
    # Journals written before event batches kept one JSON row per event in
    # ``events``: move each execution's into one batch, in one transaction.
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    if found is None:
        return
    with db:
        db.execute("BEGIN")
        arns = [arn for (arn,) in db.execute("SELECT DISTINCT arn FROM events")]
        for arn in arns:
            rows = db.execute(
                "SELECT event FROM events WHERE arn = ? ORDER BY id", (arn,)
            )
            events = [json.loads(event) for (event,) in rows]
            db.execute(_INSERT_BATCH, (arn, events[0]["id"], _pack(events)))
        db.execute("DROP TABLE events")


class SqliteJournal:
    """A ``Journal`` in ``<state_dir>/workflows.sqlite3``.

    Args:
        state_dir: the folder for the database file (created if missing).
    """

    def __init__(self, state_dir: str | Path) -> None:
        folder = Path(state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        # Autocommit mode: every statement below is durable when it returns.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        _migrate_event_rows(self._db)
        # Per execution, encoded when they commit: events and positions are
        # never mutated after they are handed over (paths copy, never set in
        # place). A commit takes only its own execution's, so one execution's
        # unencodable value cannot fail another's commits.
        self._pending_events: dict[str, list[dict[str, Any]]] = {}
        self._pending_checkpoints: dict[str, dict[str, Any]] = {}

    def _commit(self, arn: str, write: Write) -> None:
        # One transaction: the execution's buffered events and checkpoint,
        # then the write.
        events = self._pending_events.get(arn)
        position = self._pending_checkpoints.get(arn)
        with self._db:
            self._db.execute("BEGIN")
            if events:
                self._db.execute(_INSERT_BATCH, (arn, events[0]["id"], _pack(events)))
            if position is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                    (arn, _dump(position)),
                )
            write(self._db)
        self._pending_events.pop(arn, None)
        self._pending_checkpoints.pop(arn, None)

    def flush(self, arn: str) -> None:
        """Commit an execution's buffered events and checkpoint now."""
        if arn in self._pending_events or arn in self._pending_checkpoints:
            self._commit(arn, _nothing)

    def close(self) -> None:
        """Commit what is buffered and close the database connection."""
        for arn in {*self._pending_events, *self._pending_checkpoints}:
            self.flush(arn)
        self._db.close()

    def save_state_machine(self, record: dict[str, Any]) -> None:
        """Insert or replace a state machine record."""
        self._db.execute(
            "INSERT OR REPLACE INTO state_machines VALUES (?, ?)",
            (record["arn"], _dump(record)),
        )

    def state_machines(self) -> list[dict[str, Any]]:
        """Return every state machine record."""
        rows = self._db.execute("SELECT record FROM state_machines")
        return [json.loads(row[0]) for row in rows]

    def create_execution(self, record: dict[str, Any]) -> None:
        """Save a new execution record."""
        self._db.execute(
            "INSERT INTO executions VALUES (?, ?, ?)",
            (record["arn"], record["status"], _dump(record)),
        )

    def update_execution(self, arn: str, fields: dict[str, Any]) -> None:
        """Change fields of an execution record."""
        row = self._db.execute(
            "SELECT record FROM executions WHERE arn = ?", (arn,)
        ).fetchone()
        record = {**json.loads(row[0]), **fields}
        self._commit(
            arn,
            _statement(
                "UPDATE executions SET status = ?, record = ? WHERE arn = ?",
                (record["status"], _dump(record), arn),
            ),
        )

    def executions(self, status: str | None = None) -> list[dict[str, Any]]:
        """Return execution records, optionally filtered by status."""
        if status is None:
            rows = self._db.execute("SELECT record FROM executions")
        else:
            rows = self._db.execute(
                "SELECT record FROM executions WHERE status = ?", (status,)
            )
        return [json.loads(row[0]) for row in rows]

    def append_event(self, arn: str, event: dict[str, Any]) -> None:
        """Buffer one history event until the next durable write."""
        pending = self._pending_events.get(arn)
        if pending is None:
            self._pending_events[arn] = [event]
        else:
            pending.append(event)

    def events(self, arn: str) -> list[dict[str, Any]]:
        """Return the history events in id order."""
        self.flush(arn)
        return self._stored_events(self._db, arn)

    @staticmethod
    def _stored_events(db: sqlite3.Connection, arn: str) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT events FROM event_batches WHERE arn = ? ORDER BY first_id", (arn,)
        )
        return [event for (batch,) in rows for event in _unpack(batch)]

    def drop_events_after(self, arn: str, event_id: int) -> None:
        """Forget events after ``event_id`` (rewrites the history in one row)."""

        def rewrite(db: sqlite3.Connection) -> None:
            kept = [e for e in self._stored_events(db, arn) if e["id"] <= event_id]
            db.execute("DELETE FROM event_batches WHERE arn = ?", (arn,))
            if kept:
                db.execute(_INSERT_BATCH, (arn, kept[0]["id"], _pack(kept)))

        self._commit(arn, rewrite)

    def record_step(self, arn: str, key: str, value: dict[str, Any]) -> None:
        """Record a completed step's outcome."""
        self._commit(
            arn,
            _statement(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                (arn, key, _dump(value)),
            ),
        )

    def steps(self, arn: str) -> dict[str, dict[str, Any]]:
        """Return the recorded step outcomes."""
        rows = self._db.execute("SELECT key, value FROM steps WHERE arn = ?", (arn,))
        return {key: json.loads(value) for key, value in rows}

    def checkpoint(self, arn: str, position: dict[str, Any]) -> None:
        """Buffer the top-level position until the next durable write.

        Only the latest position of an execution is kept; it commits with
        the events that lead up to it, so the two always agree.
        """
        self._pending_checkpoints[arn] = position
        if len(self._pending_events.get(arn, ())) >= MAX_BUFFERED_EVENTS:
            self.flush(arn)

    def last_checkpoint(self, arn: str) -> dict[str, Any] | None:
        """Return the latest checkpoint."""
        self.flush(arn)
        row = self._db.execute(
            "SELECT position FROM checkpoints WHERE arn = ?", (arn,)
        ).fetchone()
        return json.loads(row[0]) if row else None
