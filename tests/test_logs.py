"""Log output: the platform's lines and the standard ``logging`` module's in
one format, and error text without repeated type names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from fnplane import App, logs
from fnplane.config import Settings
from fnplane.errors import describe_error
from fnplane.invoke import Invoker


@pytest.fixture
def library_logger() -> Iterator[logging.Logger]:
    """A logger as a library has one, its level put back after the test."""
    logger = logging.getLogger("fnplane-tests.library")
    yield logger
    logger.setLevel(logging.NOTSET)


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line parsed: a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines()]


def test_standard_logging_records_come_out_as_json_lines(
    capsys: pytest.CaptureFixture[str], library_logger: logging.Logger
) -> None:
    logs.configure("json", "info", cache_loggers=False)
    structlog.get_logger().info("platform.line", port=8080)
    library_logger.warning("disk %s", "full")
    library_logger.info("below the libraries' WARNING floor")

    lines = json_lines(capsys.readouterr().err)

    assert [line["event"] for line in lines] == ["platform.line", "disk full"]
    library_line = lines[1]
    assert library_line["logger"] == "fnplane-tests.library"
    assert library_line["level"] == "warning"
    assert "timestamp" in library_line


def test_a_logger_given_a_level_keeps_it(
    capsys: pytest.CaptureFixture[str], library_logger: logging.Logger
) -> None:
    logs.configure("console", "warning", cache_loggers=False)
    library_logger.setLevel(logging.INFO)
    library_logger.info("the handler's own INFO line")

    assert "the handler's own INFO line" in capsys.readouterr().err


def test_the_chosen_level_applies_when_stricter_than_warning(
    capsys: pytest.CaptureFixture[str], library_logger: logging.Logger
) -> None:
    logs.configure("json", "error", cache_loggers=False)
    library_logger.warning("not shown at --log-level error")
    library_logger.error("shown")

    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["shown"]


def test_a_library_exception_is_rendered_inside_its_json_line(
    capsys: pytest.CaptureFixture[str], library_logger: logging.Logger
) -> None:
    logs.configure("json", "info", cache_loggers=False)
    try:
        raise ConnectionError("broker went away")
    except ConnectionError:
        library_logger.exception("fetch failed")

    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "fetch failed"
    assert "ConnectionError: broker went away" in str(line["exception"])


def test_configuring_again_replaces_the_handler(
    capsys: pytest.CaptureFixture[str], library_logger: logging.Logger
) -> None:
    logs.configure("console", "info", cache_loggers=False)
    logs.configure("json", "info", cache_loggers=False)
    library_logger.warning("once")

    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["once"]


async def test_a_handlers_standard_logging_lines_reach_its_log_tail() -> None:
    logs.configure("console", "info", cache_loggers=False)
    app = App()

    @app.function()
    def charge(event, context):
        logging.getLogger("orders").warning("charging card for %s", event["amount"])
        return "charged"

    result = await Invoker(app, Settings()).invoke(
        "charge", {"amount": 12}, capture_log=True
    )

    assert result.log is not None
    assert any("charging card for 12" in line for line in result.log)


async def test_a_handlers_standard_logging_lines_name_its_invocation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As Lambda's runtime puts the request id on every line a handler logs."""
    logs.configure("json", "warning", cache_loggers=False)
    app = App()

    @app.function()
    def in_a_thread(event, context):
        logging.getLogger("orders").warning("from a thread")

    @app.function()
    async def on_the_loop(event, context):
        logging.getLogger("orders").warning("from the loop")

    invoker = Invoker(app, Settings())
    results = [await invoker.invoke(name) for name in ("in_a_thread", "on_the_loop")]
    logging.getLogger("orders").warning("outside any invocation")

    lines = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    for result, message in zip(
        results, ("from a thread", "from the loop"), strict=True
    ):
        assert lines[message]["request_id"] == result.request_id
        assert lines[message]["function"] == result.function
    assert "request_id" not in lines["outside any invocation"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad value"), "ValueError: bad value"),
        (ValueError(), "ValueError"),
        # aiokafka's errors start their message with their own type name.
        (type("KafkaConnectionError", (Exception,), {})(
            "KafkaConnectionError: Unable to bootstrap"
        ), "KafkaConnectionError: Unable to bootstrap"),
    ],
)  # fmt: skip
def test_error_text_names_the_type_once(error: Exception, expected: str) -> None:
    assert describe_error(error) == expected
