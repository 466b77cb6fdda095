"""Detection on Linux (inotify read on the event loop) and the watchdog fallback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from fnplane import App
from fnplane.events.s3 import S3Event
from fnplane.sources import files as files_source


async def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it is true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def max_queued_events() -> int:
    """The kernel's inotify queue length (events beyond it are dropped)."""
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


@pytest.mark.skipif(not files_source.use_inotify(), reason="inotify is Linux only")
async def test_overflowed_queue_is_reconciled_and_every_file_fires_once(
    start_platform: Any, tmp_path: Path
) -> None:
    """More files than the kernel queue holds, written while the loop cannot
    read: the kernel drops events, the overflow is logged, the folder is
    reconciled, and every file is handled exactly once."""
    inbox = tmp_path / "inbox"
    app = App()
    keys: Counter[str] = Counter()

    @app.on_file(inbox, settle=0.1)
    async def handle(event: S3Event, context: Any) -> None:
        keys[event.key] += 1

    await start_platform(app)
    count = max_queued_events() + 2000
    with capture_logs() as logs:
        # Written without yielding: the loop reads nothing until the end.
        for number in range(count):
            (inbox / f"f{number:06d}.txt").write_bytes(b"x")
        await wait_for(lambda: len(keys) == count)
        await asyncio.sleep(0.3)
    assert set(keys.values()) == {1}
    assert any(entry["event"] == "files.events_overflowed" for entry in logs)


@pytest.mark.skipif(not files_source.use_inotify(), reason="inotify is Linux only")
async def test_recursive_watch_covers_folders_created_after_start(
    start_platform: Any, tmp_path: Path
) -> None:
    """A folder made below a recursive watch is watched at once; files written
    into it before its watch existed are found by the scan it triggers;
    processed/ and hidden folders never fire."""
    inbox = tmp_path / "inbox"
    app = App()
    keys: Counter[str] = Counter()

    @app.on_file(inbox, recursive=True)
    def handle(event: S3Event, context: Any) -> None:
        keys[event.key] += 1

    await start_platform(app)
    deeper = inbox / "2025" / "06"
    deeper.mkdir(parents=True)
    expected = {f"2025/06/{number}.csv" for number in range(50)}
    for key in expected:
        (inbox / key).write_text("a,b\n")
    (inbox / ".cache").mkdir()
    (inbox / ".cache" / "skip.csv").write_text("hidden")
    await wait_for(lambda: set(keys) == expected)
    await wait_for(
        lambda: len(list((inbox / "processed" / "2025" / "06").iterdir())) == 50
    )
    await asyncio.sleep(0.5)
    assert set(keys.values()) == {1}
    assert set(keys) == expected


async def test_watchdog_fallback_fires_once_the_file_settles(
    start_platform: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where inotify is not used, watchdog's events and the settle time decide:
    a file written in chunks fires once, after its last write."""
    monkeypatch.setattr(files_source, "use_inotify", lambda: False)
    inbox = tmp_path / "inbox"
    app = App()
    calls: list[tuple[int, float]] = []

    @app.on_file(inbox, settle=0.3)
    def handle(event: S3Event, context: Any) -> None:
        calls.append((event.size, time.time()))

    await start_platform(app)
    with (inbox / "chunks.bin").open("wb") as file:
        for _ in range(5):
            file.write(b"x" * 100)
            file.flush()
            await asyncio.sleep(0.1)
    last_write_s = time.time()
    await wait_for(lambda: (inbox / "processed" / "chunks.bin").exists())
    assert len(calls) == 1
    size, started_s = calls[0]
    assert size == 500
    assert started_s >= last_write_s
