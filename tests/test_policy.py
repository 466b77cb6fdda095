"""Async options are validated when the decorator runs, with clear messages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fnplane import App
from fnplane.destinations import (
    FolderDestination,
    FunctionDestination,
    KafkaDestination,
    RedisStreamDestination,
)
from fnplane.errors import RegistrationError
from fnplane.policy import Backoff


def handler(event: Any, context: Any) -> None:
    """A do-nothing handler."""


def test_defaults_follow_lambda() -> None:
    """Two retries, backoff around one then two minutes, six hours of age."""
    function = App().attach(handler, None, {})
    policy = function.async_policy
    assert policy.retries == 2
    assert policy.max_attempts == 3
    assert policy.max_event_age_s == 6 * 3600
    assert (policy.backoff.base_s, policy.backoff.cap_s) == (60.0, 300.0)
    assert policy.on_success is None and policy.on_failure is None


def test_options_are_normalised() -> None:
    """timedelta, (base, cap) pairs and destination strings become typed values."""
    app = App()
    app.function(
        retries=5,
        backoff=(timedelta(milliseconds=10), 1),
        max_event_age=timedelta(minutes=5),
        on_success="kafka://127.0.0.1:9092/done",
        on_failure="redis://127.0.0.1:6379/0?stream=failed",
    )(handler)
    policy = app.get("handler").async_policy
    assert policy.retries == 5
    assert policy.backoff == Backoff(0.01, 1.0)
    assert policy.max_event_age_s == 300
    assert policy.on_success == KafkaDestination("done", "127.0.0.1:9092")
    assert policy.on_failure == RedisStreamDestination(
        "failed", "redis://127.0.0.1:6379/0"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("function:audit", FunctionDestination("audit")),
        ("folder:./failed", FolderDestination("./failed")),
        (FolderDestination("/tmp/x"), FolderDestination("/tmp/x")),
    ],
)
def test_destination_forms(spec: Any, expected: Any) -> None:
    """Strings and Destination objects are both accepted."""
    app = App()
    app.function(on_failure=spec)(handler)
    assert app.get("handler").async_policy.on_failure == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be from 0 to 100"),
        ({"retries": 1.5}, "retries must be a whole number"),
        ({"backoff": "fast"}, "backoff must be a Backoff"),
        ({"backoff": (5, 1)}, "0 <= base <= cap"),
        ({"max_event_age": 0}, "max_event_age must be more than 0"),
        ({"max_event_age": "1h"}, "max_event_age must be seconds"),
        ({"on_failure": "s3://bucket"}, "is not a destination"),
        ({"on_success": 42}, "on_success must be a Destination"),
        ({"retry": 1}, "unknown option"),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, Any], message: str) -> None:
    """Each bad value fails at decoration with the option and the valid range."""
    with pytest.raises(RegistrationError, match=message):
        App().function(**options)(handler)
