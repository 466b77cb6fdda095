"""Workflow engine throughput: state transitions per second.

Runs an Express chain of 1,000 Pass states, an Express Map over 10,000
items, and the same chain as a Standard execution journaled to SQLite, then
prints transitions/s and the Standard / Express ratio: per round, then the
median, min and max over the rounds, with the machine's load average.

    python benchmarks/workflows.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Running this file puts benchmarks/ first on sys.path, where a sibling
# benchmark named like a standard module (http.py) would shadow it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from fnplane.workflows import WorkflowService  # noqa: E402
from fnplane.workflows.sqlite_journal import SqliteJournal  # noqa: E402

CHAIN_STATES = 1_000
MAP_ITEMS = 10_000


async def _no_functions(name: str, payload: Any, timeout_s: float | None) -> Any:
    raise LookupError(name)


def chain(length: int) -> dict[str, Any]:
    """A definition of ``length`` Pass states in a row."""
    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(length - 1)}
    states[f"S{length - 1}"] = {"Type": "Pass", "End": True}
    return {"StartAt": "S0", "States": states}


def mapper() -> dict[str, Any]:
    """A Map whose item processor is one Pass state."""
    processor = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    return {
        "StartAt": "M",
        "States": {"M": {"Type": "Map", "ItemProcessor": processor, "End": True}},
    }


async def rate(
    service: WorkflowService,
    definition: dict[str, Any],
    kind: str,
    data: Any,
    transitions: int,
    rounds: int = 3,
) -> float:
    """Best transitions/s over a few executions of ``definition``."""
    machine = service.create_state_machine(
        f"bench-{kind}-{transitions}", definition, kind
    )
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        record = await service.start_sync_execution(machine.arn, data)
        elapsed = time.perf_counter() - started
        assert record.status == "SUCCEEDED", record.error
        best = max(best, transitions / elapsed)
    return best


async def one_round() -> tuple[float, float, float]:
    """Return (Express chain, Express Map, Standard chain) transitions/s."""
    express = WorkflowService(_no_functions)
    chain_rate = await rate(
        express, chain(CHAIN_STATES), "EXPRESS", {"n": 1}, CHAIN_STATES
    )
    # A Map over N items makes N+1 state transitions (each item's Pass + Map).
    map_rate = await rate(
        express, mapper(), "EXPRESS", list(range(MAP_ITEMS)), MAP_ITEMS + 1
    )
    with tempfile.TemporaryDirectory() as folder:
        journal = SqliteJournal(folder)
        standard = WorkflowService(_no_functions, journal=journal)
        standard_rate = await rate(
            standard, chain(CHAIN_STATES), "STANDARD", {"n": 1}, CHAIN_STATES
        )
        journal.close()
    return chain_rate, map_rate, standard_rate


def _spread(label: str, values: list[float], form: str) -> None:
    median, low, high = statistics.median(values), min(values), max(values)
    print(f"{label:<40} median {median:{form}}  min {low:{form}}  max {high:{form}}")


async def main(rounds: int) -> None:
    """Print the three figures and the ratio per round, then their spread."""
    results = []
    for number in range(1, rounds + 1):
        chain_rate, map_rate, standard_rate = await one_round()
        results.append((chain_rate, map_rate, standard_rate))
        print(
            f"round {number}: Express chain {chain_rate:,.0f}/s, Express Map"
            f" {map_rate:,.0f}/s, Standard chain {standard_rate:,.0f}/s,"
            f" ratio {standard_rate / chain_rate:.2f}"
        )
    chains, maps, standards = (list(column) for column in zip(*results, strict=True))
    print(f"\ntransitions/s over {rounds} rounds (each the best of 3 executions):")
    _spread(f"Express chain of {CHAIN_STATES} Pass states", chains, ",.0f")
    _spread(f"Express Map over {MAP_ITEMS} items", maps, ",.0f")
    _spread("Standard chain, SQLite journal", standards, ",.0f")
    ratios = [standard / express for express, _, standard in results]
    _spread("Standard / Express ratio", ratios, ".2f")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load} on {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
