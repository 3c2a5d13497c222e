"""The doctor's verdict in a terminal: findings grouped by area, evidence, and the fix for the user's shell."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from wandoc.engine import Finding
from wandoc.engine.expr import show
from wandoc.facts import GitFacts

MARKS = {"error": ("✖", "bold red"), "warning": ("▲", "yellow"), "info": ("•", "cyan")}
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


def _evidence(value: Any) -> str:
    text = show(value) if not isinstance(value, dict) else ", ".join(f"{k}={show(v)}" for k, v in value.items())
    return text if len(text) <= 200 else text[:197] + "..."


def counts_line(findings: Sequence[Finding]) -> str:
    n = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    parts = [f"{n['error']} error{'s' * (n['error'] != 1)}", f"{n['warning']} warning{'s' * (n['warning'] != 1)}"]
    return ", ".join(parts) + f", {n['info']} note{'s' * (n['info'] != 1)}"


def print_findings(console: Console, findings: Sequence[Finding], *, verbose: bool = True) -> None:
    by_area: dict[str, list[Finding]] = {}
    for f in findings:
        by_area.setdefault(f.area, []).append(f)
    for area in sorted(by_area, key=lambda a: (-max(f.rank for f in by_area[a]), a)):
        console.print(Text(safe(AREAS.get(area, area), markup=False), style="bold underline"))
        for f in by_area[area]:
            mark, style = MARKS.get(f.severity, ("•", ""))
            where = f" [dim](step {f.step}, {safe(f.module or '')})[/dim]" if f.step is not None else ""
            console.print(
                f"  [{style}]{mark} {safe(f.title)}[/{style}] [dim]{safe(f.rule)}[/dim]{where}", highlight=False
            )
            console.print(Text("    " + safe(f.message, markup=False), style="default"), soft_wrap=False)
            if verbose and f.evidence:
                for label, value in f.evidence.items():
                    console.print(Text(safe(f"      {label}: {_evidence(value)}", markup=False), style="dim"))
            if f.fix:
                console.print(Text("    fix: ", style="green").append(safe(f.fix, markup=False), style="default"))
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


def print_check(
    console: Console,
    findings: Sequence[Finding],
    *,
    rules_evaluated: int,
    seen: Sequence[str],
    unseen: Sequence[str],
    source: str,
    comparison: Sequence[str] = (),
) -> None:
    for line in comparison:
        console.print(escape(line), soft_wrap=True)
    if comparison:
        console.print()
    if findings:
        print_findings(console, findings)
    else:
        console.print("[green]No findings.[/green]")
    console.print(
        f"[bold]{counts_line(findings)}[/bold] from {rules_evaluated} rules over {safe(source)}.", highlight=False
    )
    console.print(f"[dim]checked: {safe(', '.join(seen))}[/dim]", highlight=False)
    if unseen:
        console.print(f"[dim]not checked: {safe('; '.join(unseen))}[/dim]", highlight=False)
