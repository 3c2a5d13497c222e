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


# -- the README's commands, run as written on this CPU machine ---------------------------------------------------

# What each of the README's built-in `wanrun generate` commands shows on a CPU: (exit code, what the output
# must hold). The --repo ones need a checkout (tests/test_repo_run.py); the wan-1.3b one is a GPU job the run
# sizes before it starts (test_wanrun_cli.py::test_the_wan_1_3b_shape_on_a_cpu_is_hours).
CPU_DEMOS = {
    "wanrun generate": (0, "No findings."),
    "wanrun generate --weights-dtype fp32": (0, "RUN-REPEATED-CASTS"),
    "wanrun generate --preset small --offload": (2, "only on a GPU"),
}


def readme_commands() -> list[str]:
    """Every `wanrun generate` of the README's code blocks, as a user would type it (comments dropped, the
    quick start's last command of its `&&` chain, the venv's path dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        command = line.split(" #")[0].split("&&")[-1].strip().removeprefix(".venv/bin/")
        if command.startswith("wanrun generate"):
            found.append(command)
    return found


def test_every_cpu_demo_of_the_readme_is_known() -> None:
    demos = [c for c in readme_commands() if "--repo" not in c and "wan-1.3b" not in c]
    assert sorted(demos) == sorted(CPU_DEMOS)


def quick_start() -> list[str]:
    """The commands .ci/run takes from the README, extracted the way it does (its awk program)."""
    import subprocess

    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    program = re.search(r"awk '\n(.*?)\n' README.md", script, re.S)
    assert program, ".ci/run extracts the quick start with awk"
    out = subprocess.run(["awk", program.group(1), "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_ci_runs_both_quick_start_commands_the_tests_last() -> None:
    commands = quick_start()
    assert len(commands) == 2 and commands[0].endswith(".venv/bin/wanrun generate")
    assert commands[1].endswith(".venv/bin/python -m pytest -q")
    assert 'for command in "${setup[@]}" "$tests"' in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(CPU_DEMOS))
def test_the_readme_cpu_demos_show_what_the_readme_says(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    from wanrun.cli import main

    monkeypatch.chdir(tmp_path)
    code, said = CPU_DEMOS[command]
    assert main(shlex.split(command)[1:]) == code
    out, err = capsys.readouterr()
    assert said in (out if code == 0 else err)
    if code == 2:
        assert err.count("\n") == 1 and not list(tmp_path.iterdir())  # refused at once, nothing written
