"""The doctor's verdict in a terminal: findings grouped by area, evidence, and the fix for the user's shell."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from wandoc.engine import Finding
from wandoc.engine.expr import HELPERS, show
from wandoc.facts import GitFacts

if TYPE_CHECKING:
    from wandoc.checklist import CheckItem

# One set of marks for both commands and every view: a finding's severity, and a checklist line's state.
MARKS = {"error": ("✖", "bold red"), "warning": ("▲", "yellow"), "info": ("•", "cyan")}
STATE_MARKS = {"passed": ("✓", "green"), "not_checked": ("○", "dim")}
AREAS = {
    "ENV": "Environment variables",
    "GPU": "GPU and driver",
    "TORCH": "PyTorch",
    "SYS": "System memory and platform",
    "ARGS": "generate.py arguments",
    "ATTN": "Attention kernels",
    "CODE": "Code on the run's path",
    "CKPT": "Checkpoints",
    "GIT": "Branch differences",
    "RUN": "During the run",
}


# C0 controls but tab and newline, DEL, and C1: ESC starts CSI and OSC sequences (colours, cursor moves, window
# titles, hyperlinks, clipboard writes); a lone CR or BS overwrites what was printed; U+009B is an 8-bit CSI. And
# the bidirectional embeddings, overrides and isolates, which reorder what a reader sees on the line.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, markup: bool = True) -> str:
    """Text from a rule file, a report or a checkout, fit for the terminal: control characters are shown as
    ``\\x1b`` instead of sent, and rich markup such as ``[/bold]`` is escaped (``markup=False`` for a rich
    ``Text`` or a plain line, which take no markup). Every view that prints such text goes through here."""
    shown = _CONTROL.sub(_visible, str(text))
    return escape(shown) if markup else shown


_fmt_bytes = HELPERS["bytes"]
PIPE_WIDTH = 120  # columns when the output is not a terminal: rich's 80 breaks rule ids, paths and table rows


def make_console(**kwargs: Any) -> Console:
    """The console both commands print to: a terminal's own width, else ``PIPE_WIDTH`` (unless COLUMNS says)."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
    return console


