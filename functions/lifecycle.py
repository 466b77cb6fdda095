"""Examples of the execution lifecycle: an init hook and a function that times out."""

import asyncio
import time

from fnplane import App

app = App()
started_at: dict[str, float] = {}


def open_connections() -> None:
    """Runs once per environment, before the first invocation (a cold start)."""
    started_at["init"] = time.time()


@app.http("GET", "/warm", init=open_connections)
def warm(event, context):
    """Report whether this invocation was a cold start."""
    return {"cold_start": context.cold_start, "initialised_at": started_at["init"]}


@app.http("GET", "/slow", timeout=1)
async def slow(event, context):
    """Sleeps past its 1 s timeout: the caller gets 504."""
    await asyncio.sleep(5)
    return "never"


@app.function()
def add(event, context):
    """No trigger: invoke it with `fnplane invoke add --data '{"a": 1, "b": 2}'`."""
    return event["a"] + event["b"]
