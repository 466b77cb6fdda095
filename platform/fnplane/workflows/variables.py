"""Workflow variables (``Assign``) and their scopes.

A Map iteration or Parallel branch reads the variables of the states around
it but its own assignments stay inside it, as AWS scopes them. Each scope
keeps only its own values and asks its parent for the rest.
"""

from __future__ import annotations

from typing import Any

from fnplane.workflows.errors import RUNTIME, StatesError


class Variables:
    """One scope of workflow variables, chained to the enclosing scope."""

    __slots__ = ("_values", "parent")

    def __init__(
        self, values: dict[str, Any] | None = None, parent: Variables | None = None
    ) -> None:
        self._values: dict[str, Any] = dict(values or {})
        self.parent = parent

    def child(self) -> Variables:
        """Return a new scope nested in this one (for a branch or iteration)."""
        return Variables(parent=self)

    def get(self, name: str) -> Any:
        """Return a variable's value, looking outwards through the scopes.

        Raises:
            StatesError: ``States.Runtime`` when no scope defines ``name``.
        """
        scope: Variables | None = self
        while scope is not None:
            if name in scope._values:
                return scope._values[name]
            scope = scope.parent
        raise StatesError(RUNTIME, f"The variable '${name}' is not defined")

    def has(self, name: str) -> bool:
        """Tell whether ``name`` is defined in this scope or an outer one."""
        scope: Variables | None = self
        while scope is not None:
            if name in scope._values:
                return True
            scope = scope.parent
        return False

    def update(self, values: dict[str, Any]) -> None:
        """Assign values in this scope (never in an outer one)."""
        self._values.update(values)

    def visible(self) -> dict[str, Any]:
        """Return every variable this scope can read, inner names winning."""
        chain: list[Variables] = []
        scope: Variables | None = self
        while scope is not None:
            chain.append(scope)
            scope = scope.parent
        merged: dict[str, Any] = {}
        for each in reversed(chain):
            merged.update(each._values)
        return merged

    def own(self) -> dict[str, Any]:
        """Return a copy of the values assigned in this scope itself."""
        return dict(self._values)
