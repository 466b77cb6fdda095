"""Around a file's delivery: the check before its attempt, its disposition after.

Before each attempt the file must still be the version its event was made
for (not deleted, not replaced) and readable. After the outcome it is moved
to ``processed/``, deleted or left, or moved to ``failed/`` with
``<name>.error.json`` beside it.

The renames and deletions are made on the event loop, before the queue
finishes the event: a rename costs about 10 µs on a local filesystem, less
than a hop to a worker thread and back (which, in a burst, also waits for
the GIL). Where the kernel has ``renameat2`` (Linux), a move into
``processed/`` or ``failed/`` is one system call that refuses a name
already taken, rather than a check and a rename: a system call less a file,
and no window for another writer between the two.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from fnplane.eventstore import QueuedEvent
    from fnplane.file_trigger import FileTrigger

logger = structlog.get_logger(__name__)

ERROR_RECORD_SUFFIX = ".error.json"
AT_FDCWD = -100
RENAME_NOREPLACE = 1
# renameat2 errors meaning "not here" (old kernel, or a filesystem without
# RENAME_NOREPLACE): the mover checks the name, then renames.
RENAME_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS)
# Read once: getuid is a system call, and os.access checks this user.
REAL_UID = os.getuid()


def file_event_id(function: str, path: str, info: os.stat_result) -> str:
    """The id of one version of a file for one function: path, inode, size and
    modification time, so the same version is queued once."""
    identity = f"{function}\0{path}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}"
    # A name that is not UTF-8 holds surrogates: encode them back to bytes.
    digest = hashlib.sha1(
        identity.encode("utf-8", "surrogateescape"), usedforsecurity=False
    )
    return "file-" + digest.hexdigest()


def readable(path: str, info: os.stat_result) -> bool:
    """True if this process may read the file. A file of our own user with
    its owner-read bit set is, without a system call (a tenth of the cost of
    a file's delivery went to ``os.access``); otherwise ``os.access`` says."""
    if info.st_uid == REAL_UID and info.st_mode & stat.S_IRUSR:
        return True
    return os.access(path, os.R_OK)


class FileMover:
    """Moves files into ``processed/`` or ``failed/``, making folders once.

    One mover serves every watched folder, so two files given the same name
    in a shared ``processed/`` folder are numbered, never overwritten.
    """

    def __init__(self) -> None:
        self._made_dirs: set[str] = set()
        self._renameat2 = load_renameat2()

    def move(self, path: str, target: str) -> str:
        """Rename ``path`` to ``target``, or to ``target`` with ``.1``, ``.2``...
        before its suffix if that name is taken; return the name used.
        Raises ``OSError`` (``FileNotFoundError`` if ``path`` is gone)."""
        parent = target.rpartition(os.sep)[0]
        if parent not in self._made_dirs:
            os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)
        try:
            return self._move_to_free_name(path, target)
        except FileNotFoundError:
            if not os.path.lexists(path):
                raise
            # The folder was removed since it was made: make it again.
            self._made_dirs.discard(parent)
            os.makedirs(parent, exist_ok=True)
            return self._move_to_free_name(path, target)

    def _move_to_free_name(self, path: str, target: str) -> str:
        candidate, number = target, 0
        while not self._rename_unless_taken(path, candidate):
            number += 1
            named = Path(target)
            candidate = str(named.with_name(f"{named.stem}.{number}{named.suffix}"))
        return candidate

    def _rename_unless_taken(self, path: str, target: str) -> bool:
        """Rename ``path`` to ``target``; False, and nothing done, if taken."""
        if self._renameat2 is not None:
            source, destination = os.fsencode(path), os.fsencode(target)
            if not self._renameat2(
                AT_FDCWD, source, AT_FDCWD, destination, RENAME_NOREPLACE
            ):
                return True
            error = ctypes.get_errno()
            if error == errno.EEXIST:
                return False
            if error not in RENAME_UNSUPPORTED:
                # OSError picks the subclass (FileNotFoundError) from errno.
                raise OSError(error, os.strerror(error), path, None, target)
            self._renameat2 = None
        if os.path.lexists(target):
            return False
        os.rename(path, target)
        return True


def load_renameat2() -> Any | None:
    """The C library's ``renameat2``, or None where it has none (not Linux)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    return renameat2


class FileDelivery:
    """One watched folder's checks before an attempt and dispositions after."""

    def __init__(
        self,
        function: str,
        trigger: FileTrigger,
        root: Path,
        mover: FileMover,
        forget: Callable[[str], None],
    ) -> None:
        self.function = function
        self.trigger = trigger
        self.root = root
        self.processed = str(trigger.resolve(trigger.processed))
        self.failed = str(trigger.resolve(trigger.failed))
        self._root_prefix = str(root) + os.sep
        self._mover = mover
        self._forget = forget

    def same_version(self, event: QueuedEvent, path: str) -> os.stat_result | None:
        """The file's status if it is still the version of its event; None,
        logged and the event forgotten, if it is gone or was replaced."""
        info = self.status(event, path)
        if info is None:
            return None
        if file_event_id(self.function, path, info) != event.event_id:
            # A newer version of the file has an event of its own.
            logger.info("files.skipped_replaced", function=self.function, path=path)
            self._forget(event.event_id)
            return None
        return info

    def status(self, event: QueuedEvent, path: str) -> os.stat_result | None:
        """The file's status before an attempt; None, logged and the event
        forgotten, if it is gone or not a regular file."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            logger.info(
                "files.skipped_missing",
                function=self.function,
                path=path,
                reason="the file was deleted or moved before its turn",
            )
        except OSError as exc:
            logger.warning(
                "files.stat_failed", function=self.function, path=path, error=str(exc)
            )
        else:
            if stat.S_ISREG(info.st_mode):
                return info
            logger.info("files.skipped_not_a_file", function=self.function, path=path)
        self._forget(event.event_id)
        return None

    async def permission_denied(self, event: QueuedEvent, path: str) -> bool:
        """Log that the file cannot be read and move it to failed/; False if
        it could not be moved."""
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
        return await self.fail(event, path, record)

    def dispose(self, event: QueuedEvent, path: str) -> bool:
        """Apply the trigger's disposition after a successful invocation;
        False if the file could not be moved or deleted (it stays)."""
        self._forget(event.event_id)
        disposition = self.trigger.disposition
        try:
            if disposition == "move":
                self._mover.move(path, self._target(path, self.processed))
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
                hint="the file stays; it runs again only after a restart",
            )
            return False
        return True

    async def fail(self, event: QueuedEvent, path: str, record: dict[str, Any]) -> bool:
        """Move the file to failed/ and write ``<name>.error.json`` beside it;
        False, logged, if either could not be done."""
        self._forget(event.event_id)
        try:
            target = self._mover.move(path, self._target(path, self.failed))
            text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
            # A surrogate (from a name that is not UTF-8) is written as its
            # JSON escape, \udcXX, so the record stays valid JSON.
            await asyncio.to_thread(
                Path(target + ERROR_RECORD_SUFFIX).write_text,
                text,
                "utf-8",
                "backslashreplace",
            )
        except OSError as exc:
            logger.error(
                "files.fail_move_failed",
                function=self.function,
                path=path,
                error=str(exc),
            )
            return False
        logger.warning("files.moved_to_failed", function=self.function, path=target)
        return True

    def _target(self, path: str, folder: str) -> str:
        """``path``'s place below the root, below ``folder`` instead."""
        if path.startswith(self._root_prefix):
            relative = path[len(self._root_prefix) :]
        else:
            relative = os.path.relpath(path, self.root)
        return f"{folder}{os.sep}{relative}"
