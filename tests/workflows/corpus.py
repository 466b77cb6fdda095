"""Helpers to run the recorded ASL conformance corpus against the engine.

The corpus (``/work/shared/asl-conformance``) pairs definitions and inputs with
what AWS Step Functions produced. Task results are replayed from
``tasks.json``; comparisons of masked ("loose") cases treat ``<...>``
placeholders and masked dates as wildcards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fnplane.workflows import TaskFailed

CORPUS = Path(os.environ.get("FNPLANE_ASL_CORPUS", "/work/shared/asl-conformance"))
# Sizes of payloads that contain masked resource names cannot match exactly.
_SIZE_KEYS = {"Content-Length"}
_PLACEHOLDER = re.compile(r"<[^<>]*>")
_MASKED_VALUES = {
    "date",
    "start-date",
    "start-time",
    "entered-time",
    "timestamp",
    "snf_role_arn",
    "sfn_role_arn",
    "X-Amzn-Trace-Id",
    "RequestId",
    "request-id",
    "RandomNumberGenerated",
    "lambda_function_name",
}


def load(case_dir: Path, name: str) -> Any:
    """Read one JSON file of a case, or None when it is absent."""
    path = case_dir / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


def case_names(folder: str) -> list[str]:
    """Return the case folder names of one part of the corpus, sorted."""
    root = CORPUS / folder
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir())


class ReplayInvoker:
    """An invoker that answers each call with what AWS recorded for it.

    Calls are matched to recordings on their payload first, then in order,
    since Map iterations may call in any order.
    """

    def __init__(self, invocations: list[dict[str, Any]]) -> None:
        self.pending = list(invocations)
        self.calls: list[tuple[str, Any, float | None]] = []

    def _take(self, payload: Any) -> dict[str, Any]:
        for index, recorded in enumerate(self.pending):
            if _recorded_payload(recorded) == payload:
                return self.pending.pop(index)
        if not self.pending:
            raise AssertionError(f"unexpected task call with {payload!r}")
        return self.pending.pop(0)

    async def __call__(
        self, function_name: str, payload: Any, timeout_s: float | None
    ) -> Any:
        """Return or raise the recorded result of the matching call."""
        self.calls.append((function_name, payload, timeout_s))
        recorded = self._take(payload)
        result = recorded["result"]
        if "output" in result:
            output = result["output"]
            if recorded.get("resourceType") == "lambda" and isinstance(output, dict):
                return output.get("Payload")
            return output
        cause = result.get("cause")
        if isinstance(cause, dict | list):
            cause = json.dumps(cause)
        error = result.get("error")
        if result.get("event", "").endswith("TimedOut"):
            error = "States.Timeout"
        raise TaskFailed(error, cause)


def _recorded_payload(recorded: dict[str, Any]) -> Any:
    if "parameters" in recorded:
        parameters = recorded["parameters"]
        if isinstance(parameters, dict):
            return parameters.get("Payload")
        return parameters
    return recorded.get("input")


def loosely_equal(expected: Any, actual: Any) -> bool:
    """Compare with ``<...>`` placeholders and masked values as wildcards."""
    if isinstance(expected, str):
        if expected in _MASKED_VALUES:
            return True
        if not isinstance(actual, str):
            return bool(_PLACEHOLDER.fullmatch(expected))
        if _PLACEHOLDER.search(expected):
            pattern = "".join(
                ".*" if _PLACEHOLDER.fullmatch(part) else re.escape(part)
                for part in re.split(r"(<[^<>]*>)", expected)
            )
            return re.fullmatch(pattern, actual, re.DOTALL) is not None
        return expected == actual
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            return False
        # The snapshot tool masks some values with their own key's name.
        return all(
            value == key or key in _SIZE_KEYS or loosely_equal(value, actual[key])
            for key, value in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return False
        return all(loosely_equal(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


def cause_matches(expected: Any, actual: str | None, loose: bool) -> bool:
    """Compare causes; an object cause was JSON text AWS's tool parsed."""
    if isinstance(expected, dict | list):
        try:
            actual = json.loads(actual or "")
        except json.JSONDecodeError:
            return False
        return loosely_equal(expected, actual)
    if expected is None or actual is None:
        return expected == actual
    return loosely_equal(expected, actual) if loose else expected == actual
