"""Platform settings: defaults, then ``[tool.fnplane]``, then ``FNPLANE_*``, then flags.

Each later layer overrides the earlier ones, so a flag on the command line
always wins and an environment variable beats the project file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fnplane.errors import FnplaneError
from fnplane.function import ISOLATIONS
from fnplane.logs import LOG_FORMATS, LOG_LEVELS

ENV_PREFIX = "FNPLANE_"
SYNC_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024


class SettingsError(FnplaneError, ValueError):
    """A setting has a value of the wrong type or out of range."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``fnplane run`` can be told, with its default."""

    host: str = "127.0.0.1"
    port: int = 8080
    grace: float = 10.0
    log_format: str = "console"
    log_level: str = "info"
    debug: bool = False
    init_limit: float = 10.0
    threads: int = 64
    max_body_bytes: int = SYNC_PAYLOAD_LIMIT_BYTES
    api_key: str | None = None
    state_dir: str = ".fnplane"
    async_queue: str = "sqlite"
    async_dedup_window: float = 3600.0
    kafka_bootstrap: str = "localhost:9092"
    kafka_session_timeout: float = 10.0
    redis_url: str = "redis://localhost:6379/0"
    # Read from the environment even by ``Settings()`` built in code, so
    # ``FNPLANE_ISOLATION=process python -m pytest`` switches every platform.
    isolation: str = field(default_factory=lambda: default_isolation(os.environ))

    @classmethod
    def load(cls, root: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from the project file, the environment and ``overrides``.

        ``overrides`` whose value is None are ignored, so unset CLI flags do
        not mask the layers below them.
        """
        values: dict[str, Any] = {}
        values.update(_from_pyproject((root or Path.cwd()) / "pyproject.toml"))
        values.update(_from_environment(os.environ))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(values))

    def __post_init__(self) -> None:
        problems = [
            f"{name} {problem} (got {getattr(self, name)!r})"
            for name, problem, valid in (
                ("port", "must be 0 to 65535", 0 <= self.port <= 65535),
                ("grace", "must be 0 or more seconds", self.grace >= 0),
                ("init_limit", "must be more than 0 seconds", self.init_limit > 0),
                (
                    "kafka_session_timeout",
                    "must be more than 0 seconds",
                    self.kafka_session_timeout > 0,
                ),
                ("threads", "must be 1 or more", self.threads >= 1),
                ("max_body_bytes", "must be 1 or more", self.max_body_bytes >= 1),
                (
                    "redis_url",
                    "must start with redis://, rediss:// or unix://",
                    self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                ),
                (
                    "log_format",
                    f"must be one of {LOG_FORMATS}",
                    self.log_format in LOG_FORMATS,
                ),
                (
                    "isolation",
                    f"must be one of {ISOLATIONS}",
                    self.isolation in ISOLATIONS,
                ),
                (
                    "log_level",
                    f"must be one of {LOG_LEVELS}",
                    self.log_level in LOG_LEVELS,
                ),
            )  # fmt: skip
            if not valid
        ]
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def default_isolation(environ: os._Environ[str] | dict[str, str]) -> str:
    """``FNPLANE_ISOLATION`` when set, else ``inline``."""
    return environ.get(f"{ENV_PREFIX}ISOLATION") or "inline"


def _from_pyproject(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as file:
            table = tomllib.load(file).get("tool", {}).get("fnplane", {})
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in table.items()}


def _from_environment(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    names = {field.name for field in fields(Settings)}
    found = {}
    for key, value in environ.items():
        name = key[len(ENV_PREFIX) :].lower()
        if key.startswith(ENV_PREFIX) and name in names:
            found[name] = value
    return found


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Convert strings from the environment to each field's type, checking names."""
    by_name = {field.name: field for field in fields(Settings)}
    unknown = set(values) - set(by_name)
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {sorted(unknown)}; valid settings are "
            f"{sorted(by_name)}"
        )
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(by_name[name].type)
        try:
            coerced[name] = _convert(value, kind)
        except ValueError as exc:
            raise SettingsError(f"setting {name}: {exc}") from None
    return coerced


def _convert(value: Any, kind: str) -> Any:
    if not isinstance(value, str) or kind.startswith("str"):
        return value
    if kind == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value
