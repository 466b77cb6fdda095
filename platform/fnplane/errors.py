"""fnplane's exceptions, all under one root.

::

    FnplaneError
    ├── RegistrationError (ValueError)   a decorator got a bad option, name or route
    ├── LoadError (ImportError)          a target for ``fnplane run`` could not load
    ├── FunctionNotFoundError (LookupError)
    ├── ProcessEnvironmentError          a worker process could not do what was asked
    ├── InvocationError                  an invocation did not produce a result
    │   ├── ThrottledError               no concurrency slot was free
    │   ├── InvocationTimeoutError       the handler outlived its timeout
    │   ├── InitError                    the environment's Init failed or timed out
    │   └── HandlerError                 the handler raised
    └── FunctionError                    raised by a handler on purpose ("handled")
        ├── HttpError                    ... with the HTTP status to answer
        │   └── BadRequestError (ValueError)  the request body is not what was asked
        ├── BatchFailure                 some records of a stream batch failed
        └── RecordDecodeError (ValueError)  a stream record's value is not JSON/UTF-8

Usage errors also subclass the matching builtin so code that catches
``ValueError`` or ``LookupError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class FnplaneError(Exception):
    """Root of every error fnplane raises."""


class RegistrationError(FnplaneError, ValueError):
    """A decorator was given a bad option, a duplicate name or a clashing route."""


class LoadError(FnplaneError, ImportError):
    """The functions to run could not be loaded (bad path, import error, no app)."""


class FunctionNotFoundError(FnplaneError, LookupError):
    """No function is registered under the given name."""

    def __init__(self, name: str, known: list[str]) -> None:
        choices = ", ".join(sorted(known)) or "none are registered"
        super().__init__(f"function {name!r} is not registered (known: {choices})")
        self.function_name = name


class ProcessEnvironmentError(FnplaneError):
    """A process environment could not do what was asked: a call relayed from a
    worker failed, or something is not available in a worker."""


class FunctionError(FnplaneError):
    """Raise from a handler to fail the invocation on purpose.

    The invocation's outcome is a *handled* error: it is logged without a
    traceback and reported with ``error_type`` (the class name by default), as
    Lambda reports ``X-Amz-Function-Error: Handled``.
    """

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__


class InvocationError(FnplaneError):
    """An invocation ended without a result; ``error_type`` names why."""

    error_type = "Runtime.Error"

    def __init__(self, message: str, *, function: str, request_id: str) -> None:
        super().__init__(message)
        self.function_name = function
        self.request_id = request_id


class ThrottledError(InvocationError):
    """The function's concurrency limit was reached; retry later."""

    error_type = "TooManyRequestsException"


class InvocationTimeoutError(InvocationError):
    """The handler did not finish within the function's timeout."""

    error_type = "Sandbox.Timedout"


class InitError(InvocationError):
    """The execution environment's Init failed; the next invocation retries it."""

    error_type = "Runtime.InitError"


class HandlerError(InvocationError):
    """The handler raised; the original exception is the ``__cause__``."""

    def __init__(
        self,
        message: str,
        *,
        function: str,
        request_id: str,
        error_type: str,
        stack_trace: list[str],
        handled: bool,
    ) -> None:
        super().__init__(message, function=function, request_id=request_id)
        self.error_type = error_type
        self.stack_trace = stack_trace
        self.handled = handled


class HttpError(FunctionError):
    """A handled error that the HTTP source answers with ``status_code``."""

    status_code = 500

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, error_type)
        if status_code is not None:
            if not 100 <= status_code <= 599:
                raise ValueError(f"HTTP status must be 100 to 599, got {status_code}")
            self.status_code = status_code


class BadRequestError(HttpError, ValueError):
    """The request could not be read as asked (bad JSON, bad UTF-8): a 400."""

    status_code = 400


class BatchFailure(FunctionError):
    """Raise from a stream batch handler to fail some records and keep the others.

    ``records`` are the failed records or their ``item_id``s; only those are
    retried. Equivalent to returning ``{"batchItemFailures": [...]}``.
    """

    def __init__(self, records: Iterable[Any], message: str = "record failed") -> None:
        super().__init__(message)
        self.item_ids = [
            item if isinstance(item, str) else item.item_id for item in records
        ]


class RecordDecodeError(FunctionError, ValueError):
    """A stream record's value is not what ``json()`` or ``text()`` was asked to read.

    Raised from a handler it fails that record (a record failure), never the
    consumer: ``item_id`` names the record.
    """

    def __init__(self, message: str, item_id: str) -> None:
        super().__init__(message)
        self.item_id = item_id


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for a log line, without repeating a type name the
    message already starts with (aiokafka's errors carry their own)."""
    name = type(exc).__name__
    message = str(exc)
    if message.startswith(name):
        return message
    return f"{name}: {message}" if message else name
