"""File-drop and async-queue benchmarks: fnplane beside a raw watchdog observer.

Run from the repository root:

    python benchmarks/files.py [--files 10000] [--rounds 5] [--events 20000]

Files: each round drops ``--files`` small files into a fresh folder (on
``/dev/shm`` when it exists) once per contestant, each contestant in a fresh
process, the first contestant rotating:

- ``watchdog``: an inotify observer counting close-after-write events (what
  a hand-written watcher would do; it loses events when the kernel queue
  overflows, and counts only what it saw);
- ``fnplane``: an ``on_file`` function (durable queue in SQLite, handler,
  move to ``processed/``); its handler records when it starts.

Rate = files handled ÷ (first file closed → last handler start, or last
event seen). Latency = handler start (or event seen) − the writer's close of
that file. The ratio printed is the median of the per-round ratios
(fnplane ÷ watchdog), with min and max. CPU is the contestant process's
user + system time per file.

Async: ``--events`` invocations submitted through ``Invoker.invoke_async``
into the SQLite store (each one durable before it returns), reporting
accepts/s, accept → handler start throughput and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

# Python puts this script's folder first on sys.path, where a benchmark
# named after a standard-library module (http.py) would shadow it.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

READY_TIMEOUT_S = 30.0
DONE_TIMEOUT_S = 300.0
QUIET_S = 1.0

WATCHDOG_CONTESTANT = textwrap.dedent(
    """
    import json, sys, threading, time
    from watchdog.events import FileClosedEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    folder, ready, result, expected = sys.argv[1:5]
    expected = int(expected)
    seen = {}
    last = [time.monotonic()]

    class Counter(FileSystemEventHandler):
        def on_closed(self, event):
            seen.setdefault(event.src_path.rsplit("/", 1)[1], time.time())
            last[0] = time.monotonic()

    observer = InotifyObserver()
    observer.schedule(Counter(), folder, event_filter=[FileClosedEvent])
    observer.start()
    open(ready, "w").close()
    while len(seen) < expected and time.monotonic() - last[0] < QUIET:
        time.sleep(0.05)
    observer.stop()
    observer.join()
    json.dump(seen, open(result, "w"))
    """
).replace("QUIET", repr(QUIET_S))

FNPLANE_CONTESTANT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from fnplane import App, logs
    from fnplane.config import Settings
    from fnplane.runner import Platform

    folder, ready, result, expected, state = sys.argv[1:6]
    expected = int(expected)
    seen = {}
    done = asyncio.Event()
    app = App()

    @app.on_file(folder, settle=0.2)
    async def handle(event, context):
        seen.setdefault(event.key, time.time())
        if len(seen) >= expected:
            done.set()

    async def main():
        logs.configure("json", LOG_LEVEL)
        platform = Platform(app, Settings(port=0, state_dir=state, grace=5))
        await platform.start()
        open(ready, "w").close()
        try:
            await asyncio.wait_for(done.wait(), TIMEOUT)
        finally:
            json.dump(seen, open(result, "w"))
            await platform.stop()

    asyncio.run(main())
    """
).replace("TIMEOUT", repr(DONE_TIMEOUT_S))

FNPLANE_CONTESTANT = FNPLANE_CONTESTANT.replace(
    "LOG_LEVEL", repr(os.environ.get("BENCH_LOG_LEVEL", "warning"))
)
CONTESTANTS = {"watchdog": WATCHDOG_CONTESTANT, "fnplane": FNPLANE_CONTESTANT}


def scratch_root() -> Path:
    """A tmpfs folder when there is one (the scenario PERFORMANCE.md measures)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else None))


def drop_files(folder: Path, count: int) -> dict[str, float]:
    """Write ``count`` small files as fast as possible; return each close time."""
    closed: dict[str, float] = {}
    payload = b"x" * 100
    for number in range(count):
        name = f"file-{number:06d}.dat"
        with open(folder / name, "wb") as file:
            file.write(payload)
        closed[name] = time.time()
    return closed


def run_contestant(name: str, files: int) -> dict[str, Any]:
    """One contestant in a fresh process and folder; its rate, latency, CPU."""
    root = scratch_root()
    folder = root / "inbox"
    folder.mkdir()
    ready, result = root / "ready", root / "result.json"
    process = subprocess.Popen(
        [
            sys.executable, "-c", CONTESTANTS[name],
            str(folder), str(ready), str(result), str(files), str(root / "state"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"{name} contestant did not start")
        time.sleep(0.01)

    closed = drop_files(folder, files)
    # The contestant ends by itself (done, or DONE_TIMEOUT_S); wait4 gives
    # its own resource use, peak memory included (ru_maxrss, KiB on Linux).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seen: dict[str, float] = json.loads(result.read_text())
    # Ten thousand files a run add up in memory when the folder is tmpfs.
    shutil.rmtree(root, ignore_errors=True)
    cpu_s = usage.ru_utime + usage.ru_stime
    return summarise(name, closed, seen, cpu_s) | {
        "peak_rss_mb": usage.ru_maxrss / 1024
    }


def summarise(
    name: str, closed: dict[str, float], seen: dict[str, float], cpu_s: float
) -> dict[str, Any]:
    """Rate, latency percentiles and losses of one contestant's run."""
    first_close = min(closed.values())
    span_s = max(seen.values()) - first_close if seen else float("inf")
    latencies_ms = sorted(
        (seen[key] - closed[key]) * 1000 for key in seen if key in closed
    )
    return {
        "contestant": name,
        "handled": len(seen),
        "lost": len(closed) - len(seen),
        "rate": len(seen) / span_s if span_s > 0 else 0.0,
        "p50_ms": percentile(latencies_ms, 0.50),
        "p99_ms": percentile(latencies_ms, 0.99),
        "cpu_us_per_file": cpu_s / max(1, len(closed)) * 1e6,
    }


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list (nearest rank)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(fraction * len(values)))]


