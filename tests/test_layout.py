"""The repository layout keeps the standard library importable from its root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_platform_folder_has_no_init_file() -> None:
    """A platform/__init__.py would shadow the stdlib module from the root."""
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_module_works_from_the_repository_root() -> None:
    """`python -c "import platform; platform.system()"` runs from the root."""
    completed = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip()


def test_fnplane_imports_from_the_repository_root() -> None:
    """The package resolves to platform/fnplane even when run from the root."""
    completed = subprocess.run(
        [sys.executable, "-c", "import fnplane, platform; print(fnplane.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()).parent == ROOT / "platform" / "fnplane"


def test_importing_fnplane_does_not_import_brokers_or_aiohttp() -> None:
    """A Kafka-only app must not pay for clients it does not use."""
    probe = (
        "import sys, fnplane; "
        "print(sorted(m for m in ('aiohttp', 'aiokafka', 'redis', 'watchdog') "
        "if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
