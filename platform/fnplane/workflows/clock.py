"""Clocks: where executions read the time and wait.

The engine never calls ``time`` or ``asyncio.sleep`` directly; it asks its
clock, so tests can run Wait states, retry back-offs and timeouts on a
``FakeClock`` that jumps forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the engine needs from time: the current instant and a sleep."""

    def now(self) -> float:
        """Return the current time as seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` (zero or negative returns at once)."""
        ...


class SystemClock:
    """The wall clock and asyncio's sleep."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that advances instantly when slept on.

    Args:
        start: the initial time in seconds since the epoch (default: a fixed
            instant in 2024, so recorded timestamps are reproducible).
    """

    def __init__(self, start: float = 1_718_000_000.0) -> None:
        self._now = start
        self.slept_s: list[float] = []

    def now(self) -> float:
        """Return the fake current time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the fake time forward by ``seconds``."""
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, jump forward, and yield once to the loop."""
        self.slept_s.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


def iso_timestamp(epoch_s: float) -> str:
    """Format epoch seconds as Step Functions prints times (ISO 8601, UTC, ms)."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
