"""The file trigger: which folder to watch, which files count, what to do after.

Validated when the decorator runs; the folder itself is resolved and created
when the platform starts (``fnplane.sources.files``), so importing the
functions never touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fnplane.errors import RegistrationError
from fnplane.function import Trigger

# Names that are being written or belong to an editor, never finished files.
DEFAULT_IGNORE = (".*", "*.part", "*.partial", "*.tmp", "*.temp", "*~", "*.swp")
FILE_EVENTS = ("created", "moved_in")
DISPOSITIONS = ("move", "leave", "delete")
DEFAULT_SETTLE_S = 1.0
DEFAULT_PROCESSED = "processed"
DEFAULT_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileTrigger(Trigger):
    """Run the function once for each file completely written into ``folder``."""

    folder: str
    patterns: tuple[str, ...] = ("*",)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    recursive: bool = False
    events: tuple[str, ...] = FILE_EVENTS
    settle_s: float = DEFAULT_SETTLE_S
    disposition: str = "move"
    processed: str = DEFAULT_PROCESSED
    failed: str = DEFAULT_FAILED
    create: bool = True

    source = "files"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /functions`` and ``fnplane list``."""
        return {
            "type": "file",
            "folder": self.folder,
            "patterns": list(self.patterns),
            "ignore": list(self.ignore),
            "recursive": self.recursive,
            "events": list(self.events),
            "settle": self.settle_s,
            "disposition": self.disposition,
        }

    def resolve(self, path: str) -> Path:
        """``processed`` or ``failed`` as an absolute folder (relative ones sit
        inside the watched folder)."""
        folder = Path(path)
        if not folder.is_absolute():
            folder = Path(self.folder) / folder
        return folder.absolute()

    @classmethod
    def build(
        cls,
        folder: str | Path,
        *,
        patterns: str | tuple[str, ...] | list[str],
        ignore: str | tuple[str, ...] | list[str],
        recursive: bool,
        events: str | tuple[str, ...] | list[str],
        settle: float | timedelta,
        disposition: str,
        processed: str | Path,
        failed: str | Path,
        create: bool,
    ) -> FileTrigger:
        """Validate the decorator's arguments; ``RegistrationError`` says which."""
        if not isinstance(folder, str | Path) or not str(folder):
            raise RegistrationError(f"on_file: folder must be a path, got {folder!r}")
        chosen = names(events, "events")
        unknown = set(chosen) - set(FILE_EVENTS)
        if unknown or not chosen:
            raise RegistrationError(
                f"on_file({str(folder)!r}): events must be some of {FILE_EVENTS}, "
                f"got {list(chosen)}"
            )
        if disposition not in DISPOSITIONS:
            raise RegistrationError(
                f"on_file({str(folder)!r}): disposition must be one of "
                f"{DISPOSITIONS}, got {disposition!r}"
            )
        return cls(
            folder=str(folder),
            patterns=names(patterns, "patterns"),
            ignore=names(ignore, "ignore"),
            recursive=bool(recursive),
            events=chosen,
            settle_s=settle_seconds(settle, str(folder)),
            disposition=disposition,
            processed=str(processed),
            failed=str(failed),
            create=bool(create),
        )


def names(value: str | tuple[str, ...] | list[str], option: str) -> tuple[str, ...]:
    """A tuple of strings from one string or a list of them."""
    listed = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(item, str) for item in listed):
        raise RegistrationError(
            f"on_file: {option} must be strings (glob patterns), got {value!r}"
        )
    return listed


def settle_seconds(value: float | timedelta, folder: str) -> float:
    """``settle`` in seconds: more than 0, at most an hour."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistrationError(
            f"on_file({folder!r}): settle must be seconds or a timedelta, got {value!r}"
        )
    if not 0 < value <= 3600:
        raise RegistrationError(
            f"on_file({folder!r}): settle must be more than 0 and at most 3600 "
            f"seconds, got {value:g}"
        )
    return float(value)
