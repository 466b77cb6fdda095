"""The recorded AWS Step Functions executions, replayed through the engine.

Every case of ``cases/`` runs as a Standard (journaled) or Express execution
on a fake clock, with each Task answered from ``tasks.json``; the status,
output (or error and cause) and, where recorded, the history's event types
must match what AWS produced.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fnplane.workflows import FakeClock, MemoryJournal, WorkflowService
from fnplane.workflows.resources import parse_resource

from .corpus import (
    CORPUS,
    ReplayInvoker,
    case_names,
    cause_matches,
    load,
    loosely_equal,
)

ACCOUNT = "111111111111"
_RESOURCE = re.compile(r'"Resource"\s*:\s*"([^"]*)"')


def skip_reason(definition: dict[str, Any]) -> str | None:
    """Say why a case is out of scope, or None when it must pass."""
    text = json.dumps(definition)
    for resource_text in _RESOURCE.findall(text):
        resource = parse_resource(resource_text)
        if resource.pattern:
            return (
                f"{resource_text}: callback/.sync integration patterns are out of"
                " scope (fnplane invokes functions only)"
            )
        if resource.kind == "unsupported":
            return (
                f"{resource_text}: non-Lambda AWS service integrations are out of"
                " scope (fnplane invokes functions only)"
            )
    return None


def _runs_concurrently(definition: dict[str, Any]) -> bool:
    text = json.dumps(definition)
    if '"Parallel"' in text:
        return True
    return '"Map"' in text and '"MaxConcurrency": 1' not in text


def _check_history(case: Path, definition: dict[str, Any], events: list[Any]) -> None:
    recorded = load(case, "history.json")
    if not recorded:
        return
    expected = [event["type"] for event in recorded]
    actual = [event["type"] for event in events]
    if any(not isinstance(event["id"], int) for event in recorded):
        # LocalStack re-sorted these histories to hide branch order and lost
        # some events doing so: every recorded event must still be ours.
        assert not Counter(expected) - Counter(actual), (expected, actual)
    elif _runs_concurrently(definition):
        # Branches and iterations interleave in no fixed order, on AWS too.
        assert Counter(expected) == Counter(actual), (expected, actual)
    else:
        assert expected == actual


@pytest.mark.parametrize("name", case_names("cases"))
async def test_recorded_execution(name: str) -> None:
    """The engine reproduces AWS's recorded outcome of this execution."""
    case = CORPUS / "cases" / name
    definition = load(case, "definition.json")
    reason = skip_reason(definition)
    if reason:
        pytest.skip(reason)
    meta, expected = load(case, "meta.json"), load(case, "expected.json")
    tasks = load(case, "tasks.json") or {}
    service = WorkflowService(
        ReplayInvoker(tasks.get("invocations", [])),
        journal=MemoryJournal(),
        clock=FakeClock(time.time()),
        account_id=ACCOUNT,
        express_history=True,
    )
    machine = service.create_state_machine(
        "machine", definition, meta["state_machine_type"]
    )

    record = await service.start_sync_execution(machine.arn, load(case, "input.json"))

    assert record.status == expected["status"], (record.error, record.cause)
    if record.status == "SUCCEEDED":
        assert loosely_equal(expected["output"], record.output), record.output
    else:
        assert record.error == expected["error"]
        assert cause_matches(expected["cause"], record.cause, loose=True), record.cause
    _check_history(case, definition, service.history(record.arn))


def test_corpus_is_present() -> None:
    """The conformance corpus is where the tests expect it (else they vanish)."""
    assert len(case_names("cases")) > 900
