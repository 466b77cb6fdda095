"""The file-drop source on a real filesystem: completeness, once-only, disposition."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from fnplane import App
from fnplane.config import Settings
from fnplane.errors import FnplaneError, RegistrationError
from fnplane.events.s3 import S3Event
from fnplane.policy import Backoff
from fnplane.runner import Platform
from tests.processes import fnplane_command, free_port, wait_until

FAST = Backoff(base=0.01, cap=0.02)


async def wait_for(condition: Callable[[], Any], timeout_s: float = 15.0) -> None:
    """Poll ``condition`` until it is true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def key_recorder(folder: Path, **options: Any) -> tuple[App, list[str]]:
    """An app whose one file trigger on ``folder`` records each event's key."""
    app = App()
    keys: list[str] = []

    @app.on_file(folder, **options)
    def handle(event: S3Event, context: Any) -> None:
        keys.append(event.key)

    return app, keys


def names(folder: Path) -> list[str]:
    """File names in ``folder`` (not subfolders), sorted."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if entry.is_file())


async def test_slow_write_fires_once_after_the_last_chunk(
    start_platform: Any, tmp_path: Path
) -> None:
    """A file written in small chunks over two seconds fires once, complete."""
    inbox = tmp_path / "inbox"
    app = App()
    calls: list[tuple[int, float]] = []

    @app.on_file(inbox, settle=0.5)
    def handle(event: S3Event, context: Any) -> None:
        calls.append((event.size, time.time()))

    await start_platform(app)
    chunk = b"x" * 1000
    with (inbox / "slow.bin").open("wb") as file:
        for _ in range(20):
            file.write(chunk)
            file.flush()
            await asyncio.sleep(0.1)
        last_write_s = time.time()
    await wait_for(lambda: names(inbox / "processed") == ["slow.bin"])
    assert len(calls) == 1
    size, started_s = calls[0]
    assert size == 20_000
    assert started_s >= last_write_s


async def test_file_renamed_into_folder_fires_once(
    start_platform: Any, tmp_path: Path
) -> None:
    """An atomic rename (write elsewhere, then move in) fires exactly once."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()
    app, keys = key_recorder(inbox)

    await start_platform(app)
    (outside / "report.csv").write_text("a,b\n")
    os.rename(outside / "report.csv", inbox / "report.csv")
    (inbox / "data.json.part").write_text("{}")
    os.rename(inbox / "data.json.part", inbox / "data.json")
    await wait_for(lambda: len(names(inbox / "processed")) == 2)
    assert sorted(keys) == ["data.json", "report.csv"]


async def test_temporary_files_never_fire(start_platform: Any, tmp_path: Path) -> None:
    """Partial, temporary, editor and hidden names are ignored by default."""
    inbox = tmp_path / "inbox"
    app, keys = key_recorder(inbox)

    platform = await start_platform(app)
    for name in ("a.part", "b.tmp", "c.txt~", ".d.swp", ".hidden", "e.partial"):
        (inbox / name).write_text("temp")
    (inbox / "real.txt").write_text("real")
    await wait_for(lambda: keys == ["real.txt"])
    [source] = [s for s in platform.sources if hasattr(s, "watches")]
    source.watches[0].request_scan("test")
    await wait_for(lambda: names(inbox / "processed") == ["real.txt"])
    assert keys == ["real.txt"]
    assert len(names(inbox)) == 6


