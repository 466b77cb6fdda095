"""The invocation path: outcomes, lifecycle, concurrency, reports and metrics."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from structlog.testing import capture_logs

from fnplane import App, FunctionError, HandlerError, InvocationTimeoutError
from fnplane.config import Settings
from fnplane.invoke import Invoker, Outcome


def invoker_for(app: App, **settings: object) -> Invoker:
    return Invoker(app, Settings(**settings))  # type: ignore[arg-type]


def metric(invoker: Invoker, name: str, **labels: str) -> float:
    value = invoker.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_sync_and_async_handlers_return_their_value() -> None:
    app = App()
    seen_threads: list[str] = []

    @app.function()
    def plain(event, context):
        seen_threads.append(threading.current_thread().name)
        return {"doubled": event["n"] * 2}

    @app.function()
    async def coroutine(event, context):
        return event["n"] + 1

    invoker = invoker_for(app)
    assert (await invoker.invoke("plain", {"n": 4})).value == {"doubled": 8}
    assert (await invoker.invoke("coroutine", {"n": 4})).value == 5
    assert seen_threads[0].startswith("fnplane-handler"), "sync handlers leave the loop"
    await invoker.shutdown()


async def test_context_has_lambda_attribute_names() -> None:
    app = App()

    @app.function(name="ctx", timeout=7, memory=256)
    def describe(event, context):
        return {
            "request_id": context.aws_request_id,
            "name": context.function_name,
            "version": context.function_version,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "cold": context.cold_start,
            "attempt": context.attempt,
            "log_group": context.log_group_name,
            "log_stream": context.log_stream_name,
            "identity": context.identity,
            "client_context": context.client_context,
        }

    invoker = invoker_for(app)
    result = await invoker.invoke("ctx", {}, request_id="req-1")
    value = result.value
    assert value["request_id"] == "req-1"
    assert (value["name"], value["version"], value["memory"]) == ("ctx", "$LATEST", 256)
    assert value["arn"].endswith(":function:ctx")
    assert 6000 < value["remaining"] <= 7000
    assert value["cold"] is True and value["attempt"] == 1
    assert (value["log_group"], value["log_stream"]) == ("/fnplane/ctx", "inline")
    assert value["identity"] is None and value["client_context"] is None
    warm = (await invoker.invoke("ctx", {}, attempt=2)).value
    assert warm["cold"] is False and warm["attempt"] == 2


async def test_handled_and_unhandled_errors_are_classified() -> None:
    app = App()

    @app.function()
    def deliberate(event, context):
        raise FunctionError("card declined", error_type="PaymentError")

    @app.function()
    def broken(event, context):
        return {}["missing"]

    invoker = invoker_for(app)
    handled = await invoker.invoke("deliberate")
    assert handled.outcome is Outcome.HANDLED_ERROR
    assert (handled.error.error_type, handled.error.message) == (
        "PaymentError",
        "card declined",
    )
    with capture_logs() as logs:
        unhandled = await invoker.invoke("broken")
    assert unhandled.outcome is Outcome.UNHANDLED_ERROR
    assert unhandled.error.error_type == "KeyError"
    assert any("broken" in frame for frame in unhandled.error.stack_trace)
    failure = next(log for log in logs if log["event"] == "invocation.failed")
    assert failure["log_level"] == "error"
    # The logged traceback starts at the handler, not in the invoker.
    logged_frames = failure["exc_info"].__traceback__
    assert logged_frames.tb_frame.f_code.co_name == "broken"
    with pytest.raises(HandlerError) as raised:
        unhandled.unwrap()
    assert raised.value.error_type == "KeyError" and not raised.value.handled


async def test_async_handler_is_cancelled_at_its_timeout() -> None:
    app = App()
    cancelled = asyncio.Event()

    @app.function(timeout=0.2)
    async def sleepy(event, context):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    invoker = invoker_for(app)
    result = await invoker.invoke("sleepy")
    assert result.outcome is Outcome.TIMEOUT
    assert result.error.message == "Task timed out after 0.20 seconds"
    assert cancelled.is_set()
    with pytest.raises(InvocationTimeoutError):
        result.unwrap()


async def test_sync_handler_timeout_fails_and_logs_that_the_thread_runs_on() -> None:
    app = App()
    release = threading.Event()

    @app.function(timeout=0.2)
    def blocking(event, context):
        release.wait(5)

    invoker = invoker_for(app)
    with capture_logs() as logs:
        result = await invoker.invoke("blocking")
    release.set()
    assert result.outcome is Outcome.TIMEOUT
    assert any(log["event"] == "invocation.thread_left_running" for log in logs)


async def test_a_handler_raising_timeout_error_is_not_a_platform_timeout() -> None:
    app = App()

    @app.function(timeout=5)
    async def upstream(event, context):
        raise TimeoutError("upstream API timed out")

    result = await invoker_for(app).invoke("upstream")
    assert result.outcome is Outcome.UNHANDLED_ERROR
    assert result.error.error_type == "TimeoutError"


async def test_first_invocation_is_cold_and_runs_init_once() -> None:
    app = App()
    calls: list[str] = []
    app.on_init(lambda: calls.append("app"))

    @app.function(init=lambda: calls.append("fn"))
    def warmable(event, context):
        return context.cold_start

    invoker = invoker_for(app)
    first = await invoker.invoke("warmable")
    second = await invoker.invoke("warmable")
    assert (first.value, second.value) == (True, False)
    assert first.cold_start and first.init_duration_ms is not None
    assert not second.cold_start
    assert calls == ["app", "fn"]
    assert metric(invoker, "fnplane_cold_starts_total", function="warmable") == 1


async def test_failed_init_fails_the_invocation_and_is_retried_next_time() -> None:
    app = App()
    attempts: list[int] = []

    def flaky_init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database not ready")

    @app.function(init=flaky_init)
    def needs_db(event, context):
        return "ok"

    invoker = invoker_for(app)
    failed = await invoker.invoke("needs_db")
    assert failed.outcome is Outcome.INIT_ERROR
    assert failed.error.error_type == "ConnectionError"
    assert "database not ready" in failed.error.message
    retried = await invoker.invoke("needs_db")
    assert retried.value == "ok" and retried.cold_start
    assert len(attempts) == 2


async def test_init_that_outlives_the_limit_is_an_init_timeout() -> None:
    app = App()

    async def slow_init() -> None:
        await asyncio.sleep(5)

    @app.function(init=slow_init)
    def guarded(event, context):
        return "ok"

    result = await invoker_for(app, init_limit=0.2).invoke("guarded")
    assert result.outcome is Outcome.INIT_ERROR
    assert result.error.error_type == "Runtime.InitTimeout"


async def test_concurrency_limit_throttles_the_excess_invocation() -> None:
    app = App()
    release = asyncio.Event()

    @app.function(concurrency=1)
    async def single(event, context):
        await release.wait()
        return event

    invoker = invoker_for(app)
    first = asyncio.create_task(invoker.invoke("single", 1))
    await asyncio.sleep(0)
    throttled = await invoker.invoke("single", 2)
    release.set()
    assert throttled.outcome is Outcome.THROTTLED
    assert (await first).value == 1
    assert metric(invoker, "fnplane_throttles_total", function="single") == 1


async def test_wait_for_slot_queues_instead_of_throttling() -> None:
    app = App()
    running = 0
    peak = 0

    @app.function(concurrency=2)
    async def limited(event, context):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return event

    invoker = invoker_for(app)
    results = await asyncio.gather(
        *(invoker.invoke("limited", n, wait_for_slot=True) for n in range(10))
    )
    assert [r.value for r in results] == list(range(10))
    assert peak == 2


async def test_report_line_and_metrics_for_each_invocation() -> None:
    app = App()

    @app.function()
    def quick(event, context):
        time.sleep(0.002)
        return None

    invoker = invoker_for(app)
    with capture_logs() as logs:
        result = await invoker.invoke("quick", request_id="r-42")
    report = next(log for log in logs if log["event"] == "invocation.report")
    assert report["request_id"] == "r-42" and report["function"] == "quick"
    assert report["outcome"] == "success"
    assert report["billed_duration_ms"] >= report["duration_ms"] >= 2
    assert "init_duration_ms" in report
    assert result.billed_duration_ms == int(-(-result.duration_ms // 1))
    labels = {"function": "quick", "outcome": "success"}
    assert metric(invoker, "fnplane_invocations_total", **labels) == 1
    assert metric(invoker, "fnplane_duration_seconds_count", function="quick") == 1
    assert metric(invoker, "fnplane_concurrent_executions", function="quick") == 0


async def test_captured_log_holds_handler_lines_and_the_report() -> None:
    from fnplane import logs

    logs.configure("console", "info", cache_loggers=False)
    app = App()

    @app.function()
    def chatty(event, context):
        context.logger.info("charging card", amount=12)
        return "done"

    result = await invoker_for(app).invoke("chatty", capture_log=True)
    text = "\n".join(result.log)
    assert "START RequestId" in text and "charging card amount=12" in text
    assert f"REPORT RequestId: {result.request_id}" in text


async def test_shutdown_runs_hooks_of_started_environments_only() -> None:
    app = App()
    stopped: list[str] = []
    app.on_shutdown(lambda: stopped.append("app"))
    app.function(name="used", shutdown=lambda: stopped.append("used"))(
        lambda e, c: None
    )
    app.function(name="unused", shutdown=lambda: stopped.append("unused"))(
        lambda e, c: None
    )
    invoker = invoker_for(app)
    await invoker.invoke("used")
    await invoker.shutdown()
    assert stopped == ["used", "app"]


async def test_a_hanging_shutdown_hook_is_cut_at_two_seconds() -> None:
    app = App()
    release = threading.Event()

    @app.function(shutdown=lambda: release.wait(10))
    def stuck(event, context):
        return None

    invoker = invoker_for(app)
    await invoker.invoke("stuck")
    started = time.monotonic()
    with capture_logs() as logs:
        await invoker.shutdown()
    release.set()
    assert 1.9 < time.monotonic() - started < 4
    assert any(log["event"] == "shutdown.hook_timed_out" for log in logs)


async def test_concurrency_zero_switches_the_function_off() -> None:
    """Reserved concurrency 0 throttles every invocation, as in Lambda."""
    app = App()
    app.function(name="off", concurrency=0)(lambda e, c: "ran")
    result = await invoker_for(app).invoke("off")
    assert result.outcome is Outcome.THROTTLED


async def test_no_report_line_when_info_is_filtered_out_but_metrics_count() -> None:
    """At WARNING the REPORT line is skipped (not even built); metrics and
    warnings still happen."""
    from fnplane import logs

    logs.configure("console", "warning", cache_loggers=False)
    app = App()

    @app.function()
    async def fine(event, context):
        return 1

    @app.function()
    async def refuses(event, context):
        raise FunctionError("no")

    invoker = invoker_for(app)
    with capture_logs() as captured:
        await invoker.invoke("fine")
        await invoker.invoke("refuses")
    events = [log["event"] for log in captured]
    assert "invocation.report" not in events
    assert "invocation.handled_error" in events
    labels = {"function": "fine", "outcome": "success"}
    assert metric(invoker, "fnplane_invocations_total", **labels) == 1


async def test_report_line_is_logged_when_info_is_enabled() -> None:
    """With INFO on (as configured by the CLI), the REPORT line is logged."""
    from fnplane import logs

    logs.configure("console", "info", cache_loggers=False)
    app = App()

    @app.function()
    async def fine(event, context):
        return 1

    with capture_logs() as captured:
        result = await invoker_for(app).invoke("fine", request_id="r-7")
    report = next(log for log in captured if log["event"] == "invocation.report")
    assert report["request_id"] == "r-7" and report["outcome"] == "success"
    assert result.ok


async def test_drain_waits_for_in_flight_invocations_for_every_caller() -> None:
    """Two drains at once both see the last invocation finish; an idle invoker
    drains at once, and a drain past its grace period says False."""
    app = App()
    release = asyncio.Event()

    @app.function()
    async def held(event, context):
        await release.wait()
        return "done"

    invoker = invoker_for(app)
    assert await invoker.drain(0.5)
    running = asyncio.create_task(invoker.invoke("held"))
    await asyncio.sleep(0)
    assert invoker.in_flight == 1
    assert not await invoker.drain(0.05)
    first = asyncio.create_task(invoker.drain(2))
    second = asyncio.create_task(invoker.drain(2))
    await asyncio.sleep(0.05)
    release.set()
    assert await first and await second
    assert (await running).value == "done"
    assert invoker.in_flight == 0
