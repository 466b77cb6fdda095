"""The embedded journal: one SQLite file under the platform's state folder.

WAL mode with ``synchronous=NORMAL``: a committed write survives the
process being killed (``kill -9``); only a power loss can take the last few
commits, SQLite's documented trade-off for WAL+NORMAL.

What must be durable before an execution moves on is its position: each
checkpoint, each step outcome (task result, Wait deadline) and each status
change commits at once. History events are buffered and committed with the
next of those writes, in the same transaction: a resume rolls the history
back to the last checkpoint and replays from there anyway, so an event that
no checkpoint covers is never needed. One commit per transition instead of
three is what keeps Standard executions near Express speed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

FILE_NAME = "workflows.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS state_machines (arn TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    arn TEXT PRIMARY KEY, status TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status);
CREATE TABLE IF NOT EXISTS events (
    arn TEXT NOT NULL, id INTEGER NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (arn, id));
CREATE TABLE IF NOT EXISTS steps (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (arn, key));
CREATE TABLE IF NOT EXISTS checkpoints (arn TEXT PRIMARY KEY, position TEXT NOT NULL);
"""


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


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
        self._pending_events: list[tuple[str, int, str]] = []

    def _commit(self, sql: str, parameters: tuple[Any, ...]) -> None:
        # One transaction: the buffered events, then the durable write.
        with self._db:
            self._db.execute("BEGIN")
            if self._pending_events:
                self._db.executemany(
                    "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                    self._pending_events,
                )
                self._pending_events.clear()
            self._db.execute(sql, parameters)

    def flush(self) -> None:
        """Commit buffered history events now."""
        if self._pending_events:
            self._commit("SELECT 1", ())

    def close(self) -> None:
        """Commit buffered events and close the database connection."""
        self.flush()
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
            "UPDATE executions SET status = ?, record = ? WHERE arn = ?",
            (record["status"], _dump(record), arn),
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
        self._pending_events.append((arn, event["id"], _dump(event)))

    def events(self, arn: str) -> list[dict[str, Any]]:
        """Return the history events in id order."""
        self.flush()
        rows = self._db.execute(
            "SELECT event FROM events WHERE arn = ? ORDER BY id", (arn,)
        )
        return [json.loads(row[0]) for row in rows]

    def drop_events_after(self, arn: str, event_id: int) -> None:
        """Forget events after ``event_id``."""
        self._commit("DELETE FROM events WHERE arn = ? AND id > ?", (arn, event_id))

    def record_step(self, arn: str, key: str, value: dict[str, Any]) -> None:
        """Record a completed step's outcome."""
        self._commit(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", (arn, key, _dump(value))
        )

    def steps(self, arn: str) -> dict[str, dict[str, Any]]:
        """Return the recorded step outcomes."""
        rows = self._db.execute("SELECT key, value FROM steps WHERE arn = ?", (arn,))
        return {key: json.loads(value) for key, value in rows}

    def checkpoint(self, arn: str, position: dict[str, Any]) -> None:
        """Record the top-level position."""
        self._commit(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", (arn, _dump(position))
        )

    def last_checkpoint(self, arn: str) -> dict[str, Any] | None:
        """Return the latest checkpoint."""
        row = self._db.execute(
            "SELECT position FROM checkpoints WHERE arn = ?", (arn,)
        ).fetchone()
        return json.loads(row[0]) if row else None
