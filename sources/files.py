"""The file-drop source: one invocation per file completely written into a folder.

Settings come from each function's ``FileTrigger``; a watchdog observer
thread reports filesystem events, which are handed to the event loop. A file
counts as written when Linux reports its close after writing (inotify), when
it is renamed into the folder, or, where neither is reported, once its
modification time has not changed for ``settle`` seconds. It is then turned
into an ``S3Event`` and submitted to the durable async queue, so retries,
maximum age and destinations work as for any asynchronous invocation; the
queue calls back here before each attempt (skip a file deleted or replaced
meanwhile) and after the outcome (move to ``processed/``, delete, or move to
``failed/`` with ``<name>.error.json``).

Events alone cannot be trusted: the kernel drops inotify events when its
queue overflows, and watchdog drops them silently (about half of a
10,000-file burst). So each folder is reconciled against what was handled:
a scan at start (files dropped while the platform was down), after every
burst and on overflow, and every ``RECONCILE_INTERVAL_S``. A file's event id
is derived from its path, inode, size and modification time, so a file seen
twice (by an event and a scan, or again after a restart while its event is
still stored) is queued once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import stat
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from fnplane.errors import FnplaneError
from fnplane.events.codec import S3_KIND
from fnplane.events.s3 import S3Event, file_etag, s3_notification
from fnplane.file_trigger import FileTrigger
from fnplane.invoke import new_request_id

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from fnplane.asyncq import AsyncQueue
    from fnplane.eventstore import QueuedEvent
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)

RECONCILE_INTERVAL_S = 30.0
# A scan follows any burst of at least this many events once the folder has
# been quiet for BURST_QUIET_S: overflows only happen in bursts.
BURST_EVENTS = 100
BURST_QUIET_S = 0.25
SUBMIT_BATCH = 256
CLOSE_WRITE_EVENTS = [FileClosedEvent, FileMovedEvent]
SETTLE_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent]
ERROR_RECORD_SUFFIX = ".error.json"


class FolderMissingError(FnplaneError, FileNotFoundError):
    """A watched folder does not exist and its trigger says not to create it."""


def any_of(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex matching a name against any of the glob patterns."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def create_source(invoker: Invoker) -> FileSource:
    """The file source for every ``on_file`` trigger of the invoker's app."""
    return FileSource(invoker)


