"""The platform's start and stop, beyond what the sources' tests cover."""

from __future__ import annotations

import gc
from typing import Any

from fnplane import App


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
