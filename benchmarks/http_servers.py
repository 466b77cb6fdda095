"""The JSON echo served by each contestant of ``benchmarks/http.py``.

Run as ``python -P benchmarks/http_servers.py KIND PORT`` (``-P``: this folder
holds ``http.py``, which must not shadow the standard library); every contestant
parses the JSON body and answers it back as JSON, so the work is the same.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


async def aiohttp_lowlevel(port: int) -> None:
    """aiohttp's low-level server: no router, no middleware (the raw baseline)."""

    async def handle(request: web.BaseRequest) -> web.Response:
        payload = json.loads(await request.read())
        return web.Response(
            body=json.dumps(payload).encode(), content_type="application/json"
        )

    server = web.Server(handle)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def aiohttp_app(port: int) -> None:
    """A bare aiohttp ``Application`` with one route."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def fnplane_server(port: int, log_level: str) -> None:
    """fnplane's HTTP source with the full invocation path."""
    from fnplane import App, logs
    from fnplane.config import Settings
    from fnplane.runner import Platform

    logs.configure("json", log_level)
    app = App()

    @app.http("POST", "/echo")
    async def echo(event, context):
        return event.json()

    platform = Platform(app, Settings(port=port))
    await platform.start()
    await asyncio.Event().wait()


def starlette_uvicorn(port: int) -> None:
    """The peer: Starlette on uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "starlette":
        starlette_uvicorn(port)
    elif kind == "aiohttp-lowlevel":
        asyncio.run(aiohttp_lowlevel(port))
    elif kind == "aiohttp-app":
        asyncio.run(aiohttp_app(port))
    elif kind.startswith("fnplane"):
        asyncio.run(
            fnplane_server(port, "info" if kind == "fnplane-info" else "warning")
        )
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