class FileSource:
    """Watches every folder of the app's file triggers."""

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker
        self.watches: list[FolderWatch] = []
        self._observer: BaseObserver | None = None
        self._overflow: OverflowListener | None = None
        # Which watch queued which event, so the delivery hooks need not
        # parse the stored payload; events from before a restart are not
        # in it and fall back to the payload's path.
        self._routes: dict[str, FolderWatch] = {}

    async def start(self) -> None:
        """Create or check the folders, start watching, then catch up."""
        loop = asyncio.get_running_loop()
        queue = self.invoker.async_queue
        self._observer, close_events = new_observer()
        for function in self.invoker.app.functions.values():
            for trigger in function.triggers:
                if isinstance(trigger, FileTrigger):
                    watch = FolderWatch(
                        function.name, trigger, queue, loop, self._routes, close_events
                    )
                    watch.prepare()
                    self.watches.append(watch)
        add_hooks = getattr(queue, "add_hooks", None)
        if add_hooks is not None:
            add_hooks(S3_KIND, self)

        # With close-write events, creations and modifications need not be
        # watched at all: fewer kernel events, fewer overflows.
        watched = CLOSE_WRITE_EVENTS if close_events else SETTLE_EVENTS
        for watch in self.watches:
            self._observer.schedule(
                WatchdogHandler(watch, loop),
                str(watch.root),
                recursive=watch.trigger.recursive,
                event_filter=watched,
            )
        self._overflow = OverflowListener(self.watches, loop)
        self._overflow.install()
        self._observer.start()
        for watch in self.watches:
            watch.start()
            logger.info(
                "source.files_started", function=watch.function, folder=str(watch.root)
            )

    def stop_intake(self) -> None:
        """Stop noticing files; files already queued stay queued."""
        for watch in self.watches:
            watch.stop_intake()
        if self._observer is not None:
            self._observer.stop()

    async def stop(self, grace_s: float) -> None:
        """Stop the observer thread and each folder's tasks."""
        self.stop_intake()
        if self._overflow is not None:
            self._overflow.remove()
        if self._observer is not None:
            if self._observer.is_alive():
                await asyncio.to_thread(self._observer.join, 5.0)
            self._observer = None
        for watch in self.watches:
            await watch.stop()

    def _watch_for(self, event: QueuedEvent) -> tuple[FolderWatch | None, str]:
        watch = self._routes.get(event.event_id)
        if watch is not None:
            return watch, watch.queued_path(event.event_id)
        path = json.loads(event.payload)["path"]
        for watch in self.watches:
            if watch.function == event.function and watch.contains(Path(path)):
                return watch, path
        return None, path

    async def before(self, event: QueuedEvent) -> bool:
        """Skip a file that is gone or was replaced since its event."""
        watch, path = self._watch_for(event)
        if watch is None:
            return os.path.exists(path)
        return await watch.before(event, path)

    async def after_success(self, event: QueuedEvent) -> None:
        """Dispose of the file: move it to processed/, delete it or leave it."""
        watch, path = self._watch_for(event)
        if watch is not None:
            await watch.dispose(event, path)

    async def after_failure(self, event: QueuedEvent, record: dict[str, Any]) -> None:
        """Move the file to failed/ with its error record beside it."""
        watch, path = self._watch_for(event)
        if watch is not None:
            await watch.fail(event, path, record)


def new_observer() -> tuple[BaseObserver, bool]:
    """inotify with full move events on Linux, the platform's default elsewhere;
    and whether it reports a file's close after writing."""
    try:
        from watchdog.observers.inotify import InotifyObserver

        # Full events tell a file renamed in from outside (complete already)
        # apart from a file being created (complete once closed).
        return InotifyObserver(generate_full_events=True), True
    except (ImportError, OSError):
        from watchdog.observers import Observer

        return Observer(), False


class WatchdogHandler(FileSystemEventHandler):
    """Runs in watchdog's thread: passes file events to the event loop.

    Events are handed over in batches: the loop is woken only when the batch
    was empty, so a burst costs one wake-up, not one per event.
    """

    def __init__(self, watch: FolderWatch, loop: asyncio.AbstractEventLoop) -> None:
        self._watch = watch
        self._loop = loop
        self._batch: deque[tuple[str, str, str]] = deque()
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Add the event to the batch; wake the loop if it was empty."""
        if event.is_directory:
            return
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        with self._lock:
            wake = not self._batch
            self._batch.append((event.event_type, os.fsdecode(event.src_path), dest))
        if wake:
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, deque()
        for kind, src, dest in batch:
            self._watch.on_event(kind, src, dest)


class OverflowListener(logging.Handler):
    """Reconciles every folder when watchdog reports an inotify queue overflow.

    watchdog reports the overflow only as a log record, so this listens there.
    """

    LOGGER = "watchdog.observers.inotify_c"

    def __init__(self, watches: list[FolderWatch], loop: asyncio.AbstractEventLoop):
        super().__init__(logging.WARNING)
        self._watches = watches
        self._loop = loop

    def install(self) -> None:
        """Start listening to watchdog's inotify logger."""
        logging.getLogger(self.LOGGER).addHandler(self)

    def remove(self) -> None:
        """Stop listening."""
        logging.getLogger(self.LOGGER).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """On an overflow record, schedule a scan of every folder."""
        if "overflow" in record.getMessage().lower():
            for watch in self._watches:
                self._loop.call_soon_threadsafe(watch.request_scan, "overflow")


