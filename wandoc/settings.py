"""User settings: ``WANDOC_*`` environment variables, ``[tool.wandoc]`` in pyproject.toml, or ``wandoc.toml``.

Precedence, highest first: command-line options, environment, wandoc.toml, pyproject.toml, defaults. Both
files are looked up in the current directory only, so a checkout's settings travel with it. Where none of
them says anything (the usual case), the defaults are returned without loading pydantic-settings, whose
import alone is a tenth of the doctor's time budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def _has_sources(environ: Mapping[str, str], cwd: Path) -> bool:
    """Whether any variable or file could change a setting; when unsure, yes (the full loader decides)."""
    names = {f"{ENV_PREFIX}{name}".lower() for name in Settings.model_fields}
    if any(key.lower() in names for key in environ):  # pydantic-settings matches names case-insensitively
        return True
    if (cwd / "wandoc.toml").exists():
        return True
    pyproject = cwd / "pyproject.toml"
    if not pyproject.exists():
        return False
    import tomllib

    try:
        with pyproject.open("rb") as f:
            tool = tomllib.load(f).get("tool", {})
    except Exception:  # unreadable or malformed: let the full loader word the error
        return True
    return not isinstance(tool, dict) or "wandoc" in tool


@cache
def _sourced() -> type[Settings]:
    from pydantic_settings import (
        BaseSettings,
        PydanticBaseSettingsSource,
        PyprojectTomlConfigSettingsSource,
        SettingsConfigDict,
        TomlConfigSettingsSource,
    )

    class SourcedSettings(BaseSettings, Settings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            extra="forbid",
            toml_file="wandoc.toml",
            pyproject_toml_table_header=("tool", "wandoc"),
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls),
                PyprojectTomlConfigSettingsSource(settings_cls),
            )

    return SourcedSettings


def load_settings() -> Settings:
    """The user's settings, or SettingsError with a one-line reason."""
    if not _has_sources(os.environ, Path.cwd()):
        return Settings()
    try:
        sourced = _sourced()()
    except ValidationError as exc:
        raise SettingsError(f"settings: {first_error(exc)}") from None
    except Exception as exc:  # a malformed TOML file surfaces as a decode error from the source
        raise SettingsError(f"settings: cannot read wandoc.toml / pyproject.toml: {exc}") from None
    return Settings.model_validate(sourced.model_dump())
