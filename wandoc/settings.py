"""User settings: ``WANDOC_*`` environment variables, ``[tool.wandoc]`` in pyproject.toml, or ``wandoc.toml``.

Precedence, highest first: command-line options, environment, wandoc.toml, pyproject.toml, defaults. Both
files are looked up in the current directory only, so a checkout's settings travel with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wandoc.errors import first_error


class SettingsError(ValueError):
    """A settings file or variable the user wrote that cannot be used."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WANDOC_",
        extra="forbid",
        toml_file="wandoc.toml",
        pyproject_toml_table_header=("tool", "wandoc"),
    )

    rules_dirs: list[Path] = Field(default_factory=list, description="extra rule files or folders")
    disabled_rules: list[str] = Field(default_factory=list, description="rule ids never evaluated")
    repo: Path | None = Field(default=None, description="default Wan checkout")
    ckpt_dir: Path | None = Field(default=None, description="default checkpoint folder")
    fail_on: Literal["error", "warning", "never"] = "error"
    shell: Literal["bash", "zsh", "cmd", "powershell"] | None = None
    regress_threshold: float = Field(default=1.10, description="wanrun compare: a metric ratio counted as worse")

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


def load_settings() -> Settings:
    """The user's settings, or SettingsError with a one-line reason."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"settings: {first_error(exc)}") from None
    except Exception as exc:  # a malformed TOML file surfaces as a decode error from the source
        raise SettingsError(f"settings: cannot read wandoc.toml / pyproject.toml: {exc}") from None
