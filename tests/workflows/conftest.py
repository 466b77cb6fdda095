"""Fixtures for the workflow tests: an in-process invoker of plain functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


class FunctionInvoker:
    """Invokes plain Python callables by name and counts the calls."""

    def __init__(self, functions: dict[str, Callable[[Any], Any]]) -> None:
        self.functions = functions
        self.calls: list[tuple[str, Any]] = []

    async def __call__(
        self, function_name: str, payload: Any, timeout_s: float | None
    ) -> Any:
        """Call the named function with the payload (exceptions propagate)."""
        self.calls.append((function_name, payload))
        result = self.functions[function_name](payload)
        if hasattr(result, "__await__"):
            result = await result
        return result

    def exists(self, name: str) -> bool:
        """Tell whether a function of that name is registered."""
        return name in self.functions


@pytest.fixture
def invoker() -> FunctionInvoker:
    """An invoker with a few small functions."""

    def double(event: Any) -> Any:
        return {"value": event["value"] * 2}

    def explode(event: Any) -> Any:
        raise ValueError("boom")

    return FunctionInvoker({"double": double, "explode": explode, "echo": lambda e: e})
