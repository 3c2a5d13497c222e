"""What the runner hooks in a user's checkout, by name: denoiser classes, scheduler steps, phases, outputs.

Kept as data (``targets.toml`` beside the runtime rules) so that a fork which renamed ``WanModel`` or its
scheduler is one line of TOML away from full guarding, with no code change. Files are merged in order: the
shipped one, then each ``--rules`` folder's.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wandoc.engine.rules import TARGETS_FILE
from wandoc.errors import first_error
from wandoc.rulebook import shipped_rules_dir


class TargetsError(ValueError):
    """A targets file that cannot be used; the message names the file."""


class Targets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    denoisers: list[str] = Field(default_factory=list)
    step_methods: list[str] = Field(default_factory=list)
    schedule_methods: list[str] = Field(default_factory=list)
    phases: dict[str, list[str]] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)

    def merged(self, other: Targets) -> Targets:
        phases = {k: list(v) for k, v in self.phases.items()}
        for name, items in other.phases.items():
            phases[name] = [*phases.get(name, []), *items]
        return Targets(
            denoisers=[*self.denoisers, *other.denoisers],
            step_methods=[*self.step_methods, *other.step_methods],
            schedule_methods=[*self.schedule_methods, *other.schedule_methods],
            phases=phases,
            outputs={**self.outputs, **other.outputs},
        )

    def phase_of(self, qualname: str) -> str | None:
        return next((phase for phase, names in self.phases.items() if qualname in names), None)

    def names(self) -> set[str]:
        """Top-level names to look for in a freshly imported module (class or function names)."""
        dotted = [*self.step_methods, *self.schedule_methods, *(n for v in self.phases.values() for n in v)]
        return {n.split(".", 1)[0] for n in dotted} | set(self.outputs)


def _read(path: Path) -> Targets:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Targets.model_validate(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetsError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise TargetsError(f"{path}: {first_error(exc)}") from None


def load_targets(extra: Iterable[Path] = ()) -> Targets:
    """The shipped targets merged with those found in the given rule files' folders."""
    found: list[Path] = []
    for base in [shipped_rules_dir(), *extra]:
        base = Path(base)
        folder = base if base.is_dir() else base.parent
        found.extend(sorted(folder.rglob(TARGETS_FILE)) if folder.is_dir() else [])
    targets = Targets()
    for path in dict.fromkeys(found):
        targets = targets.merged(_read(path))
    return targets
