"""The platform's start and stop, beyond what the sources' tests cover."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from structlog.testing import capture_logs

from fnplane import App
from fnplane.config import Settings


async def test_the_startup_heap_is_frozen_while_the_platform_runs(
    start_platform: Any,
) -> None:
    """Objects made before the platform started are left out of collections
    while it runs, and handed back to the collector when it stops."""
    app = App()

    @app.function()
    def noop(event: Any, context: Any) -> None:
        """Never called."""

    gc.unfreeze()
    platform = await start_platform(app)
    frozen = gc.get_freeze_count()
    await platform.stop()

    assert frozen > 0
    assert gc.get_freeze_count() == 0


async def test_async_events_running_past_the_grace_period_are_counted_abandoned(
    start_platform: Any, settings: Settings
) -> None:
    """The log says how many invocations the stop cut off (the events stay
    stored and run again after a restart)."""
    app = App()
    started = asyncio.Event()

    @app.function(timeout=60)
    async def slow(event: Any, context: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    platform = await start_platform(app, settings.replace(grace=0.2))
    await platform.invoker.invoke_async("slow", {})
    await asyncio.wait_for(started.wait(), 5)
    with capture_logs() as logs:
        await platform.stop()

    (expired,) = [entry for entry in logs if entry["event"] == "platform.grace_expired"]
    assert expired["abandoned"] == 1
