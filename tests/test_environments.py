"""Process environments: real worker processes, killed, replaced and reaped.

The handlers live at module level: a worker imports this module to find them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from fnplane import App, RegistrationError
from fnplane.config import Settings, SettingsError
from fnplane.environments import worker_spec
from fnplane.invoke import Invoker, Outcome
from fnplane.loader import load_app
from fnplane.runner import Platform

WAIT_S = 20.0

app = App("environments")
web = App("environments-web")
shutdown_file: Path | None = None


def flaky_init_marker() -> Path:
    # The fork server is every worker's parent: its pid names this session.
    return Path(tempfile.gettempdir()) / f"fnplane-flaky-init-{os.getppid()}"


def fail_first_init() -> None:
    print("initialising")  # output before the worker is ready
    marker = flaky_init_marker()
    if not marker.exists():
        marker.touch()
        raise RuntimeError("first init fails")


def record_shutdown() -> None:
    if shutdown_file is not None:
        shutdown_file.write_text(f"shutdown in {os.getpid()}")


@app.function(isolation="process")
def describe(event: Any, context: Any) -> dict[str, Any]:
    print("hello from the worker")
    print("and its stderr", file=sys.stderr)
    context.logger.info("logged in the worker")
    return {
        "pid": os.getpid(),
        "cold": context.cold_start,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
        "log_stream": context.log_stream_name,
    }


@app.function(isolation="process", timeout=0.5)
def spin(event: Any, context: Any) -> str:
    if event == "stop":
        return "stopped"
    while True:
        pass


@app.function(isolation="process")
def exits(event: Any, context: Any) -> None:
    os._exit(3)


@app.function(isolation="process")
def segfaults(event: Any, context: Any) -> None:
    ctypes.string_at(0)


@app.function(isolation="process", memory=128)
def hog(event: Any, context: Any) -> int:
    return len(bytearray(event * 1024 * 1024))


@app.function(isolation="process", min_warm=1)
def provisioned(event: Any, context: Any) -> bool:
    return bool(context.cold_start)


@app.function(isolation="process", idle_timeout=0.2)
def brief(event: Any, context: Any) -> int:
    return os.getpid()


@app.function(isolation="process", init=fail_first_init)
def flaky(event: Any, context: Any) -> str:
    flaky_init_marker().unlink(missing_ok=True)
    return "initialised"


@app.function(isolation="process", shutdown=record_shutdown)
def remembers(event: Any, context: Any) -> int:
    global shutdown_file
    shutdown_file = Path(event)
    return os.getpid()


@web.function(isolation="process", shutdown=record_shutdown)
def finishes(event: Any, context: Any) -> str:
    global shutdown_file
    shutdown_file = Path(event)
    while not (shutdown_file.parent / "go").exists():
        time.sleep(0.01)
    return "finished"


inline_inits: list[int] = []


def fail_first_inline_init() -> None:
    inline_inits.append(1)
    if len(inline_inits) == 1:
        raise RuntimeError("first inline init fails")


@app.function(isolation="inline", min_warm=1, init=fail_first_inline_init)
def inline_provisioned(event: Any, context: Any) -> bool:
    return bool(context.cold_start)


@app.function(isolation="process")
def unpicklable(event: Any, context: Any) -> Any:
    return lambda: None


@app.function(isolation="process")
async def relays(event: Any, context: Any) -> Any:
    return await context.invoke("describe", {})


@app.function(isolation="process")
async def queues(event: Any, context: Any) -> str:
    request_id: str = await context.invoke_async("describe", {"queued": True})
    return request_id


@web.http("POST", "/burn", isolation="process", timeout=60)
def burn(event: Any, context: Any) -> int:
    folder = Path(event.json()["folder"])
    (folder / "started").touch()
    rounds = 0
    while not (folder / "stop").exists():
        rounds += sum(range(10_000)) and 1
    return rounds


@web.http("GET", "/echo")
def echo(event: Any, context: Any) -> str:
    return "echo"


async def wait_until(predicate: Any, what: str) -> None:
    """Wait for ``predicate()`` to hold, failing after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def metric(invoker: Invoker, name: str, **labels: str) -> float:
    value = invoker.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_cold_start_then_warm_in_the_same_worker() -> None:
    """The first invocation forks a worker and runs Init; the second reuses it."""
    invoker = Invoker(app, Settings())
    with capture_logs() as logs:
        first = await invoker.invoke("describe", {})
        second = await invoker.invoke("describe", {})
    await invoker.shutdown()

    assert first.ok and second.ok
    assert first.cold_start and first.value["cold"] is True
    assert not second.cold_start and second.value["cold"] is False
    assert first.value["pid"] == second.value["pid"] != os.getpid()
    assert second.value["request_id"] == second.request_id
    assert 0 < second.value["remaining_ms"] <= 30_000
    assert second.value["log_stream"] == "process"
    printed = [e for e in logs if e["event"] == "function.output"]
    assert {
        "request_id": first.request_id,
        "line": "hello from the worker",
    }.items() <= printed[0].items()
    assert (
        metric(invoker, "fnplane_environments", function="describe", state="busy") == 0
    )


