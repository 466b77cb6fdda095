"""HTTP JSON echo: fnplane beside bare aiohttp and Starlette, in one run.

Each round starts every contestant in a fresh process pinned to CPU 0 and
drives it with wrk (one thread, 64 connections) pinned to CPU 1, rotating
which contestant goes first. Reported: requests/s, p50 and p99 latency, CPU
µs per request of the server, and the median (min–max) of per-round ratios
of fnplane to each baseline. Needs ``wrk`` (apt-get install wrk).

    python benchmarks/http.py [--rounds 5] [--duration 10]
"""

import sys
from pathlib import Path

# This file's name shadows the standard library's ``http`` package for any
# module imported while its folder is first on sys.path (aiohttp imports
# ``http``), so the folder is taken off the path before anything else.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

BODY = json.dumps({"user": "ada", "items": [1, 2, 3], "note": "x" * 64})
BASELINES = ("aiohttp-lowlevel", "aiohttp-app", "starlette")
CONTESTANTS = ("fnplane", *BASELINES)
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/echo", data=BODY.encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=1) as response:
                if json.loads(response.read()) == json.loads(BODY):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not answer in time")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_latency_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(kind: str, duration_s: int, script: str) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-P", str(HERE / "http_servers.py"), kind, str(port)]
    server = subprocess.Popen(
        ["taskset", "-c", "0", *command], stdout=subprocess.DEVNULL
    )
    try:
        wait_ready(port, server)
        cpu_before = cpu_seconds(server.pid)
        output = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration_s}s",
             "--latency", "-s", script, f"http://127.0.0.1:{port}/echo"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        cpu_used = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait()
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors or "Socket errors" in output:
        print(f"  warning: {kind} had errors: {output.strip().splitlines()[-3:]}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": parse_latency_ms(output, "50"),
        "p99_ms": parse_latency_ms(output, "99"),
        "cpu_us": cpu_used / requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument(
        "--with-info-logs", action="store_true",
        help="also run fnplane with the per-invocation REPORT line at INFO",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    contestants = list(CONTESTANTS)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        contestants.remove("starlette")
        print("starlette/uvicorn not installed (pip install -e '.[bench]'): skipped")
    if args.with_info_logs:
        contestants.append("fnplane-info")

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in contestants}
    for round_index in range(args.rounds):
        order = (
            contestants[round_index % len(contestants) :]
            + contestants[: round_index % len(contestants)]
        )
        for kind in order:
            figures = measure(kind, args.duration, script.name)
            results[kind].append(figures)
            print(
                f"round {round_index + 1} {kind:18} {figures['rps']:9.0f} req/s  "
                f"p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms  "
                f"{figures['cpu_us']:6.1f} µs CPU/req"
            )
    os.unlink(script.name)
    report(results, contestants)


def report(results: dict[str, list[dict[str, float]]], contestants: list[str]) -> None:
    print("\nmedians over rounds:")
    for kind in contestants:
        runs = results[kind]
        print(
            f"  {kind:18} {statistics.median(r['rps'] for r in runs):9.0f} req/s  "
            f"p50 {statistics.median(r['p50_ms'] for r in runs):6.2f} ms  "
            f"p99 {statistics.median(r['p99_ms'] for r in runs):6.2f} ms  "
            f"{statistics.median(r['cpu_us'] for r in runs):6.1f} µs CPU/req"
        )
    print("\nfnplane ÷ baseline, requests/s (median of per-round ratios, min–max):")
    for contender in [k for k in contestants if k.startswith("fnplane")]:
        for baseline in [k for k in contestants if not k.startswith("fnplane")]:
            ratios = [
                mine["rps"] / theirs["rps"]
                for mine, theirs in zip(
                    results[contender], results[baseline], strict=True
                )
            ]
            print(
                f"  {contender} ÷ {baseline:18} {statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}–{max(ratios):.3f})"
            )


if __name__ == "__main__":
    main()
