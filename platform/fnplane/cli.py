"""The ``fnplane`` command: run, invoke, list.

Errors are one clear line on stderr and a non-zero exit; only ``run``
configures the platform's log output, the other commands log warnings only
so their standard output stays clean JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fnplane import logs
from fnplane.config import Settings
from fnplane.errors import FnplaneError
from fnplane.loader import load_app

EXIT_USAGE = 2
EXIT_FAILED = 1
EXECUTION_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
POLL_INTERVAL_S = 0.2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fnplane", description="Self-hosted serverless functions for Python."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve the functions until stopped")
    add_target(run)
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="HTTP port (default 8080; 0 picks one)")
    run.add_argument(
        "--grace",
        type=float,
        help="seconds to drain in-flight work on stop (default 10)",
    )
    run.add_argument("--log-format", choices=logs.LOG_FORMATS, help="default console")
    run.add_argument("--log-level", choices=logs.LOG_LEVELS, help="default info")
    run.add_argument(
        "--debug",
        action="store_true",
        default=None,
        help="include error details and stack traces in HTTP 500 bodies",
    )
    run.add_argument("--state-dir", help="folder for durable state (default .fnplane)")
    run.add_argument(
        "--async-queue",
        help="'sqlite' (default, in the state folder) or a redis:// URL shared "
        "by several nodes",
    )
    run.add_argument("--api-key", help="require this key on the platform API")

    invoke = commands.add_parser(
        "invoke", help="invoke one function and print its result"
    )
    invoke.add_argument("name", help="the function's name")
    invoke.add_argument(
        "--data",
        default=None,
        help="the event as JSON, or @FILE to read it from a file (default {})",
    )
    invoke.add_argument(
        "--async",
        dest="is_async",
        action="store_true",
        help="queue the invocation (Event type) and print its request id",
    )
    invoke.add_argument(
        "--event-id",
        help="with --async: an id accepted once within the dedup window",
    )
    invoke.add_argument("--url", help="invoke a running platform at this URL instead")
    add_api_key(invoke)
    invoke.add_argument(
        "--target", default=None, help="what to load in-process (default ./functions)"
    )

    listing = commands.add_parser("list", help="list functions and their triggers")
    add_target(listing)
    listing.add_argument("--url", help="list a running platform's functions instead")
    add_api_key(listing)

    start = commands.add_parser(
        "start-execution", help="start a workflow execution on a running platform"
    )
    start.add_argument("state_machine", help="the state machine's name or ARN")
    start.add_argument("--input", default=None, help="JSON, or @FILE (default {})")
    start.add_argument("--name", default=None, help="the execution's name")
    start.add_argument(
        "--wait", action="store_true", help="wait for the end and print the outcome"
    )
    add_url(start)

    executions = commands.add_parser("executions", help="list workflow executions")
    executions.add_argument(
        "state_machine", nargs="?", default=None, help="only this state machine"
    )
    executions.add_argument(
        "--status", choices=EXECUTION_STATUSES, help="only executions in this status"
    )
    add_url(executions)

    history = commands.add_parser("history", help="print an execution's history")
    history.add_argument("execution", help="the execution's ARN")
    add_url(history)
    return parser


def add_url(parser: argparse.ArgumentParser) -> None:
    """The ``--url`` of the running platform a workflow command talks to."""
    parser.add_argument(
        "--url", default=None,
        help="the running platform (default http://HOST:PORT from the settings)",
    )  # fmt: skip
    add_api_key(parser)


def add_api_key(parser: argparse.ArgumentParser) -> None:
    """The ``--api-key`` a client command sends to the platform API."""
    parser.add_argument(
        "--api-key", default=None,
        help="the platform's API key (default: the api_key setting, FNPLANE_API_KEY)",
    )  # fmt: skip


def add_target(parser: argparse.ArgumentParser) -> None:
    """The optional TARGET argument of ``run`` and ``list``."""
    parser.add_argument(
        "target",
        nargs="?",
        default=None,
        help="a folder, .py file, module or module:app (default ./functions)",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fnplane`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        # Output piped into `head` ends quietly, as other command-line tools do.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        logs.configure("console", "warning")
        handlers = {
            "invoke": command_invoke,
            "list": command_list,
            "start-execution": command_start_execution,
            "executions": command_executions,
            "history": command_history,
        }
        return handlers[args.command](args)
    except (FnplaneError, OSError) as exc:
        print(f"fnplane {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def command_run(args: argparse.Namespace) -> int:
    """Serve the app until SIGTERM or SIGINT."""
    from fnplane.runner import Platform, run_until_signalled

    settings = Settings.load(
        host=args.host,
        port=args.port,
        grace=args.grace,
        log_format=args.log_format,
        log_level=args.log_level,
        debug=args.debug,
        state_dir=args.state_dir,
        async_queue=args.async_queue,
        api_key=args.api_key,
    )
    logs.configure(settings.log_format, settings.log_level)
    app = load_app(args.target)
    # Not asyncio.run: closing the loop joins the default executor's threads.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(run_until_signalled(Platform(app, settings)))
    # The platform has drained and run its shutdown hooks. Threads of sync
    # handlers or hooks that outlived their limits cannot be stopped, and the
    # interpreter would wait for them at exit, past the grace period; like a
    # Lambda sandbox, the process simply ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    return 0


def command_invoke(args: argparse.Namespace) -> int:
    """Invoke a function in-process or against ``--url``; print the result."""
    payload = read_data(args.data, "--data")
    if args.url:
        return invoke_remote(
            args.url, args.name, payload, args.is_async, args.event_id, args.api_key
        )
    return asyncio.run(
        invoke_local(args.target, args.name, payload, args.is_async, args.event_id)
    )


async def invoke_local(
    target: str | None,
    name: str,
    payload: Any,
    is_async: bool,
    event_id: str | None = None,
) -> int:
    """Load the app here, invoke once, run shutdown hooks.

    ``--async`` stores the event in the state folder's queue, then runs its
    first attempt before exiting; retries left over are made by the next
    ``fnplane run`` on the same state folder.
    """
    from fnplane.invoke import Invoker

    invoker = Invoker(load_app(target), Settings.load())
    try:
        if is_async:
            request_id = await invoker.invoke_async(name, payload, event_id=event_id)
            print(json.dumps({"requestId": request_id}))
            await invoker.drain(invoker.settings.grace)
            return 0
        result = await invoker.invoke(name, payload)
    finally:
        await invoker.shutdown()
    if result.ok:
        print(json.dumps(result.value))
        return 0
    assert result.error is not None
    print(json.dumps(result.error.to_lambda()))
    print(f"fnplane invoke: {name} failed ({result.outcome.value})", file=sys.stderr)
    return EXIT_FAILED


def invoke_remote(
    url: str,
    name: str,
    payload: Any,
    is_async: bool,
    event_id: str | None,
    api_key: str | None,
) -> int:
    """Call the Invoke API of a running platform."""
    headers = {"X-Amz-Invocation-Type": "Event" if is_async else "RequestResponse"}
    if event_id:
        headers["X-Fnplane-Event-Id"] = event_id
    reply, response_headers = http_call(
        f"{url.rstrip('/')}/2015-03-31/functions/{name}/invocations",
        json.dumps(payload).encode(),
        headers,
        api_key,
    )
    if is_async:
        print(json.dumps({"requestId": response_headers.get("X-Request-Id")}))
        return 0
    print(reply.decode())
    if "X-Amz-Function-Error" in response_headers:
        print(f"fnplane invoke: {name} failed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def command_list(args: argparse.Namespace) -> int:
    """Print each function with its triggers, one per line."""
    if args.url:
        body, _ = http_call(f"{args.url.rstrip('/')}/functions", None, {}, args.api_key)
        functions = json.loads(body)["functions"]
    else:
        functions = [f.describe() for f in load_app(args.target).functions.values()]
    for function in functions:
        triggers = ", ".join(describe_trigger(t) for t in function["triggers"])
        print(
            f"{function['name']}\ttimeout={function['timeout']:g}s\t{triggers or '-'}"
        )
    return 0


def command_start_execution(args: argparse.Namespace) -> int:
    """Start an execution; with ``--wait``, poll until it ends."""
    request = {
        "stateMachineArn": args.state_machine,
        "input": json.dumps(read_data(args.input, "--input")),
    }
    if args.name:
        request["name"] = args.name
    started = step_functions(args, "StartExecution", request)
    if not args.wait:
        print(json.dumps(started))
        return 0
    arn = started["executionArn"]
    while True:
        described = step_functions(args, "DescribeExecution", {"executionArn": arn})
        if described["status"] != "RUNNING":
            break
        time.sleep(POLL_INTERVAL_S)
    print(json.dumps(described, indent=2))
    return 0 if described["status"] == "SUCCEEDED" else EXIT_FAILED


def command_executions(args: argparse.Namespace) -> int:
    """Print one line per execution: ARN, status, start time."""
    if args.state_machine:
        machines = [args.state_machine]
    else:
        listed = step_functions(args, "ListStateMachines", {})
        machines = [m["stateMachineArn"] for m in listed["stateMachines"]]
    for machine in machines:
        request: dict[str, Any] = {"stateMachineArn": machine}
        if args.status:
            request["statusFilter"] = args.status
        listed = step_functions(args, "ListExecutions", request)["executions"]
        for execution in listed:
            arn, status = execution["executionArn"], execution["status"]
            started = datetime.fromtimestamp(execution["startDate"], UTC)
            print(f"{arn}\t{status}\t{started.isoformat(timespec='seconds')}")
    return 0


def command_history(args: argparse.Namespace) -> int:
    """Print an execution's history events, one per line."""
    request = {"executionArn": args.execution, "maxResults": 1000}
    events = step_functions(args, "GetExecutionHistory", request)["events"]
    for event in events:
        details = {
            key: value
            for key, value in event.items()
            if key not in ("id", "previousEventId", "type", "timestamp")
        }
        print(f"{event['id']:>4} {event['type']:<28} {json.dumps(details)}")
    return 0


