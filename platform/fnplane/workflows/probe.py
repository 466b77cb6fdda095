"""What a TestState call observes and steers inside the state it runs.

A ``Probe`` rides on the ``StateRun`` of the state under test only, never on
the states a Map or Parallel runs inside it. The engine's input and output
steps report each intermediate value to it (``afterInputPath``, ``result``,
...). It answers the state's work from a mock, reports a matching retrier
instead of retrying (TestState's ``RETRIABLE``), notes the catcher that took
an error, and builds the context object TestState shows.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fnplane.workflows.errors import (
    EXCEEDED_TOLERATED_FAILURE,
    InvalidRequestError,
    StatesError,
)
from fnplane.workflows.retry import RetryPolicy

if TYPE_CHECKING:
    from fnplane.workflows.runner import StateRun

# AWS calls every state "StateName" in the context object of a TestState call.
CONTEXT_STATE_NAME = "StateName"
FIELD_VALIDATION_MODES = ("STRICT", "PRESENT", "NONE")
# The states that can retry carry a RetryCount in their context object.
_RETRYING_TYPES = ("Task", "Map", "Parallel")


@dataclass(frozen=True, slots=True)
class StateMock:
    """The mocked outcome of the tested state's work: its task call, or its
    Map iterations or Parallel branches taken together.

    Build one with ``StateMock.returning(result)`` or
    ``StateMock.failing(error, cause)``.

    Attributes:
        result: what the work returned (any JSON value) unless ``fails``.
        fails: the work failed with ``error`` and ``cause``.
        error: the error name Retry and Catch match on.
        cause: the explanation, or None.
        field_validation_mode: ``STRICT``, ``PRESENT`` or ``NONE``. fnplane
            keeps no AWS service schemas, so every mode accepts any result.
    """

    result: Any = None
    fails: bool = False
    error: str | None = None
    cause: str | None = None
    field_validation_mode: str = "STRICT"

    @classmethod
    def returning(cls, result: Any) -> StateMock:
        """Mock work that returns ``result``."""
        return cls(result=result)

    @classmethod
    def failing(cls, error: str | None, cause: str | None = None) -> StateMock:
        """Mock work that fails with ``error`` and ``cause``."""
        return cls(fails=True, error=error, cause=cause)

    @classmethod
    def from_api(cls, mock: dict[str, Any]) -> StateMock:
        """Read the ``mock`` field of a TestState request.

        ``result`` is JSON text; ``errorOutput`` is ``{"error", "cause"}``.

        Raises:
            InvalidRequestError: neither or both of ``result`` and
                ``errorOutput``, a result that is not JSON, or an unknown
                ``fieldValidationMode``.
        """
        mode = mock.get("fieldValidationMode", "STRICT")
        if mode not in FIELD_VALIDATION_MODES:
            raise InvalidRequestError(
                f"mock.fieldValidationMode {mode!r} is not one of"
                f" {', '.join(FIELD_VALIDATION_MODES)}"
            )
        if ("result" in mock) == ("errorOutput" in mock):
            raise InvalidRequestError(
                "mock needs exactly one of 'result' (JSON text) and 'errorOutput'"
            )
        if "errorOutput" in mock:
            error_output = mock["errorOutput"] or {}
            return cls(
                fails=True,
                error=error_output.get("error"),
                cause=error_output.get("cause"),
                field_validation_mode=mode,
            )
        try:
            result = json.loads(mock["result"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise InvalidRequestError(
                f"mock.result must be JSON text, got {mock['result']!r}: {exc}"
            ) from exc
        return cls(result=result, field_validation_mode=mode)

    def outcome(self) -> Any:
        """Return the mocked result, or raise the mocked error."""
        if self.fails:
            raise StatesError(self.error, self.cause)
        return self.result


@dataclass(frozen=True, slots=True)
class StateConfiguration:
    """Where a TestState call imagines the state within an execution.

    Attributes:
        retrier_retry_count: the retries the matching retrier has already
            made (default 0); once it reaches ``MaxAttempts`` the error is no
            longer RETRIABLE.
        error_caused_by_state: the state inside a Map or Parallel where the
            mocked error happens.
        map_iteration_failure_count: how many Map iterations failed; more than
            the Map tolerates fails it with
            ``States.ExceedToleratedFailureThreshold``.
        map_item_reader_data: the items the Map's ItemReader would read.
    """

    retrier_retry_count: int = 0
    error_caused_by_state: str | None = None
    map_iteration_failure_count: int = 0
    map_item_reader_data: list[Any] | None = None

    @classmethod
    def from_api(cls, configuration: dict[str, Any] | None) -> StateConfiguration:
        """Read the ``stateConfiguration`` field of a TestState request.

        Raises:
            InvalidRequestError: a negative count, or ``mapItemReaderData``
                that is not JSON text of an array.
        """
        configuration = configuration or {}
        retries = configuration.get("retrierRetryCount", 0)
        failures = configuration.get("mapIterationFailureCount", 0)
        for field, value in (
            ("retrierRetryCount", retries),
            ("mapIterationFailureCount", failures),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(
                    f"stateConfiguration.{field} must be a non-negative integer,"
                    f" got {value!r}"
                )
        return cls(
            retrier_retry_count=retries,
            error_caused_by_state=configuration.get("errorCausedByState"),
            map_iteration_failure_count=failures,
            map_item_reader_data=_reader_data(configuration.get("mapItemReaderData")),
        )


def _reader_data(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    try:
        items = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(
            f"stateConfiguration.mapItemReaderData must be JSON text: {exc}"
        ) from exc
    if not isinstance(items, list):
        raise InvalidRequestError(
            f"stateConfiguration.mapItemReaderData must be a JSON array, got {text!r}"
        )
    return items


class Retriable(Exception):
    """The tested state failed with an error one of its retriers would retry.

    Not a state error: it ends the TestState run with status ``RETRIABLE``.
    """

    def __init__(self, error: StatesError) -> None:
        super().__init__(str(error))
        self.error = error


class Probe:
    """Observes and steers the one state a TestState call runs.

    Args:
        mock: the mocked outcome of the state's work, or None to do it.
        configuration: retry count, Map failures, item reader data.
        context: the context object to show instead of the built one.
    """

    def __init__(
        self,
        mock: StateMock | None,
        configuration: StateConfiguration,
        context: dict[str, Any] | None,
    ) -> None:
        self.mock = mock
        self.configuration = configuration
        self.context_override = context
        self.recorded: dict[str, Any] = {}
        self.error_details: dict[str, Any] = {}
        self.caught_error: StatesError | None = None

    @property
    def reader_items(self) -> list[Any] | None:
        """The items a Map's ItemReader yields in this call, if given."""
        return self.configuration.map_item_reader_data

    def record(self, key: str, value: Any) -> None:
        """Keep an intermediate value under its inspection data name."""
        self.recorded[key] = value

    def map_outcome(self, tolerated: float) -> Any:
        """Return the mocked Map result, or fail as the configuration says.

        ``tolerated`` is the Map's threshold of failed iterations, negative
        when it sets no ``ToleratedFailure...``: AWS then ignores the failure
        count, as a Map without a threshold has no count to exceed.
        """
        assert self.mock is not None
        result = self.mock.outcome()
        failures = self.configuration.map_iteration_failure_count
        if tolerated >= 0 and failures > tolerated:
            raise StatesError(
                EXCEEDED_TOLERATED_FAILURE,
                "The specified tolerated failure threshold was exceeded",
            )
        return result

    def retrier_matched(
        self, index: int, policy: RetryPolicy, exc: StatesError
    ) -> None:
        """Note the retrier matching ``exc``; raise ``Retriable`` if it has
        attempts left, else return so that the catchers are tried."""
        self.error_details["retryIndex"] = index
        retries = self.configuration.retrier_retry_count
        if retries < policy.max_attempts:
            # The API's field holds whole seconds.
            backoff_s = int(policy.delay_s(retries))
            self.error_details["retryBackoffIntervalSeconds"] = backoff_s
            raise Retriable(exc)

    def caught(self, index: int, exc: StatesError) -> None:
        """Note that catcher ``index`` took ``exc``."""
        self.error_details["catchIndex"] = index
        self.caught_error = exc

    def context(self, run: StateRun) -> dict[str, Any]:
        """The context object of the tested state: the request's, else built."""
        if self.context_override is not None:
            # Deep-copied: a Map adds its item to the object it is given.
            return copy.deepcopy(self.context_override)
        context = run.execution_context()
        state = context["State"]
        state["Name"] = CONTEXT_STATE_NAME
        if run.state["Type"] in _RETRYING_TYPES:
            state["RetryCount"] = run.retry_count
        return context
