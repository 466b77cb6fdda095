"""Finding the functions to run: a folder, a file, a module or ``module:app``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from fnplane.app import App
from fnplane.errors import LoadError, describe_error

DEFAULT_TARGET = "functions"
PACKAGE_DIR = str(Path(__file__).resolve().parent)


def load_app(target: str | None = None) -> App:
    """Load ``target`` and return one app holding every function it registers.

    ``target`` is a folder (every ``*.py`` in it, not recursively, skipping
    names starting with ``_``), a ``.py`` file, an importable module, or
    ``module:attribute`` naming an ``App``. Default: ``./functions``.
    Raises ``LoadError`` with the file and line of an import error.
    """
    target = target or DEFAULT_TARGET
    module_name, _, attribute = target.partition(":")
    if attribute:
        module = (
            _import_file(Path(module_name))
            if module_name.endswith(".py")
            else _import_module(module_name)
        )
        return _app_attribute(module, attribute, target)

    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        modules = [_import_file(file) for file in files]
    elif path.suffix == ".py":
        if not path.is_file():
            raise LoadError(f"file {target} does not exist")
        modules = [_import_file(path)]
    elif target == DEFAULT_TARGET:
        raise LoadError(
            f"no ./{DEFAULT_TARGET} folder here ({Path.cwd()}); run from your "
            "project's root or name a folder, file or module: fnplane run PATH"
        )
    else:
        modules = [_import_module(target)]
    return _merge_apps(modules, target)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"file {path} does not exist")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        # Lets a function file import its neighbours, as Lambda's task root does.
        sys.path.insert(0, folder)
    name = f"fnplane_functions.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(describe_import_error(str(path), exc)) from exc
    return module


def _import_module(name: str) -> ModuleType:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name.split(".")[0] or exc.name == name:
            raise LoadError(
                f"{name!r} is not a folder, a .py file or an importable module"
            ) from exc
        raise LoadError(describe_import_error(name, exc)) from exc
    except Exception as exc:
        raise LoadError(describe_import_error(name, exc)) from exc


def describe_import_error(target: str, exc: BaseException) -> str:
    """One line naming the file and line where loading ``target`` failed."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}, line {exc.lineno}"
    else:
        # Point at the user's line, not at the fnplane code that raised (a
        # RegistrationError comes from inside the decorator).
        frames = traceback.extract_tb(exc.__traceback__)
        user_frames = [
            frame
            for frame in frames
            if "importlib" not in frame.filename
            and not frame.filename.startswith(PACKAGE_DIR)
        ]
        last = (user_frames or frames)[-1] if frames else None
        where = f"{last.filename}, line {last.lineno}" if last else target
    return f"cannot load {target}: {describe_error(exc)} ({where})"


def _app_attribute(module: ModuleType, attribute: str, target: str) -> App:
    found = getattr(module, attribute, None)
    if not isinstance(found, App):
        raise LoadError(f"{target}: {attribute!r} is not an fnplane App")
    return found


def _merge_apps(modules: list[ModuleType], target: str) -> App:
    apps = list(
        dict.fromkeys(
            value
            for module in modules
            for value in vars(module).values()
            if isinstance(value, App)
        )
    )
    if not apps:
        raise LoadError(f"no fnplane App found in {target}; create one: app = App()")
    if len(apps) == 1:
        return apps[0]
    merged = App()
    for app in apps:
        merged.include(app)
    return merged