def step_functions(
    args: argparse.Namespace, action: str, request: dict[str, Any]
) -> Any:
    """One Step Functions JSON 1.0 call to the platform named by ``--url``."""
    settings = Settings.load()
    base = args.url or f"http://{settings.host}:{settings.port}"
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"AWSStepFunctions.{action}",
    }
    body, _ = http_call(
        base.rstrip("/") + "/", json.dumps(request).encode(), headers, args.api_key
    )
    return json.loads(body)


def describe_trigger(trigger: dict[str, Any]) -> str:
    """A short human form of a trigger summary."""
    if trigger.get("type") == "http":
        return f"{'|'.join(trigger['methods'])} {trigger['path']}"
    if trigger.get("type") == "file":
        return f"file {trigger['folder']}/{'|'.join(trigger['patterns'])}"
    if trigger.get("type") == "kafka":
        return f"kafka {','.join(trigger['topics'])} (group {trigger['group']})"
    if trigger.get("type") == "redis_stream":
        return f"redis {','.join(trigger['streams'])} (group {trigger['group']})"
    return json.dumps(trigger)


def read_data(data: str | None, flag: str) -> Any:
    """A JSON option's value: JSON text, or ``@FILE`` holding JSON."""
    if data is None:
        return {}
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FnplaneError(f"{flag} is not valid JSON: {exc}") from None


def http_call(
    url: str, body: bytes | None, headers: dict[str, str], api_key: str | None
) -> tuple[bytes, dict[str, str]]:
    """One HTTP request to a running platform, with the API key if one is set
    (``--api-key``, else the ``api_key`` setting, e.g. ``FNPLANE_API_KEY``)."""
    api_key = api_key or Settings.load().api_key
    if api_key:
        headers = {**headers, "Authorization": f"Bearer {api_key}"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=960) as response:
            return response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        raise FnplaneError(
            f"{url} answered {exc.code}: {exc.read().decode()}"
        ) from None
    except urllib.error.URLError as exc:
        raise FnplaneError(f"cannot reach {url}: {exc.reason}") from None


if __name__ == "__main__":
    sys.exit(main())