def file_rounds(files: int, rounds: int) -> None:
    """Every round runs both contestants, rotating which goes first."""
    ratios: list[float] = []
    names = list(CONTESTANTS)
    for round_number in range(rounds):
        order = names[round_number % 2 :] + names[: round_number % 2]
        results = {name: run_contestant(name, files) for name in order}
        for name in names:
            result = results[name]
            print(
                f"round {round_number + 1} {name:9s} handled {result['handled']:6d} "
                f"lost {result['lost']:5d}  {result['rate']:9.0f} files/s  "
                f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
                f"CPU {result['cpu_us_per_file']:6.0f} us/file  "
                f"peak RSS {result['peak_rss_mb']:5.0f} MB"
            )
        ratio = results["fnplane"]["rate"] / max(results["watchdog"]["rate"], 1e-9)
        ratios.append(ratio)
        print(f"round {round_number + 1} ratio fnplane/watchdog {ratio:.2f}")
    print(
        f"files: fnplane / raw watchdog rate, median of {rounds} rounds "
        f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max "
        f"{max(ratios):.2f}); target >= 0.8"
    )


async def async_round(events: int) -> dict[str, float]:
    """Accept ``events`` durable async invocations; measure accept and delivery."""
    from fnplane import App, logs
    from fnplane.config import Settings
    from fnplane.invoke import Invoker

    logs.configure("json", os.environ.get("BENCH_LOG_LEVEL", "warning"))
    app = App()
    started: dict[int, float] = {}
    done = asyncio.Event()

    @app.function()
    async def sink(event: dict[str, int], context: Any) -> None:
        started[event["n"]] = time.perf_counter()
        if len(started) == events:
            done.set()

    state = scratch_root() / "state"
    invoker = Invoker(app, Settings(state_dir=str(state)))
    await invoker.async_queue.start()
    accepted: dict[int, float] = {}
    began = time.perf_counter()

    async def submit(number: int) -> None:
        await invoker.invoke_async("sink", {"n": number})
        accepted[number] = time.perf_counter()

    # Clients send concurrently, as an HTTP server's connections would.
    for first in range(0, events, 500):
        await asyncio.gather(
            *(submit(n) for n in range(first, min(events, first + 500)))
        )
    accept_s = time.perf_counter() - began
    await asyncio.wait_for(done.wait(), DONE_TIMEOUT_S)
    total_s = max(started.values()) - began
    await invoker.shutdown()
    shutil.rmtree(state.parent, ignore_errors=True)
    latencies_ms = sorted((started[n] - accepted[n]) * 1000 for n in started)
    return {
        "accepts_per_s": events / accept_s,
        "delivered_per_s": events / total_s,
        "p50_ms": percentile(latencies_ms, 0.5),
        "p99_ms": percentile(latencies_ms, 0.99),
    }


def async_rounds(events: int, rounds: int) -> None:
    """Print the async queue's throughput per round and the median."""
    accepts: list[float] = []
    for round_number in range(rounds):
        result = asyncio.run(async_round(events))
        accepts.append(result["accepts_per_s"])
        print(
            f"round {round_number + 1} async: {result['accepts_per_s']:8.0f} durable "
            f"accepts/s, {result['delivered_per_s']:8.0f} delivered/s, accept -> "
            f"handler start p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms"
        )
    print(
        f"async: median {statistics.median(accepts):.0f} durable accepts/s "
        f"(min {min(accepts):.0f}, max {max(accepts):.0f}); target >= 5000"
    )


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--skip-files", action="store_true")
    parser.add_argument("--skip-async", action="store_true")
    args = parser.parse_args()
    if min(args.files, args.rounds, args.events) < 1:
        # Nothing to wait for: a round of 0 would wait for its timeout.
        parser.error("--files, --rounds and --events must be at least 1")
    if not args.skip_files:
        file_rounds(args.files, args.rounds)
    if not args.skip_async:
        async_rounds(args.events, args.rounds)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
