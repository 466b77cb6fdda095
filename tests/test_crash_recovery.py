"""Nothing accepted is lost when ``fnplane run`` is killed with SIGKILL.

Each test runs the platform as a real subprocess, kills it with ``kill -9``
in the middle of the work, starts it again on the same state folder and
waits until every file or event is handled (at least once).
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.processes import FnplaneProcess, wait_until

FUNCTIONS = textwrap.dedent(
    """
    import asyncio
    import os

    from fnplane import App

    app = App()
    LOG = os.environ["CRASH_LOG"]


    def record(line):
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(line + "\\n")


    @app.on_file(os.environ["CRASH_INBOX"], settle=0.2)
    def on_drop(event, context):
        record("file " + event.key)


    @app.http("POST", "/work", concurrency=2)
    async def work(event, context):
        await asyncio.sleep(0.005)
        record("http " + str(event.json()["n"]))
    """
)


class RunningPlatform(FnplaneProcess):
    """The crash functions in ``fnplane run``, restartable on one state folder."""

    def __init__(self, tmp: Path) -> None:
        functions = tmp / "crash_functions.py"
        functions.write_text(FUNCTIONS)
        self.log = tmp / "handled.log"
        self.inbox = tmp / "inbox"
        env = {"CRASH_LOG": str(self.log), "CRASH_INBOX": str(self.inbox)}
        super().__init__(tmp, functions, env)

    def handled(self, kind: str) -> set[str]:
        """Names or numbers the handler recorded for ``kind`` (file or http)."""
        if not self.log.exists():
            return set()
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return {line.split(" ", 1)[1] for line in lines if line.startswith(kind + " ")}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    """A subprocess platform, stopped at the end of the test."""
    running = RunningPlatform(tmp_path)
    yield running
    running.stop()


def test_files_dropped_around_a_kill_are_all_handled(
    platform: RunningPlatform,
) -> None:
    """kill -9 in the middle of a 500-file drop, then restart: every file is
    handled and ends in processed/, none is lost."""
    platform.inbox.mkdir()
    platform.start()
    names = [f"drop {number:03d}.txt" for number in range(500)]
    for name in names[:250]:
        (platform.inbox / name).write_text(name)
    platform.kill()
    for name in names[250:]:
        (platform.inbox / name).write_text(name)

    platform.start()
    processed = platform.inbox / "processed"
    wait_until(lambda: platform.handled("file") >= set(names), "every file handled")
    wait_until(
        lambda: processed.is_dir() and len(list(processed.iterdir())) == 500,
        "every file in processed/",
    )
    assert [p for p in platform.inbox.iterdir() if p.is_file()] == []


def test_kill_in_the_middle_of_a_burst_loses_no_file(
    platform: RunningPlatform,
) -> None:
    """kill -9 while a 3,000-file burst is being accepted and handled in
    group commits, then restart: every file is handled, none is left."""
    platform.inbox.mkdir()
    platform.start()
    names = [f"burst {number:04d}.txt" for number in range(3000)]
    # Killed while the burst is still being written once 300 files are
    # handled: waiting for the whole burst first let a fast platform finish
    # it before the kill.
    killed = False
    for number, name in enumerate(names):
        (platform.inbox / name).write_text(name)
        if not killed and number % 50 == 0 and len(platform.handled("file")) >= 300:
            platform.kill()
            killed = True
    if not killed:
        wait_until(lambda: len(platform.handled("file")) >= 300, "the burst under way")
        platform.kill()
    assert len(platform.handled("file")) < 3000, "the kill came too late to prove it"

    platform.start()
    processed = platform.inbox / "processed"
    wait_until(lambda: platform.handled("file") >= set(names), "every file handled")
    wait_until(
        lambda: len(list(processed.iterdir())) == 3000, "every file in processed/"
    )
    assert [p for p in platform.inbox.iterdir() if p.is_file()] == []


def test_http_events_accepted_before_a_kill_are_delivered(
    platform: RunningPlatform,
) -> None:
    """Every Event invocation answered 202 before kill -9 runs after restart."""
    platform.start()
    send_events(platform, 200)
    platform.kill()
    assert len(platform.handled("http")) < 200, "the kill came too late to prove it"

    platform.start()
    expected = {str(number) for number in range(200)}
    wait_until(lambda: platform.handled("http") >= expected, "every event handled")


def test_events_finished_around_a_kill_are_deleted_after_the_restart(
    platform: RunningPlatform,
) -> None:
    """Finished events are deleted in batches: kill -9 while they are, restart,
    stop gracefully: every event was handled and the store holds none, so an
    event finished but not deleted at the kill was delivered again and then
    deleted, and the last batch of deletes was written at shutdown."""
    platform.start()
    send_events(platform, 300)
    wait_until(lambda: len(platform.handled("http")) >= 50, "deliveries under way")
    platform.kill()
    assert len(platform.handled("http")) < 300, "the kill came too late to prove it"

    platform.start()
    expected = {str(number) for number in range(300)}
    wait_until(lambda: platform.handled("http") >= expected, "every event handled")
    assert platform.stop() == 0
    database = platform.tmp / f"state-{platform.name}" / "asyncq.sqlite3"
    with closing(sqlite3.connect(database)) as store:
        assert store.execute("SELECT count(*) FROM events").fetchone() == (0,)


def send_events(platform: RunningPlatform, count: int) -> None:
    """POST ``count`` Event invocations to /work; each must be accepted (202)."""
    connection = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=10)
    for number in range(count):
        connection.request(
            "POST",
            "/work",
            body=json.dumps({"n": number}),
            headers={
                "X-Fnplane-Invocation-Type": "Event",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 202
    connection.close()
