"""``fnplane run`` as a real subprocess, for crash and shutdown tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT_S = 20.0
DONE_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fnplane_command() -> list[str]:
    """The venv's ``fnplane`` console script (or the module, if not installed)."""
    script = Path(sys.executable).with_name("fnplane")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "fnplane.cli"]


class FnplaneProcess:
    """``fnplane run TARGET`` in a subprocess on its own port and state folder,
    restartable; its output goes to ``platform-<name>-<n>.log`` in ``tmp``."""

    def __init__(
        self, tmp: Path, target: Path, env: dict[str, str], name: str = "p"
    ) -> None:
        self.tmp = tmp
        self.target = target
        self.env = env
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until the platform answers /health."""
        self.starts += 1
        log = self.tmp / f"platform-{self.name}-{self.starts}.log"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    *fnplane_command(), "run", str(self.target),
                    "--port", str(self.port),
                    "--state-dir", str(self.tmp / f"state-{self.name}"),
                    "--log-level", "warning",
                ],
                cwd=self.tmp, env={**os.environ, **self.env},
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"fnplane run exited during start: {log.read_text()}"
            )
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/health", timeout=1
                )
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("fnplane run did not answer /health in time")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no drain, nothing flushed."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int | None:
        """Stop gracefully if still running; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until true, or fail saying ``what``."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {DONE_TIMEOUT_S} s: {what}")
        time.sleep(0.05)


def handled_lines(log: Path) -> list[str]:
    """Every value the handlers recorded in ``log``, repeats included."""
    if not log.exists():
        return []
    return log.read_text(encoding="utf-8").split()


def kill_one_of_two_consumers(
    tmp: Path,
    functions: Path,
    env: dict[str, str],
    log: Path,
    records: int,
    settled: Callable[[], bool],
) -> list[str]:
    """Two ``fnplane run`` consumers of one group; ``kill -9`` one once half
    the records are handled; wait until the survivor has handled every record
    and ``settled()`` (offsets committed, nothing pending). Returns every
    handled value, repeats included; the survivor must exit 0."""
    victim = FnplaneProcess(tmp, functions, env, name="victim")
    survivor = FnplaneProcess(tmp, functions, env, name="survivor")
    try:
        victim.start()
        survivor.start()
        wait_until(lambda: len(handled_lines(log)) >= records // 2, "half the records")
        victim.kill()
        assert len(set(handled_lines(log))) < records, "the kill came too late"

        expected = {str(number) for number in range(records)}
        wait_until(lambda: set(handled_lines(log)) >= expected, "every record handled")
        wait_until(settled, "the group settled (committed, nothing pending)")
    finally:
        victim.stop()
        assert survivor.stop() == 0
    return handled_lines(log)
