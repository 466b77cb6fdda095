"""What the Kafka and Redis Streams tests share: unique names and polling."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

WAIT_S = 20.0
_names = itertools.count()


def unique(prefix: str) -> str:
    """A topic, stream or group name no other test uses."""
    return f"{prefix}-{time.monotonic_ns()}-{next(_names)}"


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