async def test_thousand_files_each_handled_exactly_once(
    start_platform: Any, tmp_path: Path
) -> None:
    """1,000 files dropped at once are each handled once and end in processed/."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    app = App()
    counts: Counter[str] = Counter()

    @app.on_file(inbox)
    async def handle(event: S3Event, context: Any) -> None:
        counts[event.key] += 1

    await start_platform(app)
    for number in range(1000):
        (inbox / f"f{number:04d}.dat").write_bytes(b"%d" % number)
    await wait_for(lambda: len(names(inbox / "processed")) == 1000, timeout_s=30)
    assert len(counts) == 1000
    assert set(counts.values()) == {1}
    assert names(inbox) == []


async def test_fails_twice_then_succeeds_ends_in_processed(
    start_platform: Any, tmp_path: Path
) -> None:
    """Three attempts, then the file moves to processed/."""
    inbox = tmp_path / "inbox"
    app = App()
    attempts: list[int] = []

    @app.on_file(inbox, backoff=FAST)
    def handle(event: S3Event, context: Any) -> None:
        attempts.append(context.attempt)
        if context.attempt < 3:
            raise RuntimeError("transient")

    await start_platform(app)
    (inbox / "order.json").write_text('{"id": 1}')
    await wait_for(lambda: names(inbox / "processed") == ["order.json"])
    assert attempts == [1, 2, 3]
    assert names(inbox / "failed") == []


async def test_a_failed_file_kept_in_failed_is_not_logged_as_discarded(
    start_platform: Any, tmp_path: Path
) -> None:
    """Without on_failure the file and its error record are still kept, in
    failed/: the log says where, not that the event was discarded."""
    inbox = tmp_path / "inbox"
    app = App()

    @app.on_file(inbox, retries=0)
    def handle(event: S3Event, context: Any) -> None:
        raise ValueError("cannot parse")

    await start_platform(app)
    with capture_logs() as logs:
        (inbox / "bad.csv").write_text("garbage")
        await wait_for(lambda: len(names(inbox / "failed")) == 2)
        await asyncio.sleep(0.1)
    events = [log["event"] for log in logs]
    assert "files.moved_to_failed" in events
    assert "asyncq.event_discarded" not in events


async def test_always_failing_file_moves_to_failed_with_record(
    start_platform: Any, tmp_path: Path
) -> None:
    """Three attempts, then failed/<name> with <name>.error.json beside it and
    a record in the on_failure destination."""
    inbox, dlq = tmp_path / "inbox", tmp_path / "dlq"
    app = App()
    attempts: list[int] = []

    @app.on_file(inbox, backoff=FAST, on_failure=f"folder:{dlq}")
    def handle(event: S3Event, context: Any) -> None:
        attempts.append(context.attempt)
        raise ValueError("cannot parse")

    await start_platform(app)
    (inbox / "bad.csv").write_text("garbage")
    await wait_for(
        lambda: len(names(inbox / "failed")) == 2 and list(dlq.glob("*.json"))
    )
    assert attempts == [1, 2, 3]
    assert names(inbox / "failed") == ["bad.csv", "bad.csv.error.json"]
    error = json.loads((inbox / "failed" / "bad.csv.error.json").read_text())
    assert error["requestContext"]["condition"] == "RetriesExhausted"
    assert error["responsePayload"]["errorType"] == "ValueError"
    [record] = [json.loads(path.read_text()) for path in dlq.glob("*.json")]
    s3 = record["requestPayload"]["Records"][0]["s3"]
    assert s3["object"]["key"] == "bad.csv"
    assert record["requestContext"]["approximateInvokeCount"] == 3


async def test_catch_up_at_start_and_no_second_run_after_restart(
    start_platform: Any, tmp_path: Path, settings: Settings
) -> None:
    """Files dropped while down are handled at start; a restart does not handle
    files whose disposition is done (moved, or left and remembered)."""
    moved, left = tmp_path / "moved", tmp_path / "left"
    for folder in (moved, left):
        folder.mkdir()
        (folder / "early.txt").write_text("before start")
    handled: list[str] = []

    def build() -> App:
        app = App()

        @app.on_file(moved)
        def move_it(event: S3Event, context: Any) -> None:
            handled.append(f"moved/{event.key}")

        @app.on_file(left, disposition="leave")
        def leave_it(event: S3Event, context: Any) -> None:
            handled.append(f"left/{event.key}")

        return app

    first = await start_platform(build())
    await wait_for(lambda: len(handled) == 2)
    await first.stop()
    assert sorted(handled) == ["left/early.txt", "moved/early.txt"]
    assert names(left) == ["early.txt"]

    (moved / "later.txt").write_text("after restart")
    with capture_logs() as logs:
        await start_platform(build(), settings)
        await wait_for(lambda: len(handled) == 3)
        await wait_for(lambda: names(moved / "processed") == ["early.txt", "later.txt"])
    assert sorted(handled) == ["left/early.txt", "moved/early.txt", "moved/later.txt"]
    # The file left in place is found again, quietly: not a line a file.
    assert not [log for log in logs if log["event"] == "asyncq.duplicate"]
    found_again = [log for log in logs if log["event"] == "asyncq.duplicates"]
    assert [(log["log_level"], log["events"]) for log in found_again] == [("debug", 1)]


async def test_delete_disposition_and_recursive_keys(
    start_platform: Any, tmp_path: Path
) -> None:
    """disposition='delete' removes the file; recursive keys are relative paths."""
    inbox = tmp_path / "inbox"
    (inbox / "2024" / "05").mkdir(parents=True)
    app, keys = key_recorder(
        inbox, recursive=True, disposition="delete", patterns="*.log"
    )

    await start_platform(app)
    (inbox / "2024" / "05" / "app.log").write_text("line\n")
    (inbox / "2024" / "notes.txt").write_text("not a log")
    await wait_for(lambda: keys == ["2024/05/app.log"])
    await wait_for(lambda: not (inbox / "2024" / "05" / "app.log").exists())
    assert (inbox / "2024" / "notes.txt").exists()


async def test_s3_event_shape_with_spaces_and_non_ascii(
    start_platform: Any, tmp_path: Path
) -> None:
    """The event is an S3 ObjectCreated:Put notification; accessors decode the key."""
    inbox = tmp_path / "drop zone"
    app = App()
    events: list[tuple[dict[str, Any], str, bytes, str]] = []

    @app.on_file(inbox)
    def handle(event: S3Event, context: Any) -> None:
        with event.open() as file:
            events.append((dict(event), event.key, file.read(), event.bucket))

    await start_platform(app)
    (inbox / "relevé de compte.txt").write_text("€ 12", encoding="utf-8")
    await wait_for(lambda: events)
    raw, key, content, bucket = events[0]
    record = raw["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "drop zone" == bucket
    assert record["s3"]["object"]["key"] == "relev%C3%A9+de+compte.txt"
    assert record["s3"]["object"]["size"] == len("€ 12".encode())
    assert record["s3"]["object"]["eTag"]
    assert record["s3"]["object"]["sequencer"]
    assert key == "relevé de compte.txt"
    assert content == "€ 12".encode()


async def test_name_that_is_not_utf8_fires_fails_cleanly_and_the_folder_goes_on(
    start_platform: Any, tmp_path: Path
) -> None:
    """A file name of raw bytes (not UTF-8) fires like any other, S3-encoded;
    failing, it lands in failed/ with a readable record; later files fire."""
    inbox = tmp_path / "inbox"
    app = App()
    seen: list[tuple[str, str, bytes]] = []

    destination = tmp_path / "failures"

    @app.on_file(inbox, retries=0, on_failure=f"folder:{destination}")
    def handle(event: S3Event, context: Any) -> None:
        raw_key = event["Records"][0]["s3"]["object"]["key"]
        seen.append((raw_key, event.key, event.read_bytes()))
        if raw_key != "after.txt":
            raise ValueError(f"cannot read {event.key}")

    await start_platform(app)
    raw_name = b"caf\xe9 \xff.txt"
    with open(os.fsencode(inbox) + b"/" + raw_name, "wb") as file:
        file.write(b"latin-1")
    await wait_for(lambda: len(seen) == 1)
    (inbox / "after.txt").write_text("utf-8")
    await wait_for(lambda: len(seen) == 2)
    assert seen[0] == ("caf%E9+%FF.txt", os.fsdecode(raw_name), b"latin-1")
    assert seen[1] == ("after.txt", "after.txt", b"utf-8")
    failed = os.fsencode(inbox / "failed")
    await wait_for(lambda: len(names(inbox / "failed")) == 2)
    assert sorted(os.listdir(failed)) == [raw_name, raw_name + b".error.json"]
    with open(failed + b"/" + raw_name + b".error.json", encoding="utf-8") as file:
        record = json.load(file)
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"].endswith(os.fsdecode(raw_name))
    await wait_for(lambda: len(names(destination)) == 1)
    sent = json.loads((destination / names(destination)[0]).read_text("utf-8"))
    assert sent["responsePayload"] == record["responsePayload"]
    await wait_for(lambda: names(inbox / "processed") == ["after.txt"])


async def test_file_deleted_before_its_turn_is_skipped(
    start_platform: Any, tmp_path: Path
) -> None:
    """A file gone when its turn comes is skipped with a log line, not retried."""
    inbox = tmp_path / "inbox"
    app = App()
    release = asyncio.Event()
    keys: list[str] = []

    @app.on_file(inbox, concurrency=1)
    async def handle(event: S3Event, context: Any) -> None:
        keys.append(event.key)
        await release.wait()

    platform = await start_platform(app)
    received = 'fnplane_async_events_received_total{function="handle"} 2.0'
    with capture_logs() as logs:
        (inbox / "first.txt").write_text("1")
        await wait_for(lambda: keys == ["first.txt"])
        (inbox / "second.txt").write_text("2")
        await wait_for(lambda: received in platform.invoker.metrics.render().decode())
        (inbox / "second.txt").unlink()
        release.set()
        await wait_for(
            lambda: any(log["event"] == "files.skipped_missing" for log in logs)
        )
    assert keys == ["first.txt"]


def stored_events(settings: Settings) -> int:
    """How many events the SQLite store holds."""
    with closing(sqlite3.connect(Path(settings.state_dir) / "asyncq.sqlite3")) as db:
        count: int = db.execute("SELECT count(*) FROM events").fetchone()[0]
    return count


async def test_a_file_to_move_runs_without_a_store_write_and_waits_in_its_folder(
    start_platform: Any, tmp_path: Path, settings: Settings
) -> None:
    """A file moved or deleted after success is its own durable record: it
    is not stored before its attempt, and while the function is busy the
    rest of a burst waits in the folder, not in memory (at most twice the
    concurrency is taken in). A file left in place is stored."""
    inbox, kept = tmp_path / "inbox", tmp_path / "kept"
    app = App()
    release = asyncio.Event()
    handled: list[str] = []

    @app.on_file(inbox, concurrency=1)
    async def busy(event: S3Event, context: Any) -> None:
        await release.wait()
        handled.append(event.key)

    @app.on_file(kept, disposition="leave", concurrency=1)
    async def keep(event: S3Event, context: Any) -> None:
        await release.wait()

    platform = await start_platform(app)
    registry = platform.invoker.metrics.registry
    for number in range(300):
        (inbox / f"{number:03d}.txt").write_text("x")
    (kept / "kept.txt").write_text("x")
    received = {"function": "busy"}
    await wait_for(
        lambda: (
            registry.get_sample_value("fnplane_async_events_received_total", received)
            == 2
        )
    )
    await asyncio.sleep(0.5)  # time enough for the burst to be noticed
    assert registry.get_sample_value("fnplane_async_events_queued", received) == 2
    assert len(names(inbox)) == 300
    await wait_for(lambda: stored_events(settings) == 1)  # the left file only

    release.set()
    await wait_for(lambda: len(handled) == 300)
    assert sorted(handled) == names(inbox / "processed")


async def test_a_file_waiting_for_a_retry_over_a_restart_runs_once_more(
    start_platform: Any, tmp_path: Path, settings: Settings
) -> None:
    """A file whose retry is stored when the platform stops is delivered from
    the store after the restart, once, as its second attempt: the scan at
    start does not queue it again."""
    inbox = tmp_path / "inbox"
    attempts: list[int] = []

    def build(fail: bool) -> App:
        app = App()

        @app.on_file(inbox, backoff=Backoff(base=1.0, cap=1.0))
        def handle(event: S3Event, context: Any) -> None:
            attempts.append(context.attempt)
            if fail:
                raise RuntimeError("not yet")

        return app

    first = await start_platform(build(fail=True))
    (inbox / "order.json").write_text("{}")
    await wait_for(lambda: stored_events(settings) == 1)
    await first.stop()
    assert attempts == [1]

    await start_platform(build(fail=False), settings)
    await wait_for(lambda: names(inbox / "processed") == ["order.json"])
    await asyncio.sleep(0.3)  # a second delivery would have started by now
    assert attempts == [1, 2]


@pytest.mark.parametrize("disposition", ["move", "delete"])
async def test_a_file_rewritten_while_its_handler_runs_is_handled_again(
    start_platform: Any, tmp_path: Path, disposition: str
) -> None:
    """The version written during the run is not moved or deleted as if it
    had been handled: it runs next, and only then is disposed of."""
    inbox = tmp_path / "inbox"
    app = App()
    contents: list[str] = []
    running, rewritten = threading.Event(), threading.Event()

    @app.on_file(inbox, disposition=disposition)
    def handle(event: S3Event, context: Any) -> None:
        contents.append(event.read_bytes().decode())
        running.set()
        rewritten.wait(5)

    await start_platform(app)
    with capture_logs() as logs:
        (inbox / "report.txt").write_text("draft")
        await asyncio.to_thread(running.wait, 5)
        (inbox / "report.txt").write_text("final")
        await asyncio.sleep(0.2)  # the loop reads the close of "final"
        rewritten.set()
        await wait_for(lambda: len(contents) == 2 and not names(inbox), 5.0)
    assert contents == ["draft", "final"]
    if disposition == "move":
        assert names(inbox / "processed") == ["report.txt"]
        assert (inbox / "processed" / "report.txt").read_text() == "final"
    assert any(log["event"] == "files.written_again" for log in logs)
    assert not any(log["event"] == "files.skipped_missing" for log in logs)


async def test_a_file_rewritten_during_its_last_failing_attempt_runs_again(
    start_platform: Any, tmp_path: Path
) -> None:
    """The new version is not moved to failed/ for the old one's failure."""
    inbox = tmp_path / "inbox"
    app = App()
    contents: list[str] = []
    running, rewritten = threading.Event(), threading.Event()

    @app.on_file(inbox, retries=0)
    def handle(event: S3Event, context: Any) -> None:
        contents.append(event.read_bytes().decode())
        if contents == ["draft"]:
            running.set()
            rewritten.wait(5)
            raise RuntimeError("draft refused")

    await start_platform(app)
    with capture_logs() as logs:
        (inbox / "report.txt").write_text("draft")
        await asyncio.to_thread(running.wait, 5)
        (inbox / "report.txt").write_text("final")
        await asyncio.sleep(0.2)
        rewritten.set()
        await wait_for(lambda: names(inbox / "processed") == ["report.txt"], 5.0)
    assert contents == ["draft", "final"]
    assert names(inbox / "failed") == []
    replaced = [log for log in logs if log["event"] == "files.failed_version_replaced"]
    assert replaced[0]["error"]["errorMessage"] == "draft refused"