async def test_timeout_kills_the_worker_and_the_next_invocation_succeeds() -> None:
    """A sync handler looping forever times out; its worker is killed and replaced."""
    invoker = Invoker(app, Settings())
    timed_out = await invoker.invoke("spin", "loop")
    after = await invoker.invoke("spin", "stop")
    kills = metric(
        invoker, "fnplane_environment_kills_total", function="spin", cause="timeout"
    )
    await invoker.shutdown()

    assert timed_out.outcome is Outcome.TIMEOUT
    assert timed_out.error is not None
    assert timed_out.error.message == "Task timed out after 0.50 seconds"
    assert after.ok and after.value == "stopped" and after.cold_start
    assert kills == 1


async def test_exit_and_segfault_fail_only_their_invocation() -> None:
    """os._exit(3) and a segfault each fail their own invocation with
    Runtime.ExitError; the platform keeps serving."""
    invoker = Invoker(app, Settings())
    exited = await invoker.invoke("exits")
    crashed = await invoker.invoke("segfaults")
    still = await invoker.invoke("describe", {})
    await invoker.shutdown()

    assert exited.outcome is Outcome.UNHANDLED_ERROR and exited.error is not None
    assert exited.error.error_type == "Runtime.ExitError"
    assert "exit status 3" in exited.error.message
    assert crashed.error is not None and crashed.error.error_type == "Runtime.ExitError"
    assert "SIGSEGV" in crashed.error.message
    assert still.ok


async def test_memory_limit_exceeded_fails_as_out_of_memory() -> None:
    """Allocating past ``memory`` fails the invocation as out of memory and
    replaces the worker; a small allocation then succeeds."""
    invoker = Invoker(app, Settings())
    failed = await invoker.invoke("hog", 512)
    fine = await invoker.invoke("hog", 16)
    await invoker.shutdown()

    assert failed.error is not None and failed.error.error_type == "Runtime.OutOfMemory"
    assert "hog" in failed.error.message
    assert fine.ok and fine.value == 16 * 1024 * 1024 and fine.cold_start


async def test_min_warm_gives_no_cold_start_and_idle_workers_are_reaped() -> None:
    """min_warm workers are initialised at start; idle ones past idle_timeout stop."""
    invoker = Invoker(app, Settings())
    await invoker.start_environments()
    warm = await invoker.invoke("provisioned")
    brief_run = await invoker.invoke("brief")
    pool = invoker.process_pool(app.get("brief"))
    assert pool is not None
    await wait_until(lambda: pool.size == 0, "the idle worker to be reaped")
    kills = metric(
        invoker, "fnplane_environment_kills_total", function="brief", cause="idle"
    )
    await invoker.shutdown()

    assert warm.ok and warm.value is False and warm.init_duration_ms is None
    assert brief_run.ok and brief_run.cold_start
    assert kills == 1


async def test_failed_init_is_retried_and_shutdown_hooks_run_in_workers(
    tmp_path: Path,
) -> None:
    """A failed Init fails its invocation and is tried again on the next one;
    at shutdown the worker runs its function's shutdown hooks."""
    invoker = Invoker(app, Settings())
    first = await invoker.invoke("flaky")
    second = await invoker.invoke("flaky")
    marker = tmp_path / "shutdown.txt"
    worker_pid = (await invoker.invoke("remembers", str(marker))).value
    await invoker.shutdown()

    assert first.outcome is Outcome.INIT_ERROR and first.error is not None
    assert "first init fails" in first.error.message
    assert second.ok and second.value == "initialised"
    assert marker.read_text() == f"shutdown in {worker_pid}"


async def test_platform_stop_drains_workers_then_runs_their_shutdown_hooks(
    tmp_path: Path,
) -> None:
    """Stopping the platform lets a running process invocation finish within
    the grace period, then the worker runs its shutdown hooks and ends."""
    platform = Platform(web, Settings(port=0, grace=10, state_dir=str(tmp_path)))
    await platform.start()
    invoker = platform.invoker
    marker = tmp_path / "shutdown.txt"
    running = asyncio.create_task(invoker.invoke("finishes", str(marker)))
    await wait_until(lambda: invoker.in_flight == 1, "the invocation to start")
    stopping = asyncio.create_task(platform.stop())
    await wait_until(lambda: platform.stopping, "the stop to begin")
    assert not running.done(), "the invocation is still running"
    (tmp_path / "go").touch()
    await stopping

    assert (await running).value == "finished"
    assert marker.read_text().startswith("shutdown in ")


