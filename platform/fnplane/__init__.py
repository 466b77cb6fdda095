"""fnplane: self-hosted serverless functions for Python.

Register handlers on an ``App`` with decorators, then serve them with
``fnplane run``. The public names are re-exported here.
"""

from __future__ import annotations

from fnplane.app import App
from fnplane.context import Context
from fnplane.errors import (
    BadRequestError,
    BatchFailure,
    FnplaneError,
    FunctionError,
    FunctionNotFoundError,
    HandlerError,
    HttpError,
    InitError,
    InvocationError,
    InvocationTimeoutError,
    LoadError,
    RecordDecodeError,
    RegistrationError,
    ThrottledError,
)
from fnplane.events.http_request import HttpRequest
from fnplane.events.http_response import Response
from fnplane.events.stream import KafkaBatch, KafkaRecord, RedisBatch, RedisRecord

__all__ = [
    "App",
    "BadRequestError",
    "BatchFailure",
    "Context",
    "FnplaneError",
    "FunctionError",
    "FunctionNotFoundError",
    "HandlerError",
    "HttpError",
    "HttpRequest",
    "InitError",
    "InvocationError",
    "InvocationTimeoutError",
    "KafkaBatch",
    "KafkaRecord",
    "LoadError",
    "RecordDecodeError",
    "RedisBatch",
    "RedisRecord",
    "RegistrationError",
    "Response",
    "ThrottledError",
]
