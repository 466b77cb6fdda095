"""Running an awaitable under a deadline: the semantics of asyncio.timeout,
with no timer for a coroutine that never suspends."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from fnplane.deadline import DeadlineExpired, start_eagerly, wait_until


async def run_with_deadline(awaitable: Any, timeout_s: float) -> Any:
    """What the invoker does: start at once, wait for the rest under the deadline."""
    deadline_monotonic = time.monotonic() + timeout_s
    value, pending = start_eagerly(awaitable)
    if pending is None:
        return value
    return await wait_until(pending, deadline_monotonic)


async def test_a_coroutine_that_never_suspends_arms_no_timer() -> None:
    """The warm fast path: the value comes back without touching the loop's timers."""
    loop = asyncio.get_running_loop()

    async def quick() -> str:
        return "done"

    scheduled_before = len(loop._scheduled)  # type: ignore[attr-defined]
    assert await run_with_deadline(quick(), 0.5) == "done"
    assert len(loop._scheduled) == scheduled_before  # type: ignore[attr-defined]


async def test_a_suspending_coroutine_returns_its_value_and_disarms_the_timer() -> None:
    """Values sent back into the coroutine arrive, and no cancel fires later."""

    async def slow() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return 7

    assert await run_with_deadline(slow(), 0.05) == 7
    await asyncio.sleep(0.08)  # past the deadline: nothing cancels this task


async def test_the_deadline_cancels_and_raises_deadline_expired() -> None:
    """The coroutine sees CancelledError; the caller gets DeadlineExpired and the
    task's cancel count is back where it was."""
    cancelled = asyncio.Event()

    async def sleepy() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(DeadlineExpired):
        await run_with_deadline(sleepy(), 0.05)
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_the_deadline_counts_from_the_call_not_the_first_suspension() -> None:
    """Time spent before the first await counts towards the deadline."""
    loop = asyncio.get_running_loop()

    async def busy_then_sleep() -> None:
        start = loop.time()
        while loop.time() - start < 0.05:
            pass
        await asyncio.sleep(0.06)

    started = loop.time()
    with pytest.raises(DeadlineExpired):
        await run_with_deadline(busy_then_sleep(), 0.08)
    assert loop.time() - started < 0.105


async def test_a_timeout_error_of_the_coroutine_is_not_the_deadline() -> None:
    """A handler's own TimeoutError (an upstream call) stays its error."""

    async def upstream() -> None:
        await asyncio.sleep(0)
        raise TimeoutError("upstream API timed out")

    with pytest.raises(TimeoutError, match="upstream"):
        await run_with_deadline(upstream(), 5)


async def test_errors_before_and_after_the_first_suspension_propagate() -> None:
    """Exceptions come out unchanged whether the coroutine suspended or not."""

    async def early() -> None:
        raise KeyError("early")

    async def late() -> None:
        await asyncio.sleep(0)
        raise KeyError("late")

    with pytest.raises(KeyError, match="early"):
        await run_with_deadline(early(), 5)
    with pytest.raises(KeyError, match="late"):
        await run_with_deadline(late(), 5)


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    """Cancelling the caller's task is not a timeout, and reaches the coroutine."""
    reached = asyncio.Event()
    seen: list[str] = []

    async def waits() -> None:
        reached.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def caller() -> Any:
        return await run_with_deadline(waits(), 5)

    task = asyncio.create_task(caller())
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_a_coroutine_that_swallows_the_cancel_keeps_its_value() -> None:
    """As under asyncio.timeout: no DeadlineExpired, and the cancel is undone."""

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept"
        return "slept"

    assert await run_with_deadline(stubborn(), 0.02) == "kept"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_future_is_awaited_under_the_deadline() -> None:
    """Not a coroutine (a thread pool future): the timer alone applies."""
    release = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
    with pytest.raises(DeadlineExpired):
        await run_with_deadline(future, 0.05)
    release.set()