async def test_a_file_rewritten_while_it_waits_for_a_retry_runs_as_its_new_version(
    start_platform: Any, tmp_path: Path
) -> None:
    """The waiting retry of the old version is skipped as replaced, and the
    new version runs at once, not at the next periodic scan."""
    inbox = tmp_path / "inbox"
    app = App()
    contents: list[str] = []

    @app.on_file(inbox, backoff=Backoff(base=1.0, cap=1.0))
    def handle(event: S3Event, context: Any) -> None:
        contents.append(event.read_bytes().decode())
        if contents == ["draft"]:
            raise RuntimeError("not ready")

    await start_platform(app)
    with capture_logs() as logs:
        (inbox / "report.txt").write_text("draft")
        await wait_for(lambda: contents == ["draft"])
        (inbox / "report.txt").write_text("final")
        await wait_for(lambda: names(inbox / "processed") == ["report.txt"], 5.0)
        await asyncio.sleep(1.5)  # the retry's turn has come and gone
    assert contents == ["draft", "final"]
    assert (inbox / "processed" / "report.txt").read_text() == "final"
    assert any(log["event"] == "files.skipped_replaced" for log in logs)


async def test_missing_folder_is_created_or_refused(
    start_platform: Any, tmp_path: Path, settings: Settings
) -> None:
    """A missing folder is created by default; with create=False start fails."""
    created = tmp_path / "new" / "inbox"
    app = App()

    @app.on_file(created)
    def handle(event: S3Event, context: Any) -> None:
        return None

    await start_platform(app)
    assert created.is_dir()

    strict = App()

    @strict.on_file(tmp_path / "absent", create=False)
    def handle_strict(event: S3Event, context: Any) -> None:
        return None

    platform = Platform(strict, settings)
    try:
        with pytest.raises(FnplaneError, match="does not exist"):
            await platform.start()
    finally:
        await platform.stop()


