"""HTTP route templates and the table that matches requests to functions.

Templates follow API Gateway's syntax: ``{name}`` captures one path segment,
``{name+}`` (greedy, last only) captures the rest of the path. Static routes
are found with one dict lookup; templated ones are tried most specific first,
so ``/items/new`` wins over ``/items/{item_id}`` whatever the order of
registration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fnplane.errors import RegistrationError
from fnplane.function import Trigger

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
ANY_METHOD = "ANY"
PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}$")
LITERAL_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*,;=:@%-]*$")


@dataclass(frozen=True, slots=True)
class HttpTrigger(Trigger):
    """A route: the methods and path template that invoke a function over HTTP."""

    methods: tuple[str, ...]
    path: str
    pattern: re.Pattern[str] | None
    param_names: tuple[str, ...]
    source = "web"

    @classmethod
    def parse(cls, method: str | Iterable[str], path: str) -> HttpTrigger:
        """Validate methods and a template; raise ``RegistrationError`` if bad."""
        methods = parse_methods(method, path)
        pattern, names = compile_template(path)
        return cls(methods, path, pattern, names)

    @property
    def shape(self) -> str:
        """The template with parameter names blanked: equal shapes clash."""
        return re.sub(r"\{[^}]*?(\+?)\}", r"{\1}", self.path)

    @property
    def specificity(self) -> tuple[int, int]:
        """Sort key: greedy routes last, then more literal segments first."""
        segments = self.path.strip("/").split("/")
        literals = sum(1 for segment in segments if not segment.startswith("{"))
        return (int(self.path.endswith("+}")), -literals)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the route."""
        return {"type": "http", "methods": list(self.methods), "path": self.path}


def parse_methods(method: str | Iterable[str], path: str) -> tuple[str, ...]:
    """Return the upper-cased methods, or raise naming the unknown one."""
    listed = [method] if isinstance(method, str) else list(method)
    methods = tuple(dict.fromkeys(m.upper() for m in listed if isinstance(m, str)))
    valid = METHODS | {ANY_METHOD}
    if not methods or len(methods) != len(set(listed)) or not set(methods) <= valid:
        raise RegistrationError(
            f"route {path!r}: method {method!r} is not valid; use one or a list "
            f"of {sorted(valid)}"
        )
    return methods


def compile_template(path: str) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """Compile a template to a regex (None when it has no parameters)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise RegistrationError(f"route {path!r} must be a string starting with '/'")
    segments = path.split("/")[1:]
    parts: list[str] = []
    names: list[str] = []
    for index, segment in enumerate(segments):
        param = PARAM.match(segment)
        if param:
            name, greedy = param.groups()
            if name in names:
                raise RegistrationError(f"route {path!r}: parameter {name!r} twice")
            if greedy and index != len(segments) - 1:
                raise RegistrationError(
                    f"route {path!r}: greedy parameter {{{name}+}} must be last"
                )
            names.append(name)
            parts.append(f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)")
        elif "{" in segment or "}" in segment or not LITERAL_SEGMENT.match(segment):
            raise RegistrationError(
                f"route {path!r}: segment {segment!r} is not a literal or a "
                f"{{name}} / {{name+}} parameter"
            )
        else:
            parts.append(re.escape(segment))
    if not names:
        return None, ()
    return re.compile("/" + "/".join(parts) + "$"), tuple(names)


@dataclass(slots=True)
class RouteMatch:
    """What the table found for a request: a function, or why none was found."""

    function: str | None
    path_params: dict[str, str]
    allowed: tuple[str, ...] = ()
    route_key: str = ""


class RouteTable:
    """Every route of an app, for registration checks and request matching."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, str]] = {}
        self._templated: list[tuple[HttpTrigger, dict[str, str]]] = []
        self._shapes: dict[tuple[str, str], str] = {}
        # Bumped by every route added, so callers that cache what ``match``
        # said (the HTTP source) know to forget it.
        self.generation = 0

    def add(self, trigger: HttpTrigger, function: str) -> None:
        """Add a route; raise if one of its methods is already on that route."""
        for method in trigger.methods:
            owner = self._shapes.get((method, trigger.shape))
            if owner is not None:
                raise RegistrationError(
                    f"route {method} {trigger.path} of function {function!r} is "
                    f"already registered by function {owner!r}"
                )
        for method in trigger.methods:
            self._shapes[(method, trigger.shape)] = function
        self._methods_for(trigger).update(dict.fromkeys(trigger.methods, function))
        self.generation += 1

    def match(self, method: str, path: str) -> RouteMatch:
        """Find the function for ``method`` and ``path``.

        A path that matches with other methods only gives ``allowed`` (for a
        405); one that matches nothing gives neither.
        """
        by_method = self._static.get(path)
        if by_method is not None:
            found = _pick(by_method, method)
            if found is not None:
                return RouteMatch(found, {}, route_key=f"{method} {path}")
        allowed = tuple(by_method) if by_method else ()
        for trigger, methods in self._templated:
            matched = trigger.pattern.match(path)  # type: ignore[union-attr]
            if matched is None:
                continue
            found = _pick(methods, method)
            if found is not None:
                return RouteMatch(
                    found, matched.groupdict(), route_key=f"{method} {trigger.path}"
                )
            allowed += tuple(methods)
        if "GET" in allowed:
            # A route's GET handler answers HEAD too (see _pick).
            allowed += ("HEAD",)
        return RouteMatch(None, {}, allowed=tuple(dict.fromkeys(allowed)))

    def _methods_for(self, trigger: HttpTrigger) -> dict[str, str]:
        if trigger.pattern is None:
            return self._static.setdefault(trigger.path, {})
        for existing, existing_methods in self._templated:
            if existing.path == trigger.path:
                return existing_methods
        methods: dict[str, str] = {}
        self._templated.append((trigger, methods))
        self._templated.sort(key=lambda entry: entry[0].specificity)
        return methods


def _pick(methods: dict[str, str], method: str) -> str | None:
    found = methods.get(method) or methods.get(ANY_METHOD)
    if found is None and method == "HEAD":
        found = methods.get("GET")
    return found
