"""Registration: decorators record functions and triggers, or fail at once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fnplane import App, RegistrationError
from fnplane.routes import HttpTrigger


def handler(event, context):
    return event


def test_function_decorator_registers_with_defaults_and_returns_the_handler() -> None:
    """The handler stays callable and gets Lambda's documented defaults."""
    app = App()
    decorated = app.function()(handler)

    assert decorated is handler
    function = app.get("handler")
    assert (function.timeout_s, function.concurrency, function.memory_mb) == (
        30.0,
        None,
        128,
    )
    assert function.triggers == []
    assert not function.is_async


def test_async_handlers_are_detected() -> None:
    app = App()

    @app.function()
    async def coroutine(event, context):
        return event

    assert app.get("coroutine").is_async


def test_timeout_accepts_seconds_and_timedelta() -> None:
    app = App()
    app.function(name="a", timeout=2.5)(handler)
    app.function(name="b", timeout=timedelta(minutes=15))(lambda e, c: e)
    assert app.get("a").timeout_s == 2.5
    assert app.get("b").timeout_s == 900.0


@pytest.mark.parametrize("timeout", [0, -1, 900.5, "3", True])
def test_timeout_out_of_range_fails_naming_the_function(timeout: object) -> None:
    app = App()
    with pytest.raises(RegistrationError, match="'handler'.*timeout"):
        app.function(timeout=timeout)(handler)  # type: ignore[arg-type]


@pytest.mark.parametrize("concurrency", [0, -2, 1.5, "4"])
def test_bad_concurrency_fails(concurrency: object) -> None:
    with pytest.raises(RegistrationError, match="concurrency"):
        App().function(concurrency=concurrency)(handler)  # type: ignore[arg-type]


def test_unknown_option_fails_listing_the_valid_ones() -> None:
    with pytest.raises(RegistrationError, match=r"timout.*valid options.*timeout"):
        App().function(timout=3)  # type: ignore[call-arg]


def test_duplicate_function_name_fails_with_the_name() -> None:
    app = App()
    app.function(name="same")(handler)
    with pytest.raises(RegistrationError, match="'same' is registered twice"):
        app.function(name="same")(lambda e, c: None)


@pytest.mark.parametrize("name", ["has space", "", "x" * 65, "dot.ted"])
def test_invalid_function_name_fails(name: str) -> None:
    with pytest.raises(RegistrationError, match="function name"):
        App().function(name=name)(handler)


def test_same_method_and_route_twice_fails_naming_both_functions() -> None:
    app = App()
    app.http("GET", "/items/{item_id}", name="first")(handler)
    with pytest.raises(RegistrationError, match=r"GET /items/\{other\}.*'first'"):
        app.http("GET", "/items/{other}", name="second")(lambda e, c: None)


def test_same_route_with_another_method_is_fine() -> None:
    app = App()
    app.http("GET", "/items", name="list_items")(handler)
    app.http(["POST", "PUT"], "/items", name="write_items")(lambda e, c: None)
    assert app.routes.match("PUT", "/items").function == "write_items"


@pytest.mark.parametrize(
    "path",
    ["no-slash", "/a/{b", "/a/{1x}", "/a/{x}/{x}", "/a/{rest+}/b", "/a/b{c}", 5],
)
def test_invalid_path_template_fails(path: object) -> None:
    with pytest.raises(RegistrationError, match="route"):
        App().http("GET", path)(handler)  # type: ignore[arg-type]


def test_unknown_method_fails_listing_methods() -> None:
    with pytest.raises(RegistrationError, match="FETCH.*GET"):
        App().http("FETCH", "/x")(handler)


def test_stacked_decorators_make_one_function_with_two_triggers() -> None:
    app = App()

    @app.http("GET", "/a")
    @app.http("POST", "/b", timeout=5)
    def both(event, context):
        return None

    function = app.get("both")
    assert function.timeout_s == 5
    assert [t.path for t in function.triggers if isinstance(t, HttpTrigger)] == [
        "/b",
        "/a",
    ]


def test_options_given_twice_on_one_handler_fail() -> None:
    app = App()
    app.http("GET", "/a", timeout=3)(handler)
    with pytest.raises(RegistrationError, match="given again"):
        app.http("GET", "/b", timeout=4)(handler)


def test_include_merges_apps_and_checks_route_clashes() -> None:
    one, two, merged = App(), App(), App()
    one.http("GET", "/x", name="x1")(handler)
    two.http("GET", "/x", name="x2")(lambda e, c: None)
    merged.include(one)
    with pytest.raises(RegistrationError, match="already registered"):
        merged.include(two)


def test_hooks_must_be_callable() -> None:
    with pytest.raises(RegistrationError, match="init must be a callable"):
        App().function(init="connect")(handler)  # type: ignore[arg-type]
