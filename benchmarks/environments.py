"""Execution environments: cold start latency and warm invocation overhead.

Each round runs in a fresh process (a fresh fork server too) and measures:

- cold start: ``Invoker.invoke`` of a trivial function whose pool has no
  worker (fork from the fork server, import, Init, invoke), p50 and p99 of
  ``COLD_STARTS`` cold invocations, and the init duration the report gives;
- warm: ``WARM_CALLS`` invocations of the same trivial handler through a
  warm process environment, an inline environment and a direct call,
  in µs per invocation, the overheads over the direct call, and the
  process / inline ratio of the round (sync handlers: inline ones hop to a
  thread, process ones to a worker).

Prints each round, then the median, min and max over the rounds.

    python benchmarks/environments.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# Running this file puts benchmarks/ first on sys.path, where a sibling
# benchmark named like a standard module (http.py) would shadow it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from fnplane import logs  # noqa: E402
from fnplane.config import Settings  # noqa: E402
from fnplane.invoke import Invoker  # noqa: E402

COLD_STARTS = 50
WARM_CALLS = 3_000


def load_functions() -> ModuleType:
    """``_environment_functions.py``, loaded from its file (benchmarks/ is off
    ``sys.path``, see above)."""
    path = Path(__file__).with_name("_environment_functions.py")
    spec = importlib.util.spec_from_file_location("fnplane_benchmark_functions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def trivial(event: Any, context: Any) -> Any:
    """The handler called directly: hands its event back."""
    return event


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def cold_starts(invoker: Invoker) -> dict[str, float]:
    """Latency of invocations that each fork and initialise a new worker."""
    pool = invoker.process_pool(invoker.app.get("in_process"))
    assert pool is not None
    latencies_ms: list[float] = []
    inits_ms: list[float] = []
    for index in range(COLD_STARTS + 1):
        started = time.perf_counter()
        result = await invoker.invoke("in_process", {"n": index})
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert result.ok and result.init_duration_ms is not None, result.error
        if index:  # the first one also starts the fork server
            latencies_ms.append(elapsed_ms)
            inits_ms.append(result.init_duration_ms)
        await pool.idle.pop().stop("in_process")
    return {
        "cold_p50_ms": percentile(latencies_ms, 0.5),
        "cold_p99_ms": percentile(latencies_ms, 0.99),
        "init_p50_ms": percentile(inits_ms, 0.5),
    }


async def warm_us(invoker: Invoker, name: str) -> float:
    """µs per invocation of a warm function through the Invoker."""
    await invoker.invoke(name, 0)
    started = time.perf_counter()
    for index in range(WARM_CALLS):
        await invoker.invoke(name, index)
    return (time.perf_counter() - started) / WARM_CALLS * 1e6


def direct_us() -> float:
    """µs per direct call of the handler."""
    started = time.perf_counter()
    for index in range(WARM_CALLS):
        trivial(index, None)
    return (time.perf_counter() - started) / WARM_CALLS * 1e6


async def one_round() -> dict[str, float]:
    """Every measurement once, in this process."""
    logs.configure("console", "warning")
    app = load_functions().app
    invoker = Invoker(app, Settings())
    figures = await cold_starts(invoker)
    figures["process_us"] = await warm_us(invoker, "in_process")
    figures["inline_us"] = await warm_us(invoker, "in_line")
    figures["direct_us"] = direct_us()
    figures["process_overhead_us"] = figures["process_us"] - figures["direct_us"]
    figures["inline_overhead_us"] = figures["inline_us"] - figures["direct_us"]
    figures["process_over_inline"] = figures["process_us"] / figures["inline_us"]
    await invoker.shutdown()
    return figures


def main() -> None:
    """Run the rounds, each in a fresh process, and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(asyncio.run(one_round())))
        return

    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        output = subprocess.run(
            [sys.executable, __file__, "--one-round"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        figures = json.loads(output.strip().splitlines()[-1])
        rounds.append(figures)
        shown = "  ".join(f"{key}={value:.2f}" for key, value in figures.items())
        print(f"round {number}: {shown}")

    print(f"\nover {len(rounds)} rounds (load average {os.getloadavg()[0]:.2f}):")
    for key in rounds[0]:
        values = [figures[key] for figures in rounds]
        print(
            f"  {key:<22} median {statistics.median(values):8.2f}  "
            f"min {min(values):8.2f}  max {max(values):8.2f}"
        )


if __name__ == "__main__":
    main()