@pytest.mark.parametrize("how", ["removed", "renamed", "replaced_at_once"])
async def test_a_watched_folder_removed_or_renamed_is_watched_again_when_back(
    start_platform: Any, tmp_path: Path, how: str
) -> None:
    """Files written into the folder once it is back fire at once (not at
    the next 30 s scan); files written into the renamed folder are not
    taken for files of the watched path."""
    inbox = tmp_path / "inbox"
    app, keys = key_recorder(inbox)

    await start_platform(app)
    with capture_logs() as logs:
        if how == "renamed":
            inbox.rename(tmp_path / "old")
            (tmp_path / "old" / "left.txt").write_text("not watched")
        else:
            shutil.rmtree(inbox)
        if how != "replaced_at_once":
            await wait_for(
                lambda: any(log["event"] == "files.folder_gone" for log in logs)
            )
        inbox.mkdir()
        await wait_for(lambda: any(log["event"] == "files.folder_back" for log in logs))
        (inbox / "back.txt").write_text("watched")
        await wait_for(lambda: keys == ["back.txt"], 5.0)
    assert not any(log["event"] == "files.skipped_missing" for log in logs)


async def refused_start(app: App, settings: Settings, match: str) -> None:
    """Starting ``app``'s platform fails with a FnplaneError matching ``match``."""
    platform = Platform(app, settings)
    try:
        with pytest.raises(FnplaneError, match=match):
            await platform.start()
    finally:
        await platform.stop()


