"""Moving handled files: a name already taken is numbered, never overwritten."""

from __future__ import annotations

import ctypes
import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from fnplane.sources._file_delivery import FileMover

needs_renameat2 = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="renameat2 is Linux's"
)


def unsupported_renameat2(*args: Any) -> int:
    """A renameat2 answering as on a filesystem without RENAME_NOREPLACE."""
    ctypes.set_errno(errno.EINVAL)
    return -1


@pytest.fixture(params=["renameat2", "check_then_rename", "unsupported"])
def mover(request: pytest.FixtureRequest) -> FileMover:
    """A mover through each path: renameat2, the check and rename used where
    there is none, and renameat2 refused by the filesystem."""
    made = FileMover()
    if request.param == "renameat2" and made._renameat2 is None:
        pytest.skip("no renameat2 in this C library")
    if request.param == "check_then_rename":
        made._renameat2 = None
    elif request.param == "unsupported":
        made._renameat2 = unsupported_renameat2
    return made


def test_taken_names_are_numbered_before_the_suffix(
    mover: FileMover, tmp_path: Path
) -> None:
    """Three files of one name end as a.csv, a.1.csv and a.2.csv, each with
    its own content."""
    processed = tmp_path / "processed"
    for number in range(3):
        source = tmp_path / "a.csv"
        source.write_text(str(number))
        used = mover.move(str(source), str(processed / "a.csv"))
        assert not source.exists()
        assert Path(used).read_text() == str(number)

    moved = {path.name: path.read_text() for path in processed.iterdir()}
    assert moved == {"a.csv": "0", "a.1.csv": "1", "a.2.csv": "2"}


def test_a_missing_file_raises_file_not_found(mover: FileMover, tmp_path: Path) -> None:
    """Moving a file that is gone raises FileNotFoundError and creates nothing
    in the target folder."""
    with pytest.raises(FileNotFoundError):
        mover.move(str(tmp_path / "gone.csv"), str(tmp_path / "done" / "gone.csv"))
    assert list((tmp_path / "done").iterdir()) == []


def test_a_target_folder_removed_since_is_made_again(
    mover: FileMover, tmp_path: Path
) -> None:
    """The folder made for the first move is made again if it was removed."""
    done = tmp_path / "done"
    first, second = tmp_path / "1.csv", tmp_path / "2.csv"
    first.write_text("1")
    second.write_text("2")
    mover.move(str(first), str(done / "1.csv"))
    (done / "1.csv").unlink()
    done.rmdir()

    mover.move(str(second), str(done / "2.csv"))
    assert (done / "2.csv").read_text() == "2"


@needs_renameat2
def test_a_filesystem_without_noreplace_falls_back_for_good(tmp_path: Path) -> None:
    """After renameat2 says the filesystem cannot refuse a taken name, the
    mover checks and renames, and does not try renameat2 again."""
    mover = FileMover()
    mover._renameat2 = unsupported_renameat2
    source = tmp_path / "a.csv"
    source.write_text("a")
    mover.move(str(source), str(tmp_path / "done" / "a.csv"))
    assert mover._renameat2 is None
    assert (tmp_path / "done" / "a.csv").read_text() == "a"
