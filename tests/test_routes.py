"""Route matching: static before templated, specific before greedy, 405 hints."""

from __future__ import annotations

from fnplane.routes import HttpTrigger, RouteTable


def table(*routes: tuple[str | list[str], str, str]) -> RouteTable:
    built = RouteTable()
    for method, path, function in routes:
        built.add(HttpTrigger.parse(method, path), function)
    return built


def test_literal_route_wins_over_template_whatever_the_order() -> None:
    routes = table(("GET", "/items/{item_id}", "one"), ("GET", "/items/new", "new"))
    assert routes.match("GET", "/items/new").function == "new"
    matched = routes.match("GET", "/items/42")
    assert (matched.function, matched.path_params) == ("one", {"item_id": "42"})
    assert matched.route_key == "GET /items/{item_id}"


def test_greedy_parameter_takes_the_rest_and_comes_last() -> None:
    routes = table(("GET", "/files/{key+}", "any"), ("GET", "/files/{name}", "one"))
    assert routes.match("GET", "/files/a").function == "one"
    deep = routes.match("GET", "/files/a/b/c.txt")
    assert (deep.function, deep.path_params) == ("any", {"key": "a/b/c.txt"})


def test_wrong_method_reports_the_allowed_ones() -> None:
    routes = table((["GET", "POST"], "/things", "t"), ("PUT", "/things/{id}", "u"))
    missing = routes.match("DELETE", "/things")
    assert missing.function is None
    assert set(missing.allowed) == {"GET", "HEAD", "POST"}  # GET answers HEAD
    assert routes.match("GET", "/elsewhere").allowed == ()
    assert routes.match("GET", "/things/1").allowed == ("PUT",)


def test_any_method_and_head_fallback_to_get() -> None:
    routes = table(("ANY", "/hook", "hook"), ("GET", "/page", "page"))
    assert routes.match("PATCH", "/hook").function == "hook"
    assert routes.match("HEAD", "/page").function == "page"


def test_same_shape_with_other_methods_keeps_each_parameter_name() -> None:
    routes = table(("GET", "/a/{x}", "getter"), ("POST", "/a/{y}", "poster"))
    assert routes.match("POST", "/a/1").path_params == {"y": "1"}
    assert routes.match("GET", "/a/1").path_params == {"x": "1"}