async def test_a_processed_folder_files_cannot_be_moved_into_is_refused_at_start(
    tmp_path: Path, settings: Settings
) -> None:
    """A file where processed/ should be, or a processed= folder on another
    filesystem, would leave every handled file in place to run again at each
    scan: the platform refuses to start, naming the folder."""
    blocked = App()
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "processed").write_text("not a folder")

    @blocked.on_file(tmp_path / "blocked")
    def handle(event: S3Event, context: Any) -> None:
        return None

    await refused_start(blocked, settings, r"processed folder .* is not a folder")

    dangling = App()
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "failed").symlink_to(tmp_path / "nowhere")

    @dangling.on_file(tmp_path / "dangling")
    def handle_dangling(event: S3Event, context: Any) -> None:
        return None

    await refused_start(dangling, settings, r"failed folder .* is not a folder")

    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or elsewhere.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move files across")
    across = App()

    @across.on_file(tmp_path / "across", failed=str(elsewhere / "fnplane-failed"))
    def handle_across(event: S3Event, context: Any) -> None:
        return None

    await refused_start(across, settings, r"failed folder .* another filesystem")
    assert not (tmp_path / "across").exists()  # refused before it was made


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
async def test_a_file_whose_disposition_fails_is_not_run_again_by_each_scan(
    start_platform: Any, tmp_path: Path, outcome: str
) -> None:
    """A file that cannot be moved to processed/ (or, after its last
    failure, to failed/) stays in the folder, logged; the scans that find
    it again do not run it again."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    app = App()
    runs: list[str] = []
    folders = {"processed" if outcome == "succeeds" else "failed": str(done)}
    logged = {"succeeds": "files.disposition_failed", "fails": "files.fail_move_failed"}

    @app.on_file(inbox, settle=0.05, retries=0, **folders)
    def handle(event: S3Event, context: Any) -> None:
        runs.append(event.key)
        if outcome == "fails":
            raise RuntimeError("refused")

    platform = await start_platform(app)
    (inbox / "first.txt").write_text("1")
    await wait_for(lambda: "first.txt" in names(done))
    shutil.rmtree(done)
    done.write_text("in the way")  # after the start check
    with capture_logs() as logs:
        (inbox / "second.txt").write_text("2")
        await wait_for(lambda: runs == ["first.txt", "second.txt"])
        await wait_for(lambda: any(log["event"] == logged[outcome] for log in logs))
        watch = next(s for s in platform.sources if hasattr(s, "watches")).watches[0]
        for _ in range(3):
            watch.request_scan("test")
            await asyncio.sleep(0.2)
    assert runs == ["first.txt", "second.txt"]
    assert (inbox / "second.txt").read_text() == "2"


def test_bad_file_options_fail_at_decoration(tmp_path: Path) -> None:
    """Unknown events, dispositions and settle values are refused with choices."""
    app = App()
    with pytest.raises(RegistrationError, match="events must be some of"):
        app.on_file(tmp_path, events=("changed",))
    with pytest.raises(RegistrationError, match="disposition must be one of"):
        app.on_file(tmp_path, disposition="archive")
    with pytest.raises(RegistrationError, match="settle must be more than 0"):
        app.on_file(tmp_path, settle=0)
    with pytest.raises(RegistrationError, match="retries must be"):
        app.on_file(tmp_path, retries=-1, name="f")(lambda event, context: None)


async def test_a_folder_another_process_watches_gets_a_warning(
    start_platform: Any, tmp_path: Path
) -> None:
    """Two processes watching one folder would both run each file: the
    second to start says so, naming the folder."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fcntl.flock(os.open({str(inbox)!r}, os.O_RDONLY), fcntl.LOCK_EX)
            print("held", flush=True)
            sys.stdin.read()
        """),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert other.stdout is not None and other.stdin is not None
    assert await other.stdout.readline() == b"held\n"
    app = App()

    @app.on_file(inbox)
    def handle(event: S3Event, context: Any) -> None:
        return None

    @app.on_file(tmp_path / "own")
    def alone(event: S3Event, context: Any) -> None:
        return None

    try:
        with capture_logs() as logs:
            await start_platform(app)
    finally:
        other.stdin.close()
        await other.wait()
    warnings = [log for log in logs if log["event"] == "files.folder_watched_elsewhere"]
    assert [log["folder"] for log in warnings] == [str(inbox)]


async def test_two_functions_on_one_folder_each_get_their_files(
    start_platform: Any, tmp_path: Path
) -> None:
    """Each trigger on a shared folder fires for its own patterns (the
    kernel gives the folder one watch). The folder lock is the process's,
    taken once a folder: two of its own triggers are not another process."""
    inbox = tmp_path / "inbox"
    app = App()
    seen: list[tuple[str, str]] = []

    @app.on_file(inbox, patterns=("*.txt",), recursive=True)
    def notes(event: S3Event, context: Any) -> None:
        seen.append(("notes", event.key))

    # Watched second: it must not take the new-folder events from the
    # recursive trigger's watch of the same folder.
    @app.on_file(inbox, patterns=("*.csv",))
    def tables(event: S3Event, context: Any) -> None:
        seen.append(("tables", event.key))

    with capture_logs() as logs:
        await start_platform(app)
        await asyncio.sleep(0.3)  # the start scan is over: events must fire
        (inbox / "a.csv").write_text("1,2")
        (inbox / "b.txt").write_text("hello")
        (inbox / "sub").mkdir()
        await asyncio.sleep(0.1)  # the new subfolder gets its watch
        (inbox / "sub" / "c.txt").write_text("below")
        await wait_for(lambda: len(seen) == 3, 5.0)
    assert sorted(seen) == [("notes", "b.txt"), ("notes", "sub/c.txt"),
                            ("tables", "a.csv")]  # fmt: skip
    assert not [log for log in logs if log["event"] == "files.folder_watched_elsewhere"]


async def test_a_recursive_trigger_fires_a_file_once_it_is_written_not_created(
    start_platform: Any, tmp_path: Path
) -> None:
    """A recursive watch asks the kernel for creations (of folders): a file
    created and written in two steps fires once, complete, for it and for
    another trigger sharing the folder."""
    inbox = tmp_path / "inbox"
    app = App()
    seen: list[tuple[str, str]] = []

    @app.on_file(inbox, patterns=("*.csv",), recursive=True)
    def tables(event: S3Event, context: Any) -> None:
        seen.append((event.key, event.read_bytes().decode()))

    @app.on_file(inbox, patterns=("*.txt",))
    def notes(event: S3Event, context: Any) -> None:
        seen.append((event.key, event.read_bytes().decode()))

    await start_platform(app)
    await asyncio.sleep(0.3)  # the start scan is over: events must fire
    (inbox / "sub").mkdir()
    await asyncio.sleep(0.1)
    for name in ("a.csv", "b.txt", "sub/c.csv"):
        with (inbox / name).open("w") as file:
            file.write("head,")
            file.flush()
            await asyncio.sleep(0.3)
            file.write("rest")
    await wait_for(lambda: len(seen) >= 3, 5.0)
    await asyncio.sleep(0.3)
    assert sorted(seen) == [
        ("a.csv", "head,rest"), ("b.txt", "head,rest"), ("sub/c.csv", "head,rest")
    ]  # fmt: skip


async def test_a_subfolder_moved_within_or_out_of_a_recursive_watch_keeps_no_old_path(
    start_platform: Any, tmp_path: Path
) -> None:
    """The folders below a moved subfolder are watched at their new paths
    only, or not at all once outside: no file is reported at a path it is
    not at."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "s1" / "s2").mkdir(parents=True)
    app, keys = key_recorder(inbox, recursive=True)

    await start_platform(app)
    await asyncio.sleep(0.3)  # the start scan is over: events must fire
    with capture_logs() as logs:
        (inbox / "s1").rename(inbox / "moved")
        await asyncio.sleep(0.3)
        (inbox / "moved" / "s2" / "b.txt").write_text("inside")
        await wait_for(lambda: keys == ["moved/s2/b.txt"], 5.0)
        (inbox / "moved").rename(outside)
        await asyncio.sleep(0.3)
        (outside / "s2" / "c.txt").write_text("outside")
        await asyncio.sleep(0.5)
    assert keys == ["moved/s2/b.txt"]
    assert not [log for log in logs if log["event"] == "files.skipped_missing"]