def _in_units(key: str, value: Any) -> Any:
    """A value of an evidence key named ``*_bytes`` (or ``bytes``) in binary units, lists item by item; the
    rule file's key says the unit, and the JSON keeps the raw number."""
    if not (key == "bytes" or key.endswith("_bytes")):
        return value
    if isinstance(value, list):
        return [_in_units(key, v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _fmt_bytes(value) or "0 B"
    return value


def evidence_text(key: str, value: Any, limit: int = 200) -> str:
    """One evidence value as people read it: sizes in GiB, long values cut."""
    value = _in_units(key, value)
    if isinstance(value, dict):
        text = ", ".join(f"{k}={show(_in_units(str(k), v))}" for k, v in value.items())
    else:
        text = show(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def counts_line(findings: Sequence[Finding]) -> str:
    n = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    parts = [f"{n['error']} error{'s' * (n['error'] != 1)}", f"{n['warning']} warning{'s' * (n['warning'] != 1)}"]
    return ", ".join(parts) + f", {n['info']} note{'s' * (n['info'] != 1)}"


def title_line(f: Finding, indent: str = "  ") -> Text:
    """A finding's first line: its mark, title, rule id and (at run time) where; printed unwrapped, so the id
    stays on the title's line wherever the output goes."""
    mark, style = MARKS.get(f.severity, ("•", ""))
    line = Text(indent).append(f"{mark} {safe(f.title, markup=False)}", style=style)
    line.append(f" {safe(f.rule, markup=False)}", style="dim")
    where = [f"step {f.step}"] if f.step is not None else []
    where += [safe(f.module, markup=False)] if f.module else []
    if where:
        line.append(f" ({', '.join(where)})", style="dim")
    return line


def split_fix(f: Finding) -> tuple[str, str | None]:
    """The fix's prose and, apart, the command for the user's shell (the engine appends it to the prose)."""
    command = f.fix_command
    if not command:
        return f.fix, None
    prose = f.fix[: -len(command)].rstrip() if f.fix.endswith(command) else f.fix
    return prose, command


def print_indented(console: Console, text: Text, indent: int, first: int | None = None) -> None:
    """``text`` wrapped to the console, every line indented by ``indent`` (the first by ``first``, for a hanging
    indent), with no trailing spaces."""
    for i, line in enumerate(text.wrap(console, max(console.width - indent, 20))):
        line.rstrip()
        pad = indent if first is None or i else first
        console.print(Text(" " * pad).append_text(line), soft_wrap=True)


def print_finding(console: Console, f: Finding, *, indent: int = 2, evidence: bool = True) -> None:
    """One finding: its title line, the message, the evidence in people's units, and the fix, whose command
    stands on a line of its own and is never broken, so it can be copied whole."""
    console.print(title_line(f, " " * indent), soft_wrap=True)
    body = indent + 2
    print_indented(console, Text(safe(f.message, markup=False)), body)
    if evidence:
        for label, value in f.evidence.items():
            shown = Text(safe(f"{label}: {evidence_text(label, value)}", markup=False), style="dim")
            print_indented(console, shown, body + 2)
    prose, command = split_fix(f)
    if prose:
        print_indented(console, Text("fix: ", style="green").append(safe(prose, markup=False)), body)
    if command:
        prefix = "" if prose else "fix: "
        console.print(Text(" " * (body + (2 if prose else 0)) + prefix + safe(command, markup=False)), soft_wrap=True)


def print_findings(console: Console, findings: Sequence[Finding], *, verbose: bool = True) -> None:
    by_area: dict[str, list[Finding]] = {}
    for f in findings:
        by_area.setdefault(f.area, []).append(f)
    for area in sorted(by_area, key=lambda a: (-max(f.rank for f in by_area[a]), a)):
        console.print(Text(safe(AREAS.get(area, area), markup=False), style="bold underline"))
        for f in by_area[area]:
            print_finding(console, f, evidence=verbose)
        console.print()


def comparison_lines(git: GitFacts) -> list[str]:
    """How many and which changed files the run executes, for any comparison that was made."""
    if not git.compare_ref or git.compare_error:
        return []
    on, off = git.changed_on_path, git.changed_off_path
    lines = [f"compared with {git.compare_ref}: {len(git.changed)} file(s) differ, {len(on)} on the run's path, "
             f"{len(off)} off it"]  # fmt: skip
    if on:
        lines.append("  on the path (executed by the run): " + ", ".join(on))
    if off:
        lines.append("  off the path (never executed by the run): " + ", ".join(off))
    ran = [f for f in git.functions_changed if f.reach != "never"]
    if ran:
        shown = ", ".join(f"{f.function} ({f.file}, {'every step' if f.reach == 'forward' else 'runs'})" for f in ran)
        lines.append(f"  functions the run executes that differ: {shown}")
    return lines


def checklist_line(item: CheckItem) -> Text:
    """``[✓] GPUs (NVML): 1 GPU(s): ...``; a line with findings takes the worst one's mark and names them."""
    mark, style = MARKS.get(item.severity, STATE_MARKS["passed"]) if item.state == "issues" else STATE_MARKS[item.state]
    line = Text("[").append(mark, style=style).append("] ").append(item.label, style="bold")
    detail = safe(item.detail, markup=False)
    if not item.checked:
        line.append(f": not checked: {detail}", style="dim")
        if item.how:
            line.append(f"; to check: {safe(item.how, markup=False)}", style="dim")
    else:
        line.append(f": {detail}" if detail else "")
    if item.rules:
        line.append(f" [{', '.join(item.rules)}]", style=style)
    return line


def print_checklist(console: Console, items: Sequence[CheckItem], *, verbose: bool = False) -> None:
    hint = "" if verbose else " (-v shows what each check saw)"
    console.print(Text(f"Doctor summary{hint}:", style="bold"))
    for item in items:
        print_indented(console, checklist_line(item), 4, first=0)
        if verbose and item.checked:
            for label, value in item.evidence:
                console.print(Text(safe(f"    {label}: {value}", markup=False), style="dim"), soft_wrap=True)
    console.print()


def print_check(
    console: Console,
    findings: Sequence[Finding],
    *,
    rules_evaluated: int,
    checklist: Sequence[CheckItem],
    probe_errors: Sequence[str] = (),
    source: str,
    comparison: Sequence[str] = (),
    verbose: bool = False,
) -> None:
    print_checklist(console, checklist, verbose=verbose)
    for line in comparison:
        console.print(escape(line), soft_wrap=True)
    if comparison:
        console.print()
    unseen = sum(1 for item in checklist if not item.checked)
    if findings:
        print_findings(console, findings)
    elif unseen:
        console.print(f"[green]No findings[/green] in what was checked; {unseen} of {len(checklist)} areas were not "
                      "(○ above, each with how to check it).")  # fmt: skip
    else:
        console.print("[green]No findings.[/green]")
    console.print(
        f"[bold]{counts_line(findings)}[/bold] from {rules_evaluated} rules over {safe(source)}.", highlight=False
    )
    for error in probe_errors:
        console.print(Text(f"probe failed: {safe(error, markup=False)}", style="dim"), soft_wrap=True)