async def test_min_warm_on_an_inline_function_runs_its_init_at_start() -> None:
    """min_warm on an inline function runs Init at start (retried when it
    fails), so its first invocation is warm."""
    invoker = Invoker(app, Settings())
    inline_inits.clear()
    await invoker.start_environments()  # the first Init fails, logged
    first = await invoker.invoke("inline_provisioned")  # Init again: cold
    fresh = Invoker(app, Settings())
    await fresh.start_environments()
    warm = await fresh.invoke("inline_provisioned")
    await invoker.shutdown()
    await fresh.shutdown()

    assert first.ok and first.cold_start
    assert warm.ok and not warm.cold_start and warm.value is False


async def test_unpicklable_result_names_the_function() -> None:
    """A result that cannot cross the process boundary is a clear error."""
    invoker = Invoker(app, Settings())
    result = await invoker.invoke("unpicklable")
    await invoker.shutdown()

    assert result.error is not None
    assert result.error.error_type == "Runtime.MarshalError"
    assert (
        "'unpicklable'" in result.error.message and "picklable" in result.error.message
    )


async def test_context_invoke_is_relayed_to_the_platform() -> None:
    """ctx.invoke inside a worker runs through the platform's Invoker."""
    invoker = Invoker(app, Settings())
    result = await invoker.invoke("relays")
    await invoker.shutdown()

    assert result.ok and result.value["pid"] != os.getpid()


async def test_context_invoke_async_is_relayed_to_the_platform(
    start_platform: Any, settings: Settings
) -> None:
    """ctx.invoke_async inside a worker queues the event on the platform's
    async queue, which then runs the target."""
    platform = await start_platform(app, settings)
    with capture_logs() as logs:
        queued = await platform.invoker.invoke("queues")
        await wait_until(
            lambda: any(
                e["event"] == "invocation.report"
                and e.get("request_id") == queued.value
                for e in logs
            ),
            "the queued invocation to run",
        )
    assert queued.ok


async def test_cpu_bound_handler_does_not_block_http(
    start_platform: Any, settings: Settings, tmp_path: Path
) -> None:
    """The HTTP echo answers while a CPU-bound process handler still runs."""
    platform = await start_platform(web, settings)
    base = f"http://127.0.0.1:{platform.port}"
    async with aiohttp.ClientSession() as session:
        burning = asyncio.create_task(
            session.post(f"{base}/burn", json={"folder": str(tmp_path)})
        )
        await wait_until((tmp_path / "started").exists, "the CPU handler to start")
        async with session.get(f"{base}/echo") as reply:
            assert reply.status == 200 and await reply.text() == "echo"
        assert not burning.done(), "the echo answered while the CPU handler ran"
        (tmp_path / "stop").touch()
        async with await burning as burned:
            assert burned.status == 200


@app.function()
def follows_the_setting(event: Any, context: Any) -> int:
    return os.getpid()


def test_process_isolation_on_a_closure_is_a_registration_error() -> None:
    """A handler a worker cannot import fails at decoration time, named."""
    local = App()

    with pytest.raises(RegistrationError, match="'inner'.*module level"):

        @local.function(isolation="process")
        def inner(event: Any, context: Any) -> None:
            return None


def test_unknown_isolation_lists_the_choices() -> None:
    """isolation accepts 'inline' or 'process' only."""
    with pytest.raises(RegistrationError, match="inline.*process"):
        App().function(isolation="thread")(describe)


