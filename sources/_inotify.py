"""Linux inotify, read on the event loop: the file source's detector on Linux.

watchdog reads each kernel event on one thread, groups moves on a second and
dispatches on a third, and every file fired the source's own rename into
``processed/`` back at it as a move. In a burst those three threads fought
the event loop for the GIL: about a fifth of the process's time went to them
and each system call of the loop waited for the GIL on its way back. Here
the loop reads the inotify descriptor itself when it is readable, thousands
of events a read, and asks the kernel only for what the source uses:

- ``IN_CLOSE_WRITE``: a file closed after writing, complete;
- ``IN_MOVED_TO``: a file (or folder) renamed into a watched folder;
- ``IN_CREATE`` of a folder (recursive triggers): it gets a watch of its own;
- ``IN_Q_OVERFLOW``: the kernel dropped events; every folder is reconciled;
- ``IN_DELETE_SELF``, ``IN_MOVE_SELF``: a watched folder was removed or
  renamed. A watch follows the folder it was made on, not its path, so a
  renamed folder's watch is dropped (files written into it under its new
  name are not the trigger's), and a target whose own folder went is told.

Renames out of the folder (``IN_MOVED_FROM``) are not asked for, so a
disposition costs no event. A folder created or renamed in below a recursive
watch is watched from then on and reconciled, which finds the files written
into it before its watch existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import struct
from collections.abc import Callable
from typing import Protocol

import structlog

logger = structlog.get_logger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# IN_MASK_ADD: a folder watched for two triggers keeps what each asks for.
FOLDER_GONE = IN_DELETE_SELF | IN_MOVE_SELF
FILE_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | FOLDER_GONE | IN_ONLYDIR | IN_MASK_ADD
RECURSIVE_MASK = FILE_MASK | IN_CREATE
EVENT = struct.Struct("iIII")
# The kernel's limits behind the errors inotify gives when they are reached.
LIMIT_HINTS = {
    errno.EMFILE: "; raise the sysctl fs.inotify.max_user_instances",
    errno.ENOSPC: "; raise the sysctl fs.inotify.max_user_watches",
}
# Large enough for thousands of events a read (each is 16 bytes and a name).
READ_SIZE = 1 << 20


class InotifyTarget(Protocol):
    """What the reader reports to: one watched folder (``FolderWatch``)."""

    def on_event(self, kind: str, src: str, dest: str) -> None:
        """A file event: ``closed`` (``src``) or ``moved`` (into ``dest``)."""

    def request_scan(self, reason: str) -> None:
        """Reconcile the folder: events may have been lost."""

    def watches_below(self, folder: str) -> bool:
        """True if files below ``folder`` belong to this target (recursive)."""

    def folder_gone(self, folder: str) -> None:
        """``folder`` (ending in a separator) was removed or renamed: its
        watch no longer reports files at that path."""


class InotifyReader:
    """One inotify instance read on the event loop for every watched folder."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._libc = load_libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            error = ctypes.get_errno()
            hint = LIMIT_HINTS.get(error, "")
            raise OSError(error, f"cannot start inotify: {os.strerror(error)}{hint}")
        self._fd: int | None = fd
        # Watch descriptor -> (folder path ending in a separator, so a
        # name read is appended to it, its target) for every target watching
        # the folder: the kernel gives one descriptor a folder, however many
        # triggers (or overlapping recursive watches) ask for it.
        self._folders: dict[int, list[tuple[str, InotifyTarget]]] = {}
        # Watch descriptor -> the inode of its folder: after a rename, which
        # of the folder's paths still lead to it.
        self._inodes: dict[int, int] = {}
        self._targets: list[InotifyTarget] = []

    def watch(self, target: InotifyTarget, folder: str, recursive: bool) -> None:
        """Watch ``folder`` (and, if ``recursive``, the folders below it);
        again after the folder was removed or renamed and is back."""
        if target not in self._targets:
            self._targets.append(target)
        self._add(target, folder, recursive)

    def start(self) -> None:
        """Start reading events on the loop."""
        assert self._fd is not None
        self._loop.add_reader(self._fd, self._read)

    def close(self) -> None:
        """Stop reading and release the kernel's watches."""
        if self._fd is None:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        self._folders.clear()
        self._inodes.clear()

    def _add(self, target: InotifyTarget, folder: str, recursive: bool) -> None:
        pending = [folder]
        while pending:
            current = pending.pop()
            mask = RECURSIVE_MASK if recursive else FILE_MASK
            assert self._fd is not None
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(current), mask)
            if wd < 0:
                error = ctypes.get_errno()
                if current == folder:
                    hint = LIMIT_HINTS.get(error, "")
                    message = f"cannot watch {current}: {os.strerror(error)}{hint}"
                    raise OSError(error, message, current)
                continue  # a subfolder removed meanwhile
            with contextlib.suppress(OSError):
                self._inodes[wd] = os.stat(current).st_ino
            watchers = self._folders.setdefault(wd, [])
            watcher = (os.path.join(current, ""), target)
            if watcher not in watchers:
                watchers.append(watcher)
            if recursive:
                pending.extend(subfolders(current, target.watches_below))

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        offset, size = 0, len(data)
        folders = self._folders
        while offset < size:
            wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
            start = offset + EVENT.size
            offset = start + length
            if mask & IN_Q_OVERFLOW:
                self._overflowed()
                continue
            watchers = folders.get(wd)
            if watchers is None:
                continue
            if mask & (FOLDER_GONE | IN_IGNORED):
                self._folder_gone(wd, mask)
                continue
            name = os.fsdecode(data[start:offset].rstrip(b"\0"))
            for folder, target in watchers:
                path = folder + name
                if mask & IN_ISDIR:
                    self._new_folder(target, path)
                elif mask & IN_CLOSE_WRITE:
                    target.on_event("closed", path, "")
                elif mask & IN_MOVED_TO:
                    target.on_event("moved", "", path)
                # A file's IN_CREATE (asked for its folders' sake) is not
                # its completion: its close after writing is.

    def _folder_gone(self, wd: int, mask: int) -> None:
        """Forget the paths that no longer lead to a removed or renamed
        folder (a folder renamed inside a recursive watch was watched again
        at its new path by then, on the same descriptor). The folders below
        a renamed one moved with it: their old paths go too."""
        removed = bool(mask & IN_IGNORED)  # the kernel ended the watch
        gone = self._prune(wd, "", removed)
        if mask & IN_MOVE_SELF:
            for moved in gone:
                for below in list(self._folders):
                    self._prune(below, moved)

    def _prune(self, wd: int, under: str, removed: bool = False) -> list[str]:
        """Drop the paths of watch ``wd`` starting with ``under`` that no
        longer lead to its folder (all of them once ``removed``), telling
        their targets; the watch too once none is left. The paths dropped."""
        watchers = self._folders.get(wd, [])
        inode = self._inodes.get(wd)
        gone = [
            (folder, target)
            for folder, target in watchers
            if folder.startswith(under) and (removed or not same_inode(folder, inode))
        ]
        for folder, target in gone:
            watchers.remove((folder, target))
            target.folder_gone(folder)
        if not watchers:
            self._folders.pop(wd, None)
            self._inodes.pop(wd, None)
            if not removed:
                self._stop_watching(wd)
        return [folder for folder, _ in gone]

    def _stop_watching(self, wd: int) -> None:
        if self._fd is not None:
            self._libc.inotify_rm_watch(self._fd, wd)

    def _new_folder(self, target: InotifyTarget, path: str) -> None:
        if not target.watches_below(path):
            return
        self._add(target, path, recursive=True)
        target.request_scan("new_folder")

    def _overflowed(self) -> None:
        logger.warning(
            "files.events_overflowed",
            hint="the kernel dropped file events; every folder is reconciled",
        )
        for target in self._targets:
            target.request_scan("overflow")


def same_inode(path: str, inode: int | None) -> bool:
    """True if ``path`` is (still) the folder with inode ``inode``."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def subfolders(folder: str, wanted: Callable[[str], bool]) -> list[str]:
    """The folders directly below ``folder`` that ``wanted`` accepts."""
    try:
        with os.scandir(folder) as entries:
            return [
                entry.path
                for entry in entries
                if entry.is_dir(follow_symlinks=False) and wanted(entry.path)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def load_libc() -> ctypes.CDLL:
    """The C library, with inotify's functions; ``OSError`` where it has none."""
    # The running program's symbols include the C library's: no search.
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint32,
        ]
    except AttributeError as exc:
        raise OSError("this C library has no inotify") from exc
    return libc
