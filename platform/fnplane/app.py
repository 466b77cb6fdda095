"""The ``App``: decorators that register functions and their triggers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack, cast

from fnplane.errors import FunctionNotFoundError, RegistrationError
from fnplane.file_trigger import (
    DEFAULT_FAILED,
    DEFAULT_IGNORE,
    DEFAULT_PROCESSED,
    DEFAULT_SETTLE_S,
    FILE_EVENTS,
    FileTrigger,
)
from fnplane.function import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    Function,
    Handler,
    Hook,
    Trigger,
    validate_concurrency,
    validate_hooks,
    validate_memory,
    validate_timeout,
)
from fnplane.policy import Backoff, build_async_policy
from fnplane.routes import HttpTrigger, RouteTable
from fnplane.stream_trigger import (
    DEFAULT_CLAIM_IDLE_S,
    KafkaTrigger,
    RedisStreamTrigger,
    StreamOptions,
    StreamTrigger,
    duration,
    flag,
    optional_name,
    redis_url,
    stream_names,
)
from fnplane.streams import stream_handler

if TYPE_CHECKING:
    from fnplane.destinations import Destination
    from fnplane.runner import Platform
    from fnplane.workflows.hosting import StateMachineSpec

H = TypeVar("H", bound=Callable[..., Any])

# Lambda's own rule for function names, so a name works in an ARN unchanged.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FunctionOptions(TypedDict, total=False):
    """Options every decorator accepts; see ``App.function`` for each one."""

    name: str
    timeout: float | timedelta
    concurrency: int | None
    memory: int
    init: Hook | list[Hook]
    shutdown: Hook | list[Hook]
    retries: int
    backoff: Backoff | float | timedelta | tuple[float, float]
    max_event_age: float | timedelta
    on_success: Destination | str | None
    on_failure: Destination | str | None


FUNCTION_OPTIONS = frozenset(FunctionOptions.__annotations__)


class StreamOptionArgs(TypedDict, total=False):
    """Options of ``kafka`` and ``redis_stream``; see ``StreamOptions``.

    Besides their own, stream decorators take ``name``, ``timeout``,
    ``memory``, ``init`` and ``shutdown``; ``retries``, ``backoff`` and
    ``concurrency`` are the stream source's there (per-source retries,
    parallel batches), not the async invocation policy.
    """

    batch_size: int
    batch_window: float | timedelta
    max_batch_bytes: int | None
    start: str
    retries: int
    backoff: Backoff | float | timedelta | tuple[float, float]
    bisect_on_error: bool
    max_record_age: float | timedelta | None
    dead_letter: str | None
    concurrency: int
    per_record: bool
    name: str
    timeout: float | timedelta
    memory: int
    init: Hook | list[Hook]
    shutdown: Hook | list[Hook]


STREAM_FUNCTION_OPTIONS = frozenset({"name", "timeout", "memory", "init", "shutdown"})
STREAM_SOURCE_OPTIONS = frozenset(StreamOptionArgs.__annotations__) - (
    STREAM_FUNCTION_OPTIONS
)


class App:
    """A set of functions and the triggers that invoke them.

    Create one at module level in a file under ``functions/`` and decorate
    handlers with it; ``fnplane run`` finds every ``App`` in the modules it loads.
    """

    def __init__(self, name: str = "fnplane") -> None:
        self.name = name
        self.functions: dict[str, Function] = {}
        self.routes = RouteTable()
        self.init_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        self.state_machines: dict[str, StateMachineSpec] = {}
        self.platform: Platform | None = None
        self._by_handler: dict[int, Function] = {}

    def function(self, **options: Unpack[FunctionOptions]) -> Callable[[H], H]:
        """Register a handler with no trigger of its own.

        It is invoked directly (``fnplane invoke``, the Invoke API), by other
        functions or by workflows. The handler takes ``(event, context)`` like
        a Lambda handler; ``async def`` handlers run on the event loop, plain
        ones in a thread pool.

        Options (every decorator accepts them):

        - ``name``: the function's name; defaults to the handler's ``__name__``.
          Letters, digits, ``-`` and ``_``, at most 64 characters.
        - ``timeout``: seconds (or a ``timedelta``) an invocation may run,
          default 30, at most 900.
        - ``concurrency``: reserved concurrency, the most invocations running at
          once; more are throttled. ``None`` (default) is unbounded.
        - ``memory``: MB reported as ``context.memory_limit_in_mb``, default 128
          (128 to 10240).
        - ``init``, ``shutdown``: a hook or list of hooks (plain or async, no
          arguments) run when the function's environment starts (within the
          init limit, 10 s by default) and stops (2 s cap each).

        Asynchronous invocations (``Event`` invokes, ``ctx.invoke_async``,
        file events) follow these options:

        - ``retries``: attempts after the first that fails, default 2 (Lambda
          allows 0 to 2; up to 100 here).
        - ``backoff``: wait between attempts, exponential with jitter: a
          ``Backoff(base=, cap=)`` in seconds, a base in seconds, or a
          ``(base, cap)`` pair; default base 60 s, cap 300 s.
        - ``max_event_age``: seconds (or ``timedelta``) an event may wait;
          older events go to ``on_failure`` without another attempt.
          Default 6 hours.
        - ``on_success``, ``on_failure``: where the outcome record goes: a
          ``Destination`` or ``"function:NAME"``, ``"folder:PATH"``,
          ``"kafka://HOST:PORT/TOPIC"``, ``"redis://HOST:PORT/0?stream=NAME"``.
          Default: none (a failed event is logged at ERROR and discarded).

        Raises ``RegistrationError`` for a duplicate name or a bad option.
        """
        return self._decorator(None, options)

    def http(
        self,
        method: str | Iterable[str],
        path: str,
        **options: Unpack[FunctionOptions],
    ) -> Callable[[H], H]:
        """Register a handler for HTTP requests to ``path`` with ``method``.

        ``method`` is one method, a list of methods, or ``"ANY"``. ``path`` is
        a route template: ``/items/{item_id}`` captures one segment,
        ``/files/{key+}`` captures the rest of the path. The handler gets an
        API Gateway HTTP API (payload 2.0) event; see ``HttpRequest``. Takes
        the options of ``App.function``; stack ``http`` decorators on one
        handler to serve several routes.

        Raises ``RegistrationError`` for a bad template or a method and route
        already registered.
        """
        trigger = HttpTrigger.parse(method, path)
        return self._decorator(trigger, options)

    def on_file(
        self,
        folder: str | Path,
        *,
        patterns: str | tuple[str, ...] | list[str] = ("*",),
        ignore: str | tuple[str, ...] | list[str] = DEFAULT_IGNORE,
        recursive: bool = False,
        events: str | tuple[str, ...] | list[str] = FILE_EVENTS,
        settle: float | timedelta = DEFAULT_SETTLE_S,
        disposition: str = "move",
        processed: str | Path = DEFAULT_PROCESSED,
        failed: str | Path = DEFAULT_FAILED,
        create: bool = True,
        **options: Unpack[FunctionOptions],
    ) -> Callable[[H], H]:
        """Register a handler run once for each file completely written into
        ``folder``.

        The handler gets an ``S3Event`` (an S3 ``ObjectCreated:Put``
        notification: bucket = the folder's name, key = the path relative to
        it) and is invoked asynchronously, so the options of
        ``App.function`` apply, retries and destinations included.

        - ``patterns``: glob patterns a file's name must match, default all.
        - ``ignore``: glob patterns of names never fired: by default dotfiles,
          ``*.part``, ``*.partial``, ``*.tmp``, ``*.temp``, ``*~``, ``*.swp``.
        - ``recursive``: watch subfolders too (default False); the key is
          then the path below ``folder``.
        - ``events``: ``"created"`` (written in the folder) and/or
          ``"moved_in"`` (renamed into it); default both.
        - ``settle``: seconds a file's size and modification time must stay
          unchanged before it counts as written, when the platform gives no
          close-write event (default 1).
        - ``disposition``: after success, ``"move"`` the file to
          ``processed`` (default), ``"delete"`` it or ``"leave"`` it (its
          version is then remembered in the state store so it is not handled
          again).
        - ``processed``, ``failed``: folders (relative ones inside
          ``folder``, default ``processed/`` and ``failed/``); after the last
          retry the file moves to ``failed`` with ``<name>.error.json``.
        - ``create``: create a missing folder at start (default); with False a
          missing folder stops the platform with an error.
        """
        trigger = FileTrigger.build(
            folder,
            patterns=patterns,
            ignore=ignore,
            recursive=recursive,
            events=events,
            settle=settle,
            disposition=disposition,
            processed=processed,
            failed=failed,
            create=create,
        )
        return self._decorator(trigger, options)

    def kafka(
        self,
        topics: str | list[str] | tuple[str, ...],
        *,
        group: str | None = None,
        bootstrap: str | None = None,
        create_topics: bool = False,
        **options: Unpack[StreamOptionArgs],
    ) -> Callable[[H], H]:
        """Register a handler for batches of records from Kafka ``topics``.

        The handler gets a ``KafkaBatch``: iterate it for ``KafkaRecord``s
        (``value``, ``key``, ``headers``, ``json()``, ``item_id``), or read it
        as Lambda's self-managed Kafka event (``event["records"]``). With
        ``per_record=True`` it is called once per record instead.

        - ``group``: the consumer group, default the function's name. Every
          ``fnplane run`` with the same group shares the partitions.
        - ``bootstrap``: ``host:port[,host:port]``, default the
          ``kafka_bootstrap`` setting.
        - ``create_topics``: create missing topics at start (default False:
          a missing topic stops the platform with an error).
        - the stream options of ``StreamOptions`` (``batch_size``,
          ``retries``, ``dead_letter``...); ``dead_letter`` is a topic of the
          same cluster.

        Raises ``RegistrationError`` for a bad option, naming it.
        """
        where = f"kafka({topics!r})"
        stream_options, function_options = split_stream_options(where, options)
        trigger = KafkaTrigger(
            topics=stream_names(topics, "topic", where),
            group=optional_name(group, "group", where),
            bootstrap=optional_name(bootstrap, "bootstrap", where),
            create_topics=flag(create_topics, "create_topics", where),
            options=stream_options,
        )
        return self._stream_decorator(trigger, function_options)

    def redis_stream(
        self,
        streams: str | list[str] | tuple[str, ...],
        *,
        group: str | None = None,
        url: str | None = None,
        consumer: str | None = None,
        claim_idle: float | timedelta = DEFAULT_CLAIM_IDLE_S,
        **options: Unpack[StreamOptionArgs],
    ) -> Callable[[H], H]:
        """Register a handler for batches of entries from Redis ``streams``.

        The handler gets a ``RedisBatch``: iterate it for ``RedisRecord``s
        (``stream``, ``id``, ``fields``, ``value`` = the ``value`` field,
        ``json()``, ``item_id``). With ``per_record=True`` it is called once
        per entry instead.

        - ``group``: the consumer group (created with ``MKSTREAM`` if
          missing), default the function's name.
        - ``url``: ``redis://host:port/db``, default the ``redis_url`` setting.
        - ``consumer``: this process's consumer name; default unique per
          process (host name, pid, random suffix). Give a stable one to take
          back a crashed process's pending entries at once on restart.
        - ``claim_idle``: seconds an entry may stay pending with another
          consumer before this one claims it (``XAUTOCLAIM``), default 60.
        - the stream options of ``StreamOptions`` (``batch_size``,
          ``retries``, ``dead_letter``...); ``dead_letter`` is a stream on
          the same server.

        Raises ``RegistrationError`` for a bad option, naming it.
        """
        where = f"redis_stream({streams!r})"
        stream_options, function_options = split_stream_options(where, options)
        trigger = RedisStreamTrigger(
            streams=stream_names(streams, "stream", where),
            group=optional_name(group, "group", where),
            url=redis_url(url, where),
            consumer=optional_name(consumer, "consumer", where),
            claim_idle_s=duration(claim_idle, "claim_idle", 7 * 24 * 3600.0, where),
            options=stream_options,
        )
        return self._stream_decorator(trigger, function_options)

    def state_machine(
        self,
        name: str,
        definition: str | Path | dict[str, Any],
        type: str = "STANDARD",
    ) -> StateMachineSpec:
        """Register a workflow: an Amazon States Language state machine.

        ``definition`` is a dict, JSON text, or the path of a ``.json`` file.
        ``type`` is ``"STANDARD"`` (every step journaled; executions survive a
        restart) or ``"EXPRESS"`` (in memory, at most 5 minutes). Task states
        name functions of the app (or their Lambda ARNs, or
        ``arn:aws:states:::lambda:invoke``). Returns the spec; register its
        ``handler`` with any trigger to start executions from it.

        Raises ``RegistrationError`` for a duplicate name, an unknown type or
        an invalid definition (unknown functions are reported at start).
        """
        from fnplane.workflows.hosting import StateMachineSpec

        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise RegistrationError(
                f"state machine name {name!r} is invalid: use 1 to 64 letters, "
                f"digits, '-' or '_'"
            )
        if name in self.state_machines:
            raise RegistrationError(f"state machine {name!r} is registered twice")
        spec = StateMachineSpec.build(name, definition, type)
        self.state_machines[name] = spec
        return spec

    async def start_execution(self, name: str, input: Any = None) -> Any:
        """Start an execution of state machine ``name`` on the running platform.

        Returns ``{"executionArn", "startDate"}`` for a Standard machine, the
        output for an Express one. Raises ``RuntimeError`` when no platform
        runs this app.
        """
        if self.platform is None or self.platform.workflows is None:
            raise RuntimeError(
                "no platform is running this app; start it (fnplane run) first"
            )
        return await self.platform.workflows.start_execution(name, input)

    def on_init(self, hook: H) -> H:
        """Register an app-wide init hook, run once per process before the first
        invocation of any function (part of that cold start's init duration)."""
        self.init_hooks.append(validate_hooks(hook, "on_init", self.name)[0])
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Register an app-wide shutdown hook, run once at shutdown (2 s cap)."""
        self.shutdown_hooks.append(validate_hooks(hook, "on_shutdown", self.name)[0])
        return hook

    def get(self, name: str) -> Function:
        """Return the function called ``name`` or raise ``FunctionNotFoundError``."""
        try:
            return self.functions[name]
        except KeyError:
            raise FunctionNotFoundError(name, list(self.functions)) from None

    def include(self, other: App) -> None:
        """Add every function, route and hook of ``other`` to this app."""
        for function in other.functions.values():
            self._add_function(function)
        self.init_hooks.extend(other.init_hooks)
        self.shutdown_hooks.extend(other.shutdown_hooks)
        for name, spec in other.state_machines.items():
            if name in self.state_machines:
                raise RegistrationError(f"state machine {name!r} is registered twice")
            self.state_machines[name] = spec

    def attach(
        self, handler: Handler, trigger: Trigger | None, options: FunctionOptions
    ) -> Function:
        """Register ``handler`` (once) and attach ``trigger`` to it.

        Decorators of every trigger kind go through here, so a handler
        decorated twice is one function with two triggers. Options may be
        given once; a later decorator on the same handler repeats none.
        """
        function = self._by_handler.get(id(handler))
        if function is None:
            function = self._add_function(build_function(handler, options))
            self._by_handler[id(handler)] = function
        elif options:
            raise RegistrationError(
                f"function {function.name!r}: options "
                f"{sorted(options)} were given again; give them on one "
                f"decorator only"
            )
        if trigger is not None:
            if isinstance(trigger, HttpTrigger):
                self.routes.add(trigger, function.name)
            function.triggers.append(trigger)
        return function

    def _decorator(
        self, trigger: Trigger | None, options: FunctionOptions
    ) -> Callable[[H], H]:
        check_option_names(options)

        def register(handler: H) -> H:
            self.attach(handler, trigger, options)
            return handler

        return register

    def _stream_decorator(
        self, trigger: StreamTrigger, options: FunctionOptions
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            # The group defaults to the function's name, known only now.
            known = self._by_handler.get(id(handler))
            name = known.name if known else options.get("name", handler.__name__)
            function = self.attach(handler, trigger.grouped(name), options)
            wrap_stream_handler(function, trigger.options.per_record)
            return handler

        return register

    def _add_function(self, function: Function) -> Function:
        if function.name in self.functions:
            raise RegistrationError(
                f"function {function.name!r} is registered twice; give one of "
                f"them another name with name=..."
            )
        for trigger in function.triggers:
            if isinstance(trigger, HttpTrigger):
                self.routes.add(trigger, function.name)
        self.functions[function.name] = function
        return function


def split_stream_options(
    where: str, options: StreamOptionArgs
) -> tuple[StreamOptions, FunctionOptions]:
    """Validate a stream decorator's options: the source's, and the function's."""
    function_options = {
        k: v for k, v in options.items() if k in STREAM_FUNCTION_OPTIONS
    }
    source_options = {
        k: v for k, v in options.items() if k not in STREAM_FUNCTION_OPTIONS
    }
    unknown = set(source_options) - STREAM_SOURCE_OPTIONS
    if unknown:
        raise RegistrationError(
            f"{where}: unknown option(s) {sorted(unknown)}; valid options are "
            f"{sorted(STREAM_SOURCE_OPTIONS | STREAM_FUNCTION_OPTIONS)}"
        )
    stream_options = StreamOptions.build(where, **source_options)
    return stream_options, cast(FunctionOptions, function_options)


def wrap_stream_handler(function: Function, per_record: bool) -> None:
    """Make ``function`` report batch outcomes (once, whatever its triggers)."""
    wrapped = getattr(function.handler, "per_record", None)
    if wrapped is None:
        function.handler = stream_handler(function.handler, per_record)
        function.handler.per_record = per_record  # type: ignore[attr-defined]
    elif wrapped != per_record:
        raise RegistrationError(
            f"function {function.name!r}: its stream triggers disagree on "
            f"per_record; give every one the same value"
        )


def check_option_names(options: dict[str, Any] | FunctionOptions) -> None:
    """Raise ``RegistrationError`` naming any option that is not a function option."""
    unknown = set(options) - FUNCTION_OPTIONS
    if unknown:
        raise RegistrationError(
            f"unknown option(s) {sorted(unknown)}; valid options are "
            f"{sorted(FUNCTION_OPTIONS)}"
        )


def build_function(handler: Handler, options: FunctionOptions) -> Function:
    """Validate ``options`` and return a ``Function`` for ``handler``."""
    if not callable(handler):
        raise RegistrationError(f"a handler must be callable, got {handler!r}")
    name = options["name"] if "name" in options else getattr(handler, "__name__", "")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise RegistrationError(
            f"function name {name!r} is invalid: use 1 to 64 letters, digits, "
            f"'-' or '_' (give one with name=...)"
        )
    return Function(
        name=name,
        handler=handler,
        timeout_s=validate_timeout(options.get("timeout", DEFAULT_TIMEOUT_S), name),
        concurrency=validate_concurrency(options.get("concurrency"), name),
        memory_mb=validate_memory(options.get("memory", DEFAULT_MEMORY_MB), name),
        init_hooks=validate_hooks(options.get("init"), "init", name),
        shutdown_hooks=validate_hooks(options.get("shutdown"), "shutdown", name),
        async_policy=build_async_policy(dict(options), name),
    )