def test_isolation_setting_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FNPLANE_ISOLATION sets the default; a bad value is a SettingsError."""
    monkeypatch.setenv("FNPLANE_ISOLATION", "process")
    assert Settings().isolation == "process"
    assert Settings.load().isolation == "process"
    monkeypatch.setenv("FNPLANE_ISOLATION", "sandbox")
    with pytest.raises(SettingsError, match="isolation"):
        Settings.load()


async def test_platform_default_runs_importable_handlers_in_processes() -> None:
    """Under isolation=process, a module-level handler without its own option
    runs in a worker; a closure stays inline with a warning."""
    local = App()

    @local.function()
    def closure(event: Any, context: Any) -> int:
        return os.getpid()

    invoker = Invoker(app, Settings(isolation="process"))
    local_invoker = Invoker(local, Settings(isolation="process"))
    with capture_logs() as logs:
        in_worker = await invoker.invoke("follows_the_setting")
        inline = await local_invoker.invoke("closure")
    await invoker.shutdown()
    await local_invoker.shutdown()

    assert in_worker.value != os.getpid()
    assert inline.value == os.getpid()
    fallback = [e for e in logs if e["event"] == "environment.inline_fallback"]
    assert [e["function"] for e in fallback] == ["closure"]


async def test_unpicklable_event_names_the_function() -> None:
    """An event that cannot be sent to the worker is a clear error; the
    worker keeps serving."""
    invoker = Invoker(app, Settings())
    result = await invoker.invoke("describe", {"lock": threading.Lock()})
    after = await invoker.invoke("describe", {})
    await invoker.shutdown()

    assert result.error is not None
    assert result.error.error_type == "Runtime.MarshalError"
    assert "'describe'" in result.error.message
    assert after.ok


async def test_environment_metrics_count_busy_idle_and_cold_starts() -> None:
    """Prometheus shows idle workers, cold starts and their init duration."""
    invoker = Invoker(app, Settings())
    await invoker.invoke("describe", {})
    await invoker.invoke("describe", {})
    idle = metric(invoker, "fnplane_environments", function="describe", state="idle")
    cold = metric(invoker, "fnplane_cold_starts_total", function="describe")
    inits = metric(invoker, "fnplane_init_duration_seconds_count", function="describe")
    await invoker.shutdown()

    assert (idle, cold, inits) == (1, 1, 1)


BLOCKING_APP = """
import os
import time
from pathlib import Path

from fnplane import App

app = App()


@app.http("GET", "/block", isolation="process")
def block(event, context):
    Path(os.environ["PID_FILE"]).write_text(str(os.getpid()))
    time.sleep(60)
"""


def test_workers_end_when_the_platform_is_killed(
    tmp_path: Path, unused_port: int
) -> None:
    """kill -9 of the platform ends its workers too: none goes on running a
    handler whose invocation is retried elsewhere."""
    (tmp_path / "app.py").write_text(BLOCKING_APP)
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "PID_FILE": str(pid_file)}
    fnplane = str(Path(sys.executable).with_name("fnplane"))
    server = subprocess.Popen(
        [fnplane, "run", "app.py", "--port", str(unused_port), "--state-dir", "s"],
        cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{unused_port}"
        deadline = time.monotonic() + WAIT_S
        while not answers(f"{base}/health"):
            assert time.monotonic() < deadline, "fnplane run did not start"
            time.sleep(0.05)
        assert not answers(f"{base}/block"), "the handler blocks"
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the handler did not start"
            time.sleep(0.05)
        worker_pid = int(pid_file.read_text())
        assert worker_pid != server.pid
    finally:
        server.kill()
        server.wait()

    deadline = time.monotonic() + WAIT_S
    while alive(worker_pid):
        assert time.monotonic() < deadline, "the worker outlived its platform"
        time.sleep(0.05)


def answers(url: str) -> bool:
    """True when ``url`` answers within half a second."""
    try:
        with urllib.request.urlopen(url, timeout=0.5):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_file_loaded_by_path_runs_in_a_worker_under_its_stem(
    tmp_path: Path,
) -> None:
    """A functions file ``fnplane run`` loads by path is found by workers
    (and preloaded by the fork server) under its file's stem."""
    folder = tmp_path / "stemmed_functions"
    folder.mkdir()
    (folder / "stemmed_pid.py").write_text(
        "import os\nfrom fnplane import App\napp = App()\n\n"
        "@app.function()\ndef stemmed(event, context):\n    return os.getpid()\n"
    )
    loaded = load_app(str(folder))
    spec = worker_spec(loaded.get("stemmed"), 10)
    invoker = Invoker(loaded, Settings(isolation="process"))
    result = await invoker.invoke("stemmed")
    await invoker.shutdown()

    assert (spec.module, spec.alias) == ("fnplane_functions.stemmed_pid", "stemmed_pid")
    assert result.ok and result.value != os.getpid()


async def test_a_switched_off_process_function_is_throttled_and_starts_no_worker() -> (
    None
):
    """Concurrency 0 throttles every invocation before any worker exists."""
    switched_off = App()
    switched_off.function(name="off", isolation="process", concurrency=0)(echo)
    invoker = Invoker(switched_off, Settings())
    result = await invoker.invoke("off", "anything")
    await invoker.shutdown()

    assert result.outcome is Outcome.THROTTLED
    labels = {"function": "off", "state": "idle"}
    registry = invoker.metrics.registry
    assert registry.get_sample_value("fnplane_environments", labels) is None
