"""User settings: ``WANDOC_*`` environment variables, ``[tool.wandoc]`` in pyproject.toml, or ``wandoc.toml``.

Precedence, highest first: command-line options, environment, wandoc.toml, pyproject.toml, defaults. Both
files are looked up in the current directory only, so a checkout's settings travel with it, and read by
``wandoc.bounded`` (regular files only, size-capped). Where none of them says anything (the usual case), the
defaults are returned without loading pydantic-settings, whose import alone is a tenth of the doctor's time
budget.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wandoc.errors import first_error

ENV_PREFIX = "WANDOC_"


class SettingsError(ValueError):
    """A settings file or variable the user wrote that cannot be used."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules_dirs: list[Path] = Field(default_factory=list, description="extra rule files or folders")
    disabled_rules: list[str] = Field(default_factory=list, description="rule ids never evaluated")
    repo: Path | None = Field(default=None, description="default Wan checkout")
    ckpt_dir: Path | None = Field(default=None, description="default checkpoint folder")
    fail_on: Literal["error", "warning", "never"] = "error"
    shell: Literal["bash", "zsh", "cmd", "powershell"] | None = None
    regress_threshold: float = Field(default=1.10, description="wanrun compare: a metric ratio counted as worse")

    @field_validator("regress_threshold")
    @classmethod
    def _finite_threshold(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 1.0):  # NaN compares false with everything: every run would pass
            raise ValueError(f"must be a finite number of 1.0 or more, not {v}")
        return v


def _file_settings(cwd: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``wandoc.toml`` and ``[tool.wandoc]`` in ``pyproject.toml`` say, read with the bounded reader: a
    FIFO or a device under either name, a huge or absurdly nested file, is a one-line SettingsError, never a hang
    or a traceback. Absent files say nothing."""
    from wandoc.bounded import FileRefused, load_toml

    found: list[dict[str, Any]] = []
    for name in ("wandoc.toml", "pyproject.toml"):
        path = cwd / name
        try:
            os.lstat(path)
        except OSError:
            found.append({})
            continue
        try:
            data = load_toml(path)
        except FileRefused as exc:
            raise SettingsError(f"settings: cannot read {name}: {exc}") from None
        if name == "pyproject.toml":
            tool = data.get("tool", {})
            if not isinstance(tool, dict) or not isinstance(tool.get("wandoc", {}), dict):
                raise SettingsError("settings: cannot read pyproject.toml: [tool] and [tool.wandoc] must be tables")
            data = tool.get("wandoc", {})
        found.append(data)
    return found[0], found[1]


def _env_named(environ: Mapping[str, str]) -> bool:
    names = {f"{ENV_PREFIX}{name}".lower() for name in Settings.model_fields}
    return any(key.lower() in names for key in environ)  # pydantic-settings matches names case-insensitively


@cache
def _sourced() -> type[Settings]:
    from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

    class SourcedSettings(BaseSettings, Settings):
        """The environment through pydantic-settings; the files as data already read (``files`` below)."""

        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")
        files: ClassVar[tuple[dict[str, Any], ...]] = ()

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            files = tuple(InitSettingsSource(settings_cls, init_kwargs=dict(data)) for data in cls.files)
            return (init_settings, env_settings, *files)

    return SourcedSettings


def load_settings() -> Settings:
    """The user's settings, or SettingsError with a one-line reason."""
    wandoc_toml, pyproject = _file_settings(Path.cwd())
    if not (wandoc_toml or pyproject or _env_named(os.environ)):
        return Settings()
    sourced = _sourced()
    sourced.files = (wandoc_toml, pyproject)
    try:
        loaded = sourced()
    except ValidationError as exc:
        raise SettingsError(f"settings: {first_error(exc)}") from None
    except Exception as exc:  # pydantic-settings words a variable it cannot decode (a list that is not JSON)
        raise SettingsError(f"settings: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return Settings.model_validate(loaded.model_dump())
