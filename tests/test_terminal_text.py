"""Rule and report text reaches the terminal as text: rich markup such as ``[/bold]`` and terminal control sequences
(ESC, CSI, OSC and the other C0 and C1 codes) in a user rule's title, message or fix are shown, never obeyed, in
every view that prints findings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from wandoc.cli import main
from wandoc.engine import Finding
from wandoc.metrics import Report, Summary
from wandoc.render.text import print_findings, safe
from wanrun.live import LiveView
from wanrun.report_view import render

ROOT = Path(__file__).resolve().parents[1]
# a colour change, a window title (OSC), a screen clear, an 8-bit CSI, a bell, a carriage return that would hide
# what came before, and markup that closes a tag nobody opened
HOSTILE = "[/bold][red]x \x1b[31mred\x1b[0m \x1b]0;owned\x07 \x1b[2J \x9b1m \r hidden"
RAW = ("\x1b", "\x07", "\x9b", "\r")


def _finding(**extra: object) -> Finding:
    fields = {"rule": "ENV-HOSTILE", "severity": "error", "title": HOSTILE, "message": HOSTILE, "fix": HOSTILE}
    return Finding(**{**fields, "area": "ENV", "evidence": {"value": HOSTILE}, **extra})  # type: ignore[arg-type]


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=200, color_system="standard"), out


def _shown_not_obeyed(text: str) -> None:
    """Our own styling may use ESC; the rule's text may not: its sequences appear only as visible escapes."""
    assert "owned\x07" not in text and "\x1b[2J" not in text and "\x9b" not in text and "\r" not in text
    assert "\\x1b]0;owned\\x07" in text and "\\x1b[2J" in text and "\\x9b1m" in text
    assert "[/bold][red]x" in text  # markup printed as written


def test_safe_shows_controls_and_escapes_markup() -> None:
    assert safe("a\x1b[31mb\tc\nd\x7f\x85") == "a\\x1b[31mb\tc\nd\\x7f\\x85"
    assert safe("[/bold]", markup=False) == "[/bold]" and safe("[/bold]") == "\\[/bold]"
    assert safe("plain text, 3 GiB free") == "plain text, 3 GiB free"  # the sane twin is untouched


def test_the_doctors_terminal_view() -> None:
    console, out = _console()
    print_findings(console, [_finding()])
    _shown_not_obeyed(out.getvalue())


def test_the_runners_live_and_report_views() -> None:
    console, out = _console()
    with LiveView(console, quiet=True) as view:
        view.on_finding(_finding(step=3, module="blocks.[/x]\x1b[2J"))
    report = Report(findings=[_finding(step=3)], summary=Summary(not_checked=[HOSTILE], error=HOSTILE))
    render(report, console)
    _shown_not_obeyed(out.getvalue())


def _hostile_rule(folder: Path) -> Path:
    folder.mkdir()
    text = (
        'id = "ENV-HOSTILE"\ntitle = "TITLE"\nseverity = "error"\nwhen = "true"\nmessage = "TITLE"\n'
        '[fix]\ntext = "TITLE"\n[[example]]\nname = "TITLE"\nfires = true\n'
    ).replace("TITLE", HOSTILE.replace("\x1b", "\\u001b").replace("\x07", "\\u0007").replace("\x9b", "\\u009b")
                                .replace("\r", "\\r"))  # fmt: skip
    (folder / "hostile.toml").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--facts", str(ROOT / "tests" / "fixtures" / "machines" / "h100-server.json"), "--fail-on", "never"],
        ["check", "--facts", str(ROOT / "tests" / "fixtures" / "machines" / "h100-server.json"), "--fail-on", "never",
         "--format", "markdown"],
        ["rules", "list"],
        ["rules", "show", "ENV-HOSTILE"],
        ["rules", "test"],
    ],
)  # fmt: skip
def test_commands_print_a_hostile_rule_as_text(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = _hostile_rule(tmp_path / "rules")
    with pytest.raises(SystemExit) as exc:
        main([*args, "--rules", str(rules)] if args[0] == "check" or args[1] != "test" else [*args, str(rules)])
    out = capsys.readouterr()
    assert exc.value.code in (0, 1), out.err
    text = out.out + out.err
    assert not any(c in text for c in RAW), text
    if args[-1] != "test":  # rules test names the rule, not its title
        assert "0;owned\\x07" in text


def test_a_one_line_error_quoting_a_rule_file_is_text_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    text = 'id = "ENV-A"\ntitle = "t"\nseverity = "info"\nwhen = "true"\nmessage = "m"\n"col\\u001b]0;owned" = 1\n'
    (rules / "bad.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["rules", "list", "--rules", str(rules)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "\x1b" not in err and "\\x1b]0;owned" in err
