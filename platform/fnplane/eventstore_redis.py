"""The shared event store on Redis, for several nodes serving one queue.

Choose it with the ``async_queue`` setting, e.g.
``FNPLANE_ASYNC_QUEUE=redis://host:6379/0`` (``?prefix=NAME`` changes the
key prefix, default ``fnplane:asyncq``). Every node runs its own dispatcher
against the same keys:

- ``{prefix}:ev:{id}`` a hash per stored event;
- ``{prefix}:due:{function}`` a sorted set of pending ids by due time;
- ``{prefix}:owned:{owner}`` the ids a node has claimed;
- ``{prefix}:owners`` each node's last heartbeat (milliseconds);
- ``{prefix}:seen:{id}`` remembered event ids, expiring with the window.

Each step that moves an event between sets is one Lua script, so a claim
can never hand one event to two nodes. A node whose heartbeat is older than
``owner_timeout_s`` is dead: any other node moves its claims back to the due
sets (at-least-once after ``kill -9``). Writes from concurrent callers go in
one pipeline (group commit), as with SQLite.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from fnplane.eventstore import (
    COLUMNS,
    Addition,
    QueuedEvent,
    StoreError,
    WriteBatcher,
    new_owner_id,
    now_ms,
)

logger = structlog.get_logger(__name__)

DEFAULT_PREFIX = "fnplane:asyncq"
DEFAULT_OWNER_TIMEOUT_S = 15.0
INTEGER_COLUMNS = frozenset(
    ("accepted_at_ms", "due_at_ms", "attempts", "first_attempt_at_ms")
    + ("last_attempt_at_ms",)
)

ADD_SCRIPT = """
-- KEYS: event hash, due set, owned set, seen key, functions set
-- ARGV: id, claim, remember_until_ms ('' none, 'inf' for ever), now_ms,
--       due_at_ms, function, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[3] == 'inf' then
  if not redis.call('SET', KEYS[4], 1, 'NX') then return 0 end
elseif ARGV[3] ~= '' then
  local ttl = tonumber(ARGV[3]) - tonumber(ARGV[4])
  if ttl > 0 and not redis.call('SET', KEYS[4], 1, 'NX', 'PX', ttl) then
    return 0
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
redis.call('SADD', KEYS[5], ARGV[6])
return 1
"""

CLAIM_SCRIPT = """
-- KEYS: due set, owned set; ARGV: now_ms, limit, event key prefix, owner
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local claimed = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('SADD', KEYS[2], id)
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""

RETRY_SCRIPT = """
-- KEYS: event hash, due set, owned set; ARGV: id, due_at_ms, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

REAP_SCRIPT = """
-- KEYS: owners set; ARGV: prefix, stale_before_ms, own owner id
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local moved = 0
for _, owner in ipairs(dead) do
  if owner ~= ARGV[3] then
    local owned = ARGV[1] .. ':owned:' .. owner
    for _, id in ipairs(redis.call('SMEMBERS', owned)) do
      local key = ARGV[1] .. ':ev:' .. id
      local fields = redis.call('HMGET', key, 'function', 'due_at_ms')
      if fields[1] then
        redis.call('ZADD', ARGV[1] .. ':due:' .. fields[1], fields[2], id)
        moved = moved + 1
      end
    end
    redis.call('DEL', owned)
    redis.call('ZREM', KEYS[1], owner)
  end
