"""The fnplane command, run as a user runs it: real processes and signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

FNPLANE = shutil.which("fnplane") or str(Path(sys.executable).parent / "fnplane")
START_TIMEOUT_S = 20.0

SLOW_APP = textwrap.dedent(
    """
    import asyncio
    import sys
    from fnplane import App

    app = App()
    stopped = []

    @app.http("GET", "/slow")
    async def slow(event, context):
        await asyncio.sleep(1.5)
        return "finished"

    @app.http("GET", "/fast")
    def fast(event, context):
        return "quick"

    @app.function(
        shutdown=lambda: print("SHUTDOWN HOOK RAN", file=sys.stderr, flush=True)
    )
    def add(event, context):
        return event["a"] + event["b"]
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "app.py").write_text(SLOW_APP)
    return tmp_path


def run_fnplane(
    *args: str, cwd: Path, timeout_s: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FNPLANE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, "FNPLANE_LOG_LEVEL": "info"},
    )  # fmt: skip


@pytest.fixture
def server(
    project: Path, unused_port: int
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    yield from serve(project, unused_port)


def serve(
    project: Path, port: int, *options: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``fnplane run`` in ``project`` until it answers /health; killed after."""
    process = subprocess.Popen(
        [FNPLANE, "run", "--port", str(port), "--grace", "5", *options],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"fnplane run did not start:\n{output}")
            time.sleep(0.05)
    yield process, url
    if process.poll() is None:
        process.kill()
    process.communicate()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(server) -> None:
    """SIGTERM during a slow request: it completes, new ones get 503, exit 0."""
    process, url = server
    assert get(f"{url}/fast") == (200, b"quick")
    result: list[tuple[int, bytes]] = []
    slow = threading.Thread(target=lambda: result.append(get(f"{url}/slow")))
    slow.start()
    time.sleep(0.4)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late_status, _ = get(f"{url}/fast") if process.poll() is None else (503, b"")
    slow.join(10)
    output, _ = process.communicate(timeout=10)
    assert result == [(200, b"finished")]
    assert late_status == 503
    assert process.returncode == 0, output
    assert "platform.stopped" in output


def test_json_log_format_holds_library_lines_too(
    project: Path, unused_port: int
) -> None:
    """A library's ``logging`` warning is a JSON line like the platform's own."""
    (project / "functions" / "noisy.py").write_text(
        "import logging\nlogging.getLogger('some.library').warning('cache is cold')\n"
    )
    served = serve(project, unused_port, "--log-format", "json")
    process, url = next(served)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)

    lines = [json.loads(line) for line in output.splitlines()]
    assert {"event": "cache is cold", "logger": "some.library"}.items() <= next(
        line for line in lines if line.get("logger") == "some.library"
    ).items()
    assert lines[-1]["event"] == "platform.stopped"


FOREVER_APP = textwrap.dedent(
    """
    import asyncio
    import time
    from fnplane import App

    app = App()

    @app.http("GET", "/async-forever", timeout=120)
    async def async_forever(event, context):
        await asyncio.sleep(60)

    @app.http("GET", "/sync-forever", timeout=120)
    def sync_forever(event, context):
        time.sleep(60)
    """
)


def test_requests_running_past_the_grace_period_are_abandoned(
    tmp_path: Path, unused_port: int
) -> None:
    """--grace bounds the stop: requests still running then are cut off (their
    connections closed), and the process exits 0 soon after."""
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "app.py").write_text(FOREVER_APP)
    served = serve(tmp_path, unused_port, "--grace", "1")
    process, url = next(served)
    outcomes: list[object] = []

    def request(path: str) -> None:
        try:
            outcomes.append(get(url + path))
        except OSError as exc:  # the connection closed without an answer
            outcomes.append(type(exc))

    clients = [
        threading.Thread(target=request, args=(path,))
        for path in ("/async-forever", "/sync-forever")
    ]
    for client in clients:
        client.start()
    time.sleep(0.5)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    stopped_in_s = time.monotonic() - stopped_at
    for client in clients:
        client.join(10)

    assert process.returncode == 0, output
    assert stopped_in_s < 5, output
    assert "platform.grace_expired" in output and "abandoned=2" in output
    assert len(outcomes) == 2 and all(o != (200, b"") for o in outcomes)


def test_second_signal_exits_at_once(server) -> None:
    process, url = server

    def cut_off_request() -> None:
        with pytest.raises(OSError):
            get(f"{url}/slow")

    slow = threading.Thread(target=cut_off_request)
    slow.start()
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=5)
    slow.join(10)
    assert process.returncode == 130
    assert time.monotonic() - started < 1.0


def test_shutdown_hooks_run_on_stop(server) -> None:
    process, url = server
    body = json.dumps({"a": 2, "b": 40}).encode()
    request = urllib.request.Request(
        f"{url}/2015-03-31/functions/add/invocations", data=body
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == b"42"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert "SHUTDOWN HOOK RAN" in output


def test_invoke_in_process_prints_the_result(project: Path) -> None:
    completed = run_fnplane("invoke", "add", "--data", '{"a": 1, "b": 2}', cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "3"


def test_invoke_reads_data_from_a_file_and_reports_failures(project: Path) -> None:
    (project / "event.json").write_text('{"a": 1}')
    completed = run_fnplane("invoke", "add", "--data", "@event.json", cwd=project)
    assert completed.returncode == 1
    assert json.loads(completed.stdout)["errorType"] == "KeyError"
    assert "add failed" in completed.stderr


def test_invoke_against_a_running_platform(server, project: Path) -> None:
    _, url = server
    completed = run_fnplane(
        "invoke", "add", "--data", '{"a": 5, "b": 5}', "--url", url, cwd=project
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "10"


def test_list_shows_functions_and_routes(project: Path) -> None:
    completed = run_fnplane("list", cwd=project)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert any(line.startswith("slow") and "GET /slow" in line for line in lines)
    assert any(line.startswith("add") and line.endswith("-") for line in lines)


def test_import_error_names_the_file_and_line_and_exits_non_zero(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(
        "from fnplane import App\napp = App()\n\nraise RuntimeError('boom')\n"
    )
    completed = run_fnplane("run", str(broken), "--port", "0", cwd=tmp_path)
    assert completed.returncode == 1
    assert "broken.py, line 4" in completed.stderr
    assert "RuntimeError: boom" in completed.stderr
    assert completed.stderr.count("\n") == 1, "one clear line, no traceback"


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text("def broken(:\n    pass\n")
    completed = run_fnplane("list", "typo.py", cwd=tmp_path)
    assert completed.returncode == 1
    assert "typo.py, line 1" in completed.stderr


def test_missing_functions_folder_is_a_clear_error(tmp_path: Path) -> None:
    completed = run_fnplane("run", "--port", "0", cwd=tmp_path)
    assert completed.returncode == 1
    assert "no ./functions folder" in completed.stderr


def test_registration_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dup.py").write_text(
        "from fnplane import App\napp = App()\n"
        "app.http('GET', '/a', name='x')(lambda e, c: 1)\n"
        "app.http('GET', '/a', name='y')(lambda e, c: 2)\n"
    )
    completed = run_fnplane("run", "dup.py", cwd=tmp_path)
    assert completed.returncode == 1
    assert "already registered by function 'x'" in completed.stderr
    assert "dup.py, line 4" in completed.stderr, "points at the user's line"


WORKFLOW_APP = textwrap.dedent(
    """
    from fnplane import App

    app = App()

    @app.function()
    def halve(event, context):
        if event["n"] % 2:
            raise ValueError(f"{event['n']} is odd")
        return {"n": event["n"] // 2}

    app.state_machine(
        "Halve",
        {"StartAt": "H", "States": {"H": {"Type": "Task", "Resource": "halve",
                                          "End": True}}},
    )
    """
)


@pytest.fixture
def workflow_server(
    tmp_path: Path, unused_port: int
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "halve.py").write_text(WORKFLOW_APP)
    yield from serve(tmp_path, unused_port)


def test_workflow_commands_start_wait_list_and_show_history(
    workflow_server: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    """start-execution --wait exits 0 only on success; executions lists both
    runs; history prints the event types in order."""
    _, url = workflow_server
    passed = run_fnplane(
        "start-execution", "Halve", "--input", '{"n": 8}', "--wait", "--url", url,
        cwd=tmp_path,
    )  # fmt: skip
    assert passed.returncode == 0, passed.stderr
    described = json.loads(passed.stdout)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"n": 4}

    failed = run_fnplane(
        "start-execution", "Halve", "--input", '{"n": 3}', "--wait", "--url", url,
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == "ValueError"

    listed = run_fnplane("executions", "--url", url, cwd=tmp_path)
    statuses = sorted(line.split("\t")[1] for line in listed.stdout.splitlines())
    assert statuses == ["FAILED", "SUCCEEDED"]

    history = run_fnplane(
        "history", described["executionArn"], "--url", url, cwd=tmp_path
    )
    types = [line.split()[1] for line in history.stdout.splitlines()]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert "TaskStateEntered" in types
    missing = run_fnplane("history", "no-such-execution", "--url", url, cwd=tmp_path)
    assert missing.returncode == 1 and "ExecutionDoesNotExist" in missing.stderr


def test_port_in_use_is_one_clear_line(project: Path) -> None:
    """Another process on the port: the error names the address, and the
    parts already started are stopped (no pending-task noise)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        completed = run_fnplane(
            "run", "--port", str(port), "--state-dir", "state", cwd=project
        )
    assert completed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in completed.stderr
    assert "Task was destroyed" not in completed.stderr


def test_help_on_each_command() -> None:
    commands = ("run", "invoke", "list", "start-execution", "executions", "history")
    for command in commands:
        completed = subprocess.run(
            [FNPLANE, command, "--help"], capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0 and "usage: fnplane" in completed.stdout


STUCK_APP = textwrap.dedent(
    """
    import threading
    from fnplane import App

    app = App()
    forever = threading.Event()

    @app.http("GET", "/stuck", timeout=0.5)
    def stuck(event, context):
        forever.wait()

    @app.function(shutdown=lambda: forever.wait())
    def hangs_on_shutdown(event, context):
        return "ok"
    """
)


def test_stuck_threads_do_not_hold_the_process_past_grace(
    tmp_path: Path, unused_port: int
) -> None:
    """A timed-out sync handler and a hook past its 2 s cap cannot be stopped;
    the process still exits 0 soon after its grace period."""
    (tmp_path / "stuck.py").write_text(STUCK_APP)
    process = subprocess.Popen(
        [FNPLANE, "run", "stuck.py", "--port", str(unused_port), "--grace", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{unused_port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
    assert get(f"{url}/stuck")[0] == 504
    body = b"{}"
    request = urllib.request.Request(
        f"{url}/2015-03-31/functions/hangs_on_shutdown/invocations", data=body
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == b'"ok"'
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at < 6