PERMISSION_APP = """
from pathlib import Path
from fnplane import App

app = App()
HERE = Path(__file__).parent


@app.on_file(HERE / "inbox", retries=0)
def handle(event, context):
    with open(HERE / "ran.txt", "a") as ran:
        ran.write(event.key + "\\n")
"""


def test_a_file_the_platform_cannot_read_moves_to_failed_with_a_record(
    tmp_path: Path,
) -> None:
    """Logged, moved to failed/ with its error record, and never given to
    the handler. Root reads every file, so as root the platform runs
    without the capabilities that let it (setpriv)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop DAC capabilities")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "app.py").write_text(PERMISSION_APP)
    (inbox / "secret.txt").write_text("not for you")
    (inbox / "secret.txt").chmod(0)
    (inbox / "open.txt").write_text("hello")
    log = tmp_path / "platform.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*prefix, *fnplane_command(), "run", str(tmp_path / "app.py"),
             "--port", str(free_port()), "--state-dir", str(tmp_path / "state"),
             "--log-format", "json"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        failed = inbox / "failed"
        wait_until(
            lambda: (
                names(failed) == ["secret.txt", "secret.txt.error.json"]
                and names(inbox / "processed") == ["open.txt"]
            ),
            "the unreadable file in failed/, the other in processed/",
        )
    finally:
        process.terminate()
        process.wait(10)
    record = json.loads((failed / "secret.txt.error.json").read_text())
    assert record["errorType"] == "PermissionError"
    assert (tmp_path / "ran.txt").read_text() == "open.txt\n"
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "files.permission_denied" in events