end
return moved
"""


class RedisEventStore:
    """Async events in Redis, shared by every node using the same URL and prefix."""

    def __init__(
        self, url: str, owner_timeout_s: float = DEFAULT_OWNER_TIMEOUT_S
    ) -> None:
        parts = urlsplit(url)
        self.prefix = parse_qs(parts.query).get("prefix", [DEFAULT_PREFIX])[0]
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.owner = new_owner_id()
        self.owner_timeout_s = owner_timeout_s
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._batcher = WriteBatcher(self._apply_batch)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def open(self) -> None:
        """Connect, load the scripts and announce this owner."""
        self._client = redis.Redis.from_url(self.url, decode_responses=True)
        for name, source in (
            ("add", ADD_SCRIPT),
            ("claim", CLAIM_SCRIPT),
            ("retry", RETRY_SCRIPT),
            ("reap", REAP_SCRIPT),
        ):
            self._scripts[name] = self._client.register_script(source)
        try:
            await self._client.ping()
        except RedisError as exc:
            raise StoreError(
                f"cannot reach the Redis async queue at {self.url}: {exc}; check "
                f"the async_queue setting and that Redis runs"
            ) from exc
        await self.heartbeat()

    async def close(self) -> None:
        """Disconnect; this owner's claims are taken over once it is stale."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def add(
        self, event: QueuedEvent, *, claim: bool, remember_until_ms: int | None
    ) -> bool:
        """Store the event (in the next pipeline); False for a duplicate id."""
        accepted: bool = await self._batcher.submit(
            ("add", event, claim, remember_until_ms)
        )
        return accepted

    async def add_many(self, additions: list[Addition]) -> list[bool]:
        """Store every event in the same pipeline; False for duplicate ids."""
        operations = [
            ("add", event, claim, remember_until_ms)
            for event, claim, remember_until_ms in additions
        ]
        results: list[bool] = await self._batcher.submit_many(operations)
        return results

    async def claim(self, function: str, now_ms: int, limit: int) -> list[QueuedEvent]:
        """Move up to ``limit`` due ids of ``function`` into this owner's set."""
        rows = await self._call(
            self._scripts["claim"](
                keys=[self._key("due", function), self._key("owned", self.owner)],
                args=[now_ms, limit, self._key("ev", ""), self.owner],
            )
        )
        return [from_hash(row) for row in rows]

    async def retry(self, event: QueuedEvent) -> None:
        """Store progress; pending again at ``due_at_ms``."""
        await self._batcher.submit(("retry", event))

    async def finish_many(self, event_ids: list[str]) -> None:
        """Delete the finished events, in one pipeline."""
        await self._batcher.submit_many(
            [("finish", event_id) for event_id in event_ids]
        )

    async def release(self, events: list[QueuedEvent]) -> None:
        """Give unstarted claimed events back to the due sets."""
        for event in events:
            await self._batcher.submit(("retry", event))

    async def stored_ids(self, event_ids: list[str]) -> set[str]:
        """Those of ``event_ids`` with an event hash, pending or claimed."""
        pipe = self._client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.exists(self._key("ev", event_id))
        found = await self._call(pipe.execute())
        return {
            event_id
            for event_id, exists in zip(event_ids, found, strict=True)
            if exists
        }

    async def pending_counts(self) -> dict[str, int]:
        """Pending (due, unclaimed) events by function."""
        functions = await self._call(self._client.smembers(self._key("functions")))
        counts = {}
        for function in functions:
            count = await self._call(self._client.zcard(self._key("due", function)))
            if count:
                counts[function] = int(count)
        return counts

    async def heartbeat(self) -> None:
        """Refresh this owner's heartbeat and take over dead owners' claims."""
        now = now_ms()
        await self._call(self._client.zadd(self._key("owners"), {self.owner: now}))
        stale_before_ms = now - int(self.owner_timeout_s * 1000)
        moved = await self._call(
            self._scripts["reap"](
                keys=[self._key("owners")],
                args=[self.prefix, stale_before_ms, self.owner],
            )
        )
        if moved:
            logger.info("asyncq.claims_recovered", events=moved, store="redis")

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise StoreError(f"Redis async queue at {self.url}: {exc}") from exc

    async def _apply_batch(self, operations: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        commands = [await self._queue_operation(pipe, op) for op in operations]
        results = await self._call(pipe.execute())
        # Each operation's answer is its first command's; a finish sends two.
        answers, index = [], 0
        for count in commands:
            answers.append(bool(results[index]))
            index += count
        return answers

    async def _queue_operation(self, pipe: Any, operation: tuple[Any, ...]) -> int:
        match operation:
            case ("add", event, claim, remember_until_ms):
                await self._scripts["add"](
                    keys=[
                        self._key("ev", event.event_id),
                        self._key("due", event.function),
                        self._key("owned", self.owner),
                        self._key("seen", event.event_id),
                        self._key("functions"),
                    ],
                    args=[
                        event.event_id,
                        "1" if claim else "0",
                        remember_arg(remember_until_ms),
                        now_ms(),
                        event.due_at_ms,
                        event.function,
                        *to_hash(event),
                    ],
                    client=pipe,
                )
                return 1
            case ("retry", event):
                await self._scripts["retry"](
                    keys=[
                        self._key("ev", event.event_id),
                        self._key("due", event.function),
                        self._key("owned", self.owner),
                    ],
                    args=[event.event_id, event.due_at_ms, *to_hash(event)],
                    client=pipe,
                )
                return 1
            case ("finish", event_id):
                pipe.delete(self._key("ev", event_id))
                pipe.srem(self._key("owned", self.owner), event_id)
                return 2
        raise ValueError(f"unknown store operation {operation[0]!r}")


def remember_arg(remember_until_ms: int | None) -> str:
    """The ADD script's remember argument."""
    if remember_until_ms is None:
        return ""
    if remember_until_ms >= 2**62 or math.isinf(remember_until_ms):
        return "inf"
    return str(remember_until_ms)


def to_hash(event: QueuedEvent) -> list[Any]:
    """Field, value pairs of the event's hash (None values stored as '')."""
    pairs: list[Any] = []
    for column in COLUMNS:
        value = getattr(event, column)
        pairs += [column, "" if value is None else value]
    return pairs


def from_hash(flat: list[str]) -> QueuedEvent:
    """A ``QueuedEvent`` from ``HGETALL``'s flat field, value list."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    values: dict[str, Any] = {}
    for column in COLUMNS:
        raw = fields.get(column, "")
        if column in INTEGER_COLUMNS:
            values[column] = int(raw) if raw != "" else None
        else:
            values[column] = raw if raw != "" else None
    return QueuedEvent(**values)
