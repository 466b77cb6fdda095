"""A warning when another process watches the same folder.

Two ``fnplane run`` processes watching one folder both run the function
for each of its files (there is no lease that shares a folder between
them). Each process holds a ``flock`` on every folder it watches, on the
folder itself, so no file is written into it: a second process finds the
lock taken and says so at start. The kernel drops the lock when the holder
exits, however it ends (``kill -9`` included).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import structlog

try:
    import fcntl
except ImportError:  # Windows: no flock; no warning either.
    fcntl = None  # type: ignore[assignment]

logger = structlog.get_logger(__name__)


class FolderLocks:
    """The locks this process holds on the folders it watches."""

    def __init__(self) -> None:
        # Folder -> the descriptor holding its lock.
        self._descriptors: dict[str, int] = {}

    def hold(self, folders: Iterable[str]) -> None:
        """Lock each folder, unless this process holds it already; warn of
        each that another process holds. A folder removed and made again
        is locked again (the old lock is on the folder that went)."""
        if fcntl is None:
            return
        for folder in sorted(set(folders)):
            try:
                descriptor = os.open(folder, os.O_RDONLY)
            except OSError:
                continue  # gone again: the watch itself reports it
            held = self._descriptors.pop(folder, None)
            if held is not None:
                if os.fstat(held).st_ino == os.fstat(descriptor).st_ino:
                    self._descriptors[folder] = held
                    os.close(descriptor)
                    continue
                os.close(held)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                logger.warning(
                    "files.folder_watched_elsewhere",
                    folder=folder,
                    hint="another process (another fnplane run?) watches this "
                    "folder: both run the function for each of its files; "
                    "run the file triggers of a folder in one process",
                )
                continue
            except OSError:
                # A filesystem without flock: nothing to compare with.
                os.close(descriptor)
                continue
            self._descriptors[folder] = descriptor

    def release(self) -> None:
        """Give every lock back (closing the descriptor drops it)."""
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()
