"""The file-drop source: one invocation per file completely written into a folder.

Settings come from each function's ``FileTrigger``. On Linux the event loop
reads inotify itself (``_inotify``); elsewhere a watchdog observer thread
reports filesystem events, which are handed to the event loop. A file
counts as written when Linux reports its close after writing (inotify), when
it is renamed into the folder, or, where neither is reported, once its
modification time has not changed for ``settle`` seconds. It is then turned
into an ``S3Event`` and submitted to the durable async queue, so retries,
maximum age and destinations work as for any asynchronous invocation. A
file that is moved or deleted after success is its own durable record: it
stays in the folder until done, and a scan at start finds it again. So it is
handed to the queue as its path, without a store write (``submit_backed``),
and its status is read once, by the check before its first attempt, which
makes its event; it is stored only if it has to wait for a retry. With
``disposition="leave"`` the store also remembers which files were handled,
so their status is read and their events stored when they are found. The
queue calls back here before each attempt (skip a file deleted or replaced
meanwhile) and after the outcome (move to ``processed/``, delete, or move to
``failed/`` with ``<name>.error.json``).

Events alone cannot be trusted: the kernel drops inotify events when its
queue overflows (watchdog, reading on a thread, lost about half of a
10,000-file burst that way). So each folder is reconciled against what was
handled: a scan at start (files dropped while the platform was down), after
every burst and on overflow, and every ``RECONCILE_INTERVAL_S``. A file's event id
is derived from its path, inode, size and modification time, so a file seen
twice (by an event and a scan, or again after a restart while its event is
still stored) is queued once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import math
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from fnplane.errors import FnplaneError
from fnplane.events.codec import S3_KIND
from fnplane.events.s3 import FileVersion, S3Event
from fnplane.file_trigger import FileTrigger
from fnplane.invoke import new_request_id

from ._file_delivery import FileDelivery, FileMover, file_event_id, readable
from ._folder_lock import FolderLocks
from ._inotify import InotifyReader

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from fnplane.asyncq import AsyncQueue, Submission
    from fnplane.eventstore import QueuedEvent
    from fnplane.invoke import Invoker

logger = structlog.get_logger(__name__)

RECONCILE_INTERVAL_S = 30.0
# A scan follows any burst of at least this many events once the folder has
# been quiet for BURST_QUIET_S: overflows only happen in bursts.
BURST_EVENTS = 100
BURST_QUIET_S = 0.25
SUBMIT_BATCH = 256
# Event ids a store lookup checks at once (SQLite allows 32,766 variables).
STORED_CHECK_BATCH = 1000
SETTLE_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent]


class FolderMissingError(FnplaneError, FileNotFoundError):
    """A watched folder does not exist and its trigger says not to create it."""


class DispositionFolderError(FnplaneError):
    """Files could not be moved into a trigger's ``processed`` or ``failed``
    folder: something else is in its place, or it is on another filesystem."""


def any_of(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex matching a name against any of the glob patterns."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def nearest_existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists (as a name: a symbolic
    link to nowhere exists)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def create_source(invoker: Invoker) -> FileSource:
    """The file source for every ``on_file`` trigger of the invoker's app."""
    return FileSource(invoker)


