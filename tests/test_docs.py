"""The guides cite only what exists: rule ids, commands and their options (everything after a bare `--` belongs
to the user's generate.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from wandoc import rulebook
from wandoc.cli import app as wandoc_app
from wanrun.cli import app as wanrun_app

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ["docs/troubleshooting.md", "README.md", "docs/your-checkout.md", "docs/bisect.md", "docs/security.md"]
RULE_GUIDES = {"docs/troubleshooting.md"}  # the guide by symptom leads to the rules: it must cite many


def options() -> dict[tuple[str, str], set[str]]:
    """(program, command) -> its option names."""
    out: dict[tuple[str, str], set[str]] = {}
    for program, app in (("wandoc", wandoc_app), ("wanrun", wanrun_app)):
        group = typer.main.get_command(app)
        for name, command in group.commands.items():  # type: ignore[attr-defined]
            out[(program, name)] = {opt for p in command.params for opt in p.opts}
            for sub, subcommand in getattr(command, "commands", {}).items():  # `wandoc rules new ...`
                out[(program, f"{name} {sub}")] = {opt for p in subcommand.params for opt in p.opts}
    return out


def invocations(text: str) -> list[tuple[str, str, list[str]]]:
    """(program, command, options) of each `wandoc ...` / `wanrun ...` in the text, up to a bare `--`."""
    found = []
    for m in re.finditer(r"\b(wandoc|wanrun) ([a-z]+)((?: (?:list|show|test|new|doc)\b)?)([^`\n#]*)", text):
        before_args = m.group(4).split(" -- ")[0]
        found.append((m.group(1), m.group(2) + m.group(3), re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", before_args)))
    return found


@pytest.mark.parametrize("guide", GUIDES)
def test_guides_cite_rules_that_exist(guide: str) -> None:
    ids = {r.id for r in rulebook.load()}
    cited = set(re.findall(r"`([A-Z][A-Z0-9]*-[A-Z0-9-]+)`", (ROOT / guide).read_text(encoding="utf-8")))
    assert cited <= ids, sorted(cited - ids)
    assert len(cited) >= 20 or guide not in RULE_GUIDES


@pytest.mark.parametrize("guide", GUIDES)
def test_guides_cite_commands_and_options_that_exist(guide: str) -> None:
    known = options()
    calls = invocations((ROOT / guide).read_text(encoding="utf-8"))
    assert len(calls) >= 5
    for program, command, opts in calls:
        assert (program, command) in known, f"{program} {command}"
        assert set(opts) <= known[(program, command)], f"{program} {command}: {set(opts) - known[(program, command)]}"
