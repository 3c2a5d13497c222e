"""What the shareable views (HTML, markdown) say the same way: findings in area order, a fix split into prose
and the command, evidence as short text, a checklist line's mark, and the facts a reader of an issue needs."""

from __future__ import annotations

from collections.abc import Sequence

from wandoc.checklist import CheckItem
from wandoc.engine import Finding
from wandoc.engine.expr import HELPERS
from wandoc.facts import Facts
from wandoc.render.text import AREAS, MARKS, STATE_MARKS, evidence_text, split_fix

fmt_bytes = HELPERS["bytes"]
__all__ = ["evidence_text", "split_fix"]  # the shared views show evidence and fixes as the terminal does
SHELL_LANG = {"bash": "bash", "zsh": "zsh", "fish": "fish", "cmd": "bat", "powershell": "powershell"}


def by_area(findings: Sequence[Finding]) -> list[tuple[str, list[Finding]]]:
    """Areas with their findings, the area of the most severe finding first (as the terminal shows them)."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.area, []).append(f)
    order = sorted(groups, key=lambda a: (-max(f.rank for f in groups[a]), a))
    return [(a, groups[a]) for a in order]


def area_name(area: str) -> str:
    return AREAS.get(area, area or "Other")


def item_mark(item: CheckItem) -> tuple[str, str]:
    """(mark, class) of a checklist line: the terminal's marks, the worst finding's severity on a line with issues."""
    if item.state == "issues":
        return MARKS.get(item.severity, MARKS["info"])[0], item.severity
    return STATE_MARKS[item.state][0], item.state


def key_facts(facts: Facts, source: str, checklist: Sequence[CheckItem]) -> list[tuple[str, str]]:
    """(label, value) rows: what a maintainer asks first about a slow run, as each check saw it."""
    rows = [("judged", source)] + ([("wandoc", facts.wandoc_version)] if facts.wandoc_version else [])
    return rows + [row for item in checklist for row in item.evidence]
