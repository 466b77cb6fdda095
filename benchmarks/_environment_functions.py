"""The functions ``benchmarks/environments.py`` measures, in a module of their
own: a worker loads this small file at each cold start, not the benchmark."""

from __future__ import annotations

from typing import Any

from fnplane import App

app = App("benchmark")


@app.function(isolation="process")
def in_process(event: Any, context: Any) -> Any:
    """The trivial handler in a process environment: hands its event back."""
    return event


@app.function(isolation="inline")
def in_line(event: Any, context: Any) -> Any:
    """The trivial handler in an inline environment."""
    return event