class FolderWatch:
    """One function's watched folder: detection, submission, disposition."""

    def __init__(
        self,
        function: str,
        trigger: FileTrigger,
        queue: AsyncQueue,
        loop: asyncio.AbstractEventLoop,
        routes: dict[str, FolderWatch],
        close_events: bool,
    ) -> None:
        self.function = function
        self.trigger = trigger
        self.root = Path(trigger.folder).absolute()
        self.processed = trigger.resolve(trigger.processed)
        self.failed = trigger.resolve(trigger.failed)
        self._queue = queue
        self._loop = loop
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._incoming: deque[str] = deque()
        # Event id -> path of every file queued and not finished yet.
        self._queued: dict[str, str] = {}
        self._queued_paths: set[str] = set()
        self._routes = routes
        self._close_events = close_events
        self._made_dirs: set[str] = set()
        self._root_prefix = str(self.root) + os.sep
        self._ignore = any_of(trigger.ignore)
        self._patterns = any_of(trigger.patterns)
        self._wake = asyncio.Event()
        self._scan_wanted: str | None = None
        self._events_since_scan = 0
        self._last_event_s = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._intake = True
        self._remember_s = math.inf if trigger.disposition == "leave" else 0.0

    def prepare(self) -> None:
        """Create the folder (or refuse to start without it)."""
        if self.root.is_dir():
            return
        if not self.trigger.create:
            raise FolderMissingError(
                f"function {self.function!r}: watched folder {self.root} does not "
                f"exist; create it, or pass create=True to on_file"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        logger.info(
            "files.folder_created", function=self.function, folder=str(self.root)
        )

    def start(self) -> None:
        """Start submitting; the first scan catches up on files already there."""
        self._scan_wanted = "start"
        self._tasks = [
            asyncio.create_task(self._submit_loop()),
            asyncio.create_task(self._reconcile_loop()),
        ]
        self._wake.set()

    def stop_intake(self) -> None:
        """Notice no more files."""
        self._intake = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def stop(self) -> None:
        """Cancel this folder's tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def contains(self, path: Path) -> bool:
        """True if ``path`` is inside the watched folder."""
        return path.is_relative_to(self.root)

    # Detection, on the event loop.

    def on_event(self, kind: str, src: str, dest: str) -> None:
        """React to one watchdog event (called on the loop)."""
        if not self._intake:
            return
        self._events_since_scan += 1
        self._last_event_s = time.monotonic()
        if kind == "closed":
            self._cancel_timer(src)
            if "created" in self.trigger.events and self.wanted(src):
                self.fire(src)
        elif kind == "created":
            # Where close-write is reported, it marks completion; a file that
            # appears without one (a hard link) is found by the next scan.
            wanted = "created" in self.trigger.events and not self._close_events
            if wanted and self.wanted(src):
                self._arm(src, self.trigger.settle_s)
        elif kind == "modified":
            if src in self._timers:
                self._arm(src, self.trigger.settle_s)
        elif kind == "moved":
            self._cancel_timer(src)
            if dest and "moved_in" in self.trigger.events and self.wanted(dest):
                self.fire(dest)
        elif kind == "deleted":
            self._cancel_timer(src)

    def wanted(self, path: str) -> bool:
        """True for a file this trigger fires for (by name and place)."""
        parent, name = os.path.split(path)
        if not self.trigger.recursive and parent != str(self.root):
            return False
        if self.trigger.recursive:
            candidate = Path(path)
            if not candidate.is_relative_to(self.root):
                return False
            if candidate.is_relative_to(self.processed) or candidate.is_relative_to(
                self.failed
            ):
                return False
            if any(
                self._ignored(part) for part in candidate.relative_to(self.root).parts
            ):
                return False
        if self._ignored(name):
            return False
        return self._patterns.match(name) is not None

    def _ignored(self, name: str) -> bool:
        return self._ignore.match(name) is not None

    def _arm(self, path: str, delay_s: float) -> None:
        self._cancel_timer(path)
        self._timers[path] = self._loop.call_later(delay_s, self._settled, path)

    def _cancel_timer(self, path: str) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()

    def _settled(self, path: str) -> None:
        self._timers.pop(path, None)
        try:
            mtime_s = os.stat(path).st_mtime
        except OSError:
            return
        quiet_s = time.time() - mtime_s
        if quiet_s < self.trigger.settle_s:
            self._arm(path, self.trigger.settle_s - quiet_s)
        else:
            self.fire(path)

    def fire(self, path: str) -> None:
        """Queue ``path`` for submission as a file event."""
        self._incoming.append(path)
        self._wake.set()

    def request_scan(self, reason: str) -> None:
        """Ask for a reconciliation scan as soon as possible."""
        self._scan_wanted = reason
        self._wake.set()

    # Submission.

    async def _submit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._scan_wanted is not None:
                reason, self._scan_wanted = self._scan_wanted, None
                await self._scan(reason)
            while self._incoming:
                batch = [
                    self._incoming.popleft()
                    for _ in range(min(SUBMIT_BATCH, len(self._incoming)))
                ]
                await asyncio.gather(*(self._submit(path) for path in batch))

    async def _submit(self, path: str) -> None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("files.stat_failed", path=path, error=str(exc))
            return
        if not stat.S_ISREG(info.st_mode):
            return
        event_id = self._event_id(path, info)
        if event_id in self._queued:
            return
        self._remember(event_id, path)
        request_id = new_request_id()
        try:
            event = self._event(path, info, request_id)
            await self._queue.submit(
                self.function, event, request_id, event_id, self._remember_s
            )
        except Exception as exc:
            # Not stored: the next scan finds the file and tries again.
            self.forget(event_id)
            logger.error(
                "files.submit_failed", function=self.function, path=path, error=str(exc)
            )

    def _remember(self, event_id: str, path: str) -> None:
        self._queued[event_id] = path
        self._queued_paths.add(path)
        self._routes[event_id] = self

    def forget(self, event_id: str) -> None:
        """The file's event is finished (or was not stored)."""
        path = self._queued.pop(event_id, None)
        if path is not None:
            self._queued_paths.discard(path)
        self._routes.pop(event_id, None)

    def queued_path(self, event_id: str) -> str:
        """The path of a file this watch queued."""
        return self._queued[event_id]

    def _event_id(self, path: str, info: os.stat_result) -> str:
        identity = (
            f"{self.function}\0{path}\0{info.st_ino}\0{info.st_size}\0"
            f"{info.st_mtime_ns}"
        )
        # A name that is not UTF-8 holds surrogates: encode them back to bytes.
        digest = hashlib.sha1(
            identity.encode("utf-8", "surrogateescape"), usedforsecurity=False
        )
        return "file-" + digest.hexdigest()

    def _event(self, path: str, info: os.stat_result, request_id: str) -> S3Event:
        key = path[len(self._root_prefix) :].replace(os.sep, "/")
        notification = s3_notification(
            bucket=self.root.name,
            key=key,
            size=info.st_size,
            etag=file_etag(info.st_ino, info.st_size, info.st_mtime_ns),
            sequencer=f"{info.st_mtime_ns:016X}",
            event_time_ms=info.st_mtime_ns // 1_000_000,
            request_id=request_id,
            configuration_id=self.function,
        )
        return S3Event(notification, path)

    # Reconciliation.

    async def _reconcile_loop(self) -> None:
        last_scan_s = time.monotonic()
        while True:
            await asyncio.sleep(BURST_QUIET_S)
            now_s = time.monotonic()
            burst_over = (
                self._events_since_scan >= BURST_EVENTS
                and now_s - self._last_event_s >= BURST_QUIET_S
            )
            if burst_over or now_s - last_scan_s >= RECONCILE_INTERVAL_S:
                self.request_scan("burst" if burst_over else "periodic")
                last_scan_s = now_s

    async def _scan(self, reason: str) -> None:
        self._events_since_scan = 0
        try:
            found = await asyncio.to_thread(self._list_files)
        except OSError as exc:
            logger.error("files.scan_failed", folder=str(self.root), error=str(exc))
            return
        now_s = time.time()
        fired = 0
        for path, mtime_s in found:
            if path in self._timers or path in self._queued_paths or not self._intake:
                continue
            quiet_s = now_s - mtime_s
            if quiet_s < self.trigger.settle_s:
                self._arm(path, self.trigger.settle_s - quiet_s)
            else:
                self.fire(path)
                fired += 1
        logger.debug(
            "files.scanned",
            folder=str(self.root),
            reason=reason,
            files=len(found),
            fired=fired,
        )

    def _list_files(self) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        pending = [str(self.root)]
        excluded = {str(self.processed), str(self.failed)}
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if self.trigger.recursive and entry.path not in excluded:
                            pending.append(entry.path)
                    elif entry.is_file() and self.wanted(entry.path):
                        try:
                            found.append((entry.path, entry.stat().st_mtime))
                        except FileNotFoundError:
                            continue  # handled and moved away while listing
        return found

    # Around delivery (called by the async queue).

    async def before(self, event: QueuedEvent, path: str) -> bool:
        """True to run the handler; False skips a file gone or replaced."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            logger.info(
                "files.skipped_missing",
                function=self.function,
                path=path,
                reason="the file was deleted or moved before its turn",
            )
            self.forget(event.event_id)
            return False
        if self._event_id(path, info) != event.event_id:
            # A newer version of the file has an event of its own.
            logger.info("files.skipped_replaced", function=self.function, path=path)
            self.forget(event.event_id)
            return False
        if not os.access(path, os.R_OK):
            await self._permission_denied(event, path)
            return False
        return True

    async def _permission_denied(self, event: QueuedEvent, path: str) -> None:
        logger.error(
            "files.permission_denied",
            function=self.function,
            path=path,
            hint="give the platform's user read access to the file",
        )
        record = {
            "errorType": "PermissionError",
            "errorMessage": f"permission denied reading {path}",
            "requestId": event.request_id,
        }
        await self.fail(event, path, record)

    async def dispose(self, event: QueuedEvent, path: str) -> None:
        """Apply the trigger's disposition after a successful invocation."""
        self.forget(event.event_id)
        disposition = self.trigger.disposition
        try:
            if disposition == "move":
                self._move(path, self.processed)
            elif disposition == "delete":
                os.unlink(path)
        except FileNotFoundError:
            logger.info("files.already_gone", function=self.function, path=path)
        except OSError as exc:
            logger.error(
                "files.disposition_failed",
                function=self.function,
                path=path,
                disposition=disposition,
                error=str(exc),
            )

    async def fail(self, event: QueuedEvent, path: str, record: dict[str, Any]) -> None:
        """Move the file to failed/ and write ``<name>.error.json`` beside it."""
        self.forget(event.event_id)
        try:
            target = self._move(path, self.failed)
            error_path = target.with_name(target.name + ERROR_RECORD_SUFFIX)
            text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
            # A surrogate (from a name that is not UTF-8) is written as its
            # JSON escape, \udcXX, so the record stays valid JSON.
            await asyncio.to_thread(
                error_path.write_text, text, "utf-8", "backslashreplace"
            )
        except OSError as exc:
            logger.error(
                "files.fail_move_failed",
                function=self.function,
                path=path,
                error=str(exc),
            )
            return
        logger.warning(
            "files.moved_to_failed", function=self.function, path=str(target)
        )

    def _move(self, path: str, folder: Path) -> Path:
        """Move ``path`` into ``folder`` keeping its place below the root,
        adding ``.1``, ``.2``... to the name rather than overwrite."""
        target = folder / os.path.relpath(path, self.root)
        parent = str(target.parent)
        if parent not in self._made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(parent)
        candidate, number = target, 0
        while os.path.lexists(candidate):
            number += 1
            candidate = target.with_name(f"{target.stem}.{number}{target.suffix}")
        os.rename(path, candidate)
        return candidate