class FileSource:
    """Watches every folder of the app's file triggers."""

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker
        self.watches: list[FolderWatch] = []
        self._inotify: InotifyReader | None = None
        self._observer: BaseObserver | None = None
        self._folder_locks = FolderLocks()
        # Which watch queued which event, so the delivery hooks need not
        # parse the stored payload; events from before a restart are not
        # in it and fall back to the payload's path.
        self._routes: dict[str, FolderWatch] = {}

    async def start(self) -> None:
        """Create or check the folders, start watching, then catch up."""
        loop = asyncio.get_running_loop()
        queue = self.invoker.async_queue
        close_events = use_inotify()
        mover = FileMover()
        for function in self.invoker.app.functions.values():
            for trigger in function.triggers:
                if isinstance(trigger, FileTrigger):
                    watch = FolderWatch(
                        function.name,
                        trigger,
                        queue,
                        loop,
                        self._routes,
                        close_events,
                        mover,
                        self._watch_again,
                    )
                    watch.check_folders()
                    self.watches.append(watch)
        # Every folder is checked before any is made: a refused start
        # leaves nothing behind.
        for watch in self.watches:
            watch.make_folder()
        self._folder_locks.hold(str(watch.root) for watch in self.watches)
        add_hooks = getattr(queue, "add_hooks", None)
        if add_hooks is not None:
            add_hooks(S3_KIND, self)

        if close_events:
            self._watch_with_inotify(loop)
        else:
            self._watch_with_watchdog(loop)
        for watch in self.watches:
            watch.start()
            logger.info(
                "source.files_started", function=watch.function, folder=str(watch.root)
            )

    def _watch_with_inotify(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inotify = InotifyReader(loop)
        for watch in self.watches:
            self._inotify.watch(watch, str(watch.root), watch.trigger.recursive)
        self._inotify.start()

    def _watch_again(self, watch: FolderWatch) -> None:
        """Lock and watch a folder that was removed or renamed, now back.
        (watchdog's observers elsewhere follow the path: nothing to redo.)"""
        self._folder_locks.hold([str(watch.root)])
        if self._inotify is not None:
            self._inotify.watch(watch, str(watch.root), watch.trigger.recursive)

    def _watch_with_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        for watch in self.watches:
            self._observer.schedule(
                WatchdogHandler(watch, loop),
                str(watch.root),
                recursive=watch.trigger.recursive,
                event_filter=SETTLE_EVENTS,
            )
        self._observer.start()

    def stop_intake(self) -> None:
        """Stop noticing files; files already queued stay queued."""
        for watch in self.watches:
            watch.stop_intake()
        if self._inotify is not None:
            self._inotify.close()
        if self._observer is not None:
            self._observer.stop()

    async def stop(self, grace_s: float) -> None:
        """Stop watching and each folder's tasks."""
        self.stop_intake()
        if self._observer is not None:
            if self._observer.is_alive():
                await asyncio.to_thread(self._observer.join, 5.0)
            self._observer = None
        for watch in self.watches:
            await watch.stop()
        self._folder_locks.release()

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
            watch.dispose(event, path)

    async def after_failure(self, event: QueuedEvent, record: dict[str, Any]) -> bool:
        """Move the file to failed/ with its error record beside it; True
        once both are there."""
        watch, path = self._watch_for(event)
        return watch is not None and await watch.fail(event, path, record)


def use_inotify() -> bool:
    """True where the kernel reports a file's close after writing (Linux):
    the loop reads inotify itself. Elsewhere watchdog's observer reports
    creations and changes, and a file is complete once its mtime settles."""
    return sys.platform.startswith("linux")


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


class FolderWatch:
    """One function's watched folder: detection and submission; its
    ``delivery`` checks each file before an attempt and disposes of it after."""

    def __init__(
        self,
        function: str,
        trigger: FileTrigger,
        queue: AsyncQueue,
        loop: asyncio.AbstractEventLoop,
        routes: dict[str, FolderWatch],
        close_events: bool,
        mover: FileMover,
        watch_again: Callable[[FolderWatch], None],
    ) -> None:
        self.function = function
        self.trigger = trigger
        self.root = Path(trigger.folder).absolute()
        self.processed = trigger.resolve(trigger.processed)
        self.failed = trigger.resolve(trigger.failed)
        self._queue = queue
        self._loop = loop
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Paths fired and not submitted yet, in order; a dict so that a path
        # fired again (by a scan during a burst, while its event waits here)
        # is submitted once.
        self._incoming: dict[str, None] = {}
        # Event id -> path of every file queued and not finished yet.
        self._queued: dict[str, str] = {}
        self._queued_paths: set[str] = set()
        # Ids (request ids) of files submitted as paths, status not read.
        self._unread: set[str] = set()
        # Queued paths written again meanwhile: fired again once finished.
        self._refire: set[str] = set()
        # Versions handled (or failed for good) whose move or deletion
        # failed: left where they are, not run again by every scan (a
        # restart runs them once more).
        self._undisposed: set[str] = set()
        self._routes = routes
        self._close_events = close_events
        self.delivery = FileDelivery(function, trigger, self.root, mover, self.forget)
        self._root_str = str(self.root)
        self._root_prefix = self._root_str + os.sep
        self._ignore = any_of(trigger.ignore)
        self._patterns = any_of(trigger.patterns)
        self._wake = asyncio.Event()
        self._scan_wanted: str | None = None
        self._events_since_scan = 0
        self._last_event_s = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._intake = True
        # Whether the folder watched (the inode, as watches follow it) was
        # removed or renamed away since: watched again once one is back.
        self._watch_again = watch_again
        self._root_inode = 0
        self._folder_gone = False
        # A file left in place needs the store to remember it was handled;
        # one moved or deleted is its own record until then.
        self._backed = trigger.disposition != "leave"

    def check_folders(self) -> None:
        """Refuse to start without the folder (unless it may be created), or
        when files cannot be moved where their outcome sends them."""
        if not self.root.is_dir() and not self.trigger.create:
            raise FolderMissingError(
                f"function {self.function!r}: watched folder {self.root} does not "
                f"exist; create it, or pass create=True to on_file"
            )
        if self.trigger.disposition == "move":
            self._check_move_target(self.processed, "processed")
        self._check_move_target(self.failed, "failed")

    def _check_move_target(self, folder: Path, option: str) -> None:
        # Refused now rather than found after each success: a file that
        # cannot be moved stays in the folder and would run at every scan.
        existing = nearest_existing(folder)
        if not existing.is_dir():  # a file, or a symbolic link to nowhere
            raise DispositionFolderError(
                f"function {self.function!r}: {option} folder {folder} cannot be "
                f"made: {existing} is not a folder"
            )
        if existing.stat().st_dev != nearest_existing(self.root).stat().st_dev:
            raise DispositionFolderError(
                f"function {self.function!r}: {option} folder {folder} is on "
                f"another filesystem than {self.root}; files are moved by "
                f"renaming, so choose a {option}= folder on the same one"
            )

    def make_folder(self) -> None:
        """Create the watched folder if it is missing."""
        if self.root.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        logger.info(
            "files.folder_created", function=self.function, folder=str(self.root)
        )

    def start(self) -> None:
        """Start submitting; the first scan catches up on files already there."""
        self._root_inode = os.stat(self._root_str).st_ino
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
        parent, _, name = path.rpartition(os.sep)
        if parent != self._root_str and not self.watches_below(parent):
            return False
        if self._ignored(name):
            return False
        return self._patterns.match(name) is not None

    def watches_below(self, folder: str) -> bool:
        """True if files in ``folder`` can fire: a recursive trigger's
        subfolder, not ``processed/``, ``failed/`` or an ignored name."""
        if not self.trigger.recursive:
            return False
        candidate = Path(folder)
        if not candidate.is_relative_to(self.root):
            return False
        if candidate.is_relative_to(self.processed) or candidate.is_relative_to(
            self.failed
        ):
            return False
        return not any(
            self._ignored(part) for part in candidate.relative_to(self.root).parts
        )

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
        self._incoming[path] = None
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
                size = SUBMIT_BATCH
                if self._backed:
                    # Files wait in the folder, not in memory, while the
                    # function is busy.
                    size = min(size, await self._queue.wait_for_room(self.function))
                    if not size:
                        break
                batch = list(itertools.islice(self._incoming, size))
                for path in batch:
                    del self._incoming[path]
                await self._submit(batch)

    async def _submit(self, paths: list[str]) -> None:
        """Queue the files among ``paths`` not queued yet: as paths for the
        queue to run, or read and stored in one write (``leave``)."""
        if self._backed:
            await self._submit_unread(paths)
            return
        submissions: list[Submission] = []
        queued: dict[str, str] = {}
        for path in paths:
            found = self._new_version(path)
            if found is not None:
                event_id, info = found
                self._remember(event_id, path)
                queued[event_id] = path
                request_id = new_request_id()
                event = self._event(path, info, request_id)
                submissions.append((event, request_id, event_id))
        if not submissions:
            return
        try:
            if self._backed:
                await self._queue.submit_backed(self.function, submissions)
            else:
                await self._queue.submit_many(self.function, submissions, math.inf)
        except Exception as exc:
            # Not stored: the next scan finds the files and tries again.
            for event_id in queued:
                self.forget(event_id)
            logger.error(
                "files.submit_failed",
                function=self.function,
                paths=list(queued.values()),
                error=str(exc),
            )

    async def _submit_unread(self, paths: list[str]) -> None:
        submissions: list[Submission] = []
        for path in paths:
            if path in self._queued_paths:
                self._refire.add(path)
                continue
            request_id = new_request_id()
            self._remember(request_id, path)
            self._unread.add(request_id)
            submissions.append((path, request_id, None))
        if not submissions:
            return
        if not await self._queue.submit_backed(self.function, S3_KIND, submissions):
            # Draining: the files stay for the next start.
            for _, request_id, _ in submissions:
                self.forget(request_id)

    async def before(self, event: QueuedEvent, path: str) -> bool:
        """True to run the handler: the file is there, still the version of
        its event, and readable (if not, it moves to failed/). A file
        submitted as its path gets its event here, from the status read:
        its version, and the event id derived from it."""
        if event.event_id in self._unread:
            info = self.delivery.status(event, path)
            if info is not None:
                self._make_event(event, path, info)
                if event.event_id in self._undisposed:
                    self.forget(event.event_id)
                    return False
        else:
            info = self.delivery.same_version(event, path)
        if info is None:
            return False
        if readable(path, info):
            return True
        if not await self.delivery.permission_denied(event, path):
            self._undisposed.add(event.event_id)
        return False

    def dispose(self, event: QueuedEvent, path: str) -> None:
        """Apply the disposition after success, unless the file was written
        again while its event ran: that version runs next, and is disposed
        of after its own event."""
        if self._written_again(event, path):
            self.forget(event.event_id)
            return
        if not self.delivery.dispose(event, path):
            self._undisposed.add(event.event_id)

    async def fail(self, event: QueuedEvent, path: str, record: dict[str, Any]) -> bool:
        """Move the file to failed/ after its last attempt, unless it was
        written again meanwhile: that version runs next (the failure is
        logged, and sent to ``on_failure`` if the function has one). True
        if the file and its error record are in failed/."""
        if self._written_again(event, path):
            logger.warning(
                "files.failed_version_replaced",
                function=self.function, path=path,
                error=record.get("responsePayload"),
            )  # fmt: skip
            self.forget(event.event_id)
            return False
        if await self.delivery.fail(event, path, record):
            return True
        self._undisposed.add(event.event_id)
        return False

    def _written_again(self, event: QueuedEvent, path: str) -> bool:
        """True if the file at ``path`` is not the version its event ran
        for. Only a file fired again while queued can be: its status is
        read then, since the event that fired it again may have been the
        close of the version just run, read late."""
        if path not in self._refire and path not in self._incoming:
            return False
        try:
            info = os.stat(path)
        except OSError:
            return False  # gone: the disposition says so
        if file_event_id(self.function, path, info) != event.event_id:
            logger.info("files.written_again", function=self.function, path=path)
            return True
        self._refire.discard(path)
        self._incoming.pop(path, None)
        return False

    def _make_event(self, event: QueuedEvent, path: str, info: os.stat_result) -> None:
        version_id = file_event_id(self.function, path, info)
        self._unread.discard(event.event_id)
        del self._queued[event.event_id]
        del self._routes[event.event_id]
        self._remember(version_id, path)
        event.event_id = version_id
        event.handler_event = self._event(path, info, event.request_id)

    def _new_version(self, path: str) -> tuple[str, os.stat_result] | None:
        """The event id and status of a regular file not queued yet."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("files.stat_failed", path=path, error=str(exc))
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        event_id = file_event_id(self.function, path, info)
        if event_id in self._queued:
            return None
        return event_id, info

    def _remember(self, event_id: str, path: str) -> None:
        self._queued[event_id] = path
        self._queued_paths.add(path)
        self._routes[event_id] = self

    def forget(self, event_id: str) -> None:
        """The file's event is finished (or was not stored)."""
        path = self._queued.pop(event_id, None)
        self._routes.pop(event_id, None)
        self._unread.discard(event_id)
        if path is None:
            return
        self._queued_paths.discard(path)
        if path in self._refire:
            self._refire.discard(path)
            self.fire(path)

    def queued_path(self, event_id: str) -> str:
        """The path of a file this watch queued."""
        return self._queued[event_id]

    def _event(self, path: str, info: os.stat_result, request_id: str) -> S3Event:
        key = path[len(self._root_prefix) :].replace(os.sep, "/")
        version = FileVersion(
            path, self.root.name, key, info.st_size, info.st_ino, info.st_mtime_ns
        )
        return S3Event(version, request_id, self.function)

    # Reconciliation.

    def folder_gone(self, folder: str) -> None:
        """The watched folder (or a subfolder) was removed or renamed away."""
        if folder != self._root_prefix or not self._folder_replaced():
            # A subfolder (its files went with it), or a folder replaced
            # already and watched again: its removal shows late.
            return
        self._lost()

    def _lost(self) -> None:
        self._folder_gone = True
        logger.warning(
            "files.folder_gone", function=self.function, folder=self._root_str,
            hint="watched again once a folder of that name is back",
        )  # fmt: skip

    def _folder_replaced(self) -> bool:
        # A removed folder's inotify event waits until the folder lock's
        # descriptor lets its inode go, and a folder may be back at once:
        # the inode says whether the folder at the path is the one watched.
        try:
            return os.stat(self._root_str).st_ino != self._root_inode
        except OSError:
            return True

    def _watch_folder_back(self) -> None:
        """Watch the folder again if it is back, and catch up on its files."""
        try:
            info = os.stat(self._root_str)
        except OSError:
            return  # not back yet
        if not stat.S_ISDIR(info.st_mode):
            return
        try:
            self._watch_again(self)
        except OSError as exc:
            logger.warning("files.watch_again_failed", folder=self._root_str,
                           error=str(exc))  # fmt: skip
            return
        self._root_inode, self._folder_gone = info.st_ino, False
        logger.info("files.folder_back", function=self.function,
                    folder=self._root_str)  # fmt: skip
        self.request_scan("folder_back")

    async def _reconcile_loop(self) -> None:
        last_scan_s = time.monotonic()
        while True:
            await asyncio.sleep(BURST_QUIET_S)
            if not self._folder_gone and self._folder_replaced():
                self._lost()
            if self._folder_gone:
                self._watch_folder_back()
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
        if self._folder_gone:
            return  # said once; scanned when it is back
        try:
            found = await asyncio.to_thread(self._list_files)
        except OSError as exc:
            logger.error("files.scan_failed", folder=str(self.root), error=str(exc))
            return
        if reason == "start" and self._backed:
            try:
                await self._leave_stored_to_the_store(found)
            except Exception as exc:
                # At least once still holds: a file waiting for its retry
                # may run once more, now and again from the store.
                logger.error(
                    "files.stored_check_failed", folder=str(self.root), error=str(exc)
                )
        now_s = time.time()
        fired = 0
        for path, info in found:
            if not self._intake:
                break
            if path in self._incoming or path in self._queued_paths:
                continue
            if path in self._timers:
                continue
            quiet_s = now_s - info.st_mtime
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

    async def _leave_stored_to_the_store(
        self, found: list[tuple[str, os.stat_result]]
    ) -> None:
        """Files whose events were stored before a restart (waiting for a
        retry) are delivered from the store: mark them queued, so that they
        are not submitted again."""
        paths = {file_event_id(self.function, path, info): path for path, info in found}
        event_ids = list(paths)
        for start in range(0, len(event_ids), STORED_CHECK_BATCH):
            batch = event_ids[start : start + STORED_CHECK_BATCH]
            for event_id in await self._queue.stored_ids(batch):
                self._remember(event_id, paths[event_id])

    def _list_files(self) -> list[tuple[str, os.stat_result]]:
        found: list[tuple[str, os.stat_result]] = []
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
                            found.append((entry.path, entry.stat()))
                        except FileNotFoundError:
                            continue  # handled and moved away while listing
        return found
