"""Both commands follow the same command-line conventions: --version, -h on every command and subcommand, a
switch shown as a switch in --help, a usage error as one line and exit 2, and the same marks for severities."""

from __future__ import annotations

import re

import pytest

from tests.clirun import run_wandoc
from wandoc import __version__
from wandoc.engine import Finding
from wandoc.render.text import MARKS
from wanrun.cli import main as wanrun_main


def wanrun(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = wanrun_main(args)
    out, err = capsys.readouterr()
    return code, out, err


RUNNERS = {"wandoc": run_wandoc, "wanrun": wanrun}


@pytest.mark.parametrize("command", ["wandoc", "wanrun"])
def test_version(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = RUNNERS[command](["--version"], capsys)
    assert code == 0 and out == f"{command} {__version__}\n" and not err


@pytest.mark.parametrize(
    "args",
    [
        ["wandoc", "-h"],
        ["wandoc", "check", "-h"],
        ["wandoc", "facts", "-h"],
        ["wandoc", "bisect", "-h"],
        ["wandoc", "rules", "-h"],
        ["wandoc", "rules", "list", "-h"],
        ["wandoc", "rules", "show", "-h"],
        ["wandoc", "rules", "test", "-h"],
        ["wandoc", "rules", "new", "-h"],
        ["wanrun", "-h"],
        ["wanrun", "generate", "-h"],
        ["wanrun", "report", "-h"],
        ["wanrun", "compare", "-h"],
    ],
)
def test_dash_h_is_help_everywhere(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = RUNNERS[args[0]](args[1:], capsys)
    assert code == 0 and "Usage:" in out and not err


@pytest.mark.parametrize(
    ("args", "switches"),
    [
        (["wanrun", "generate", "--help"], ["--offload", "--host-copy", "--strict", "--quiet"]),
        (["wandoc", "check", "--help"], ["--deep", "--verbose"]),
    ],
)
def test_switches_show_no_value(args: list[str], switches: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = RUNNERS[args[0]](args[1:], capsys)
    assert "<bool>" not in out and "BOOLEAN" not in out
    for switch in switches:
        line = next(line for line in out.splitlines() if re.search(rf"{switch}\b", line) and "help" not in switch)
        assert not re.search(rf"{switch}\s+(<|[A-Z]{{3,}})", line), line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["wandoc", "check", "--bogus"], "No such option: --bogus"),
        (["wandoc", "check", "--fail-on", "x"], "'x' is not one of 'error', 'warning', 'never'"),
        (["wandoc", "rules", "show"], "Missing argument 'ID'"),
        (["wanrun", "generate", "--bogus"], "No such option: --bogus"),
        (["wanrun", "generate", "--fail-on", "x"], "'x' is not one of 'error', 'warning', 'never'"),
        (["wanrun", "compare", "a.json"], "Missing argument 'B.json'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = RUNNERS[args[0]](args[1:], capsys)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith(f"{args[0]}: ") and said in err
    assert "Value error" not in err and "Try '" not in err and "Usage:" not in err


def test_no_arguments_is_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("wandoc", "wanrun"):
        code, out, _ = RUNNERS[command]([], capsys)
        assert code == 0 and "Usage" in out


def test_both_commands_mark_severities_alike(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """The doctor's findings printed by `wanrun generate --repo` and by `wandoc check` carry the same marks."""
    from rich.console import Console

    from wanrun.repo_job import _show_doctor

    console = Console(record=True, width=120)
    findings = [Finding(rule=f"X-{s.upper()}", severity=s, title=f"a {s}", message="m", area="X") for s in MARKS]
    _show_doctor(console, findings, 3)
    text = console.export_text()
    for severity, (mark, _) in MARKS.items():
        assert f"{mark} a {severity} X-{severity.upper()}" in text
