"""The doctor's verdict as GitHub-flavoured markdown (``wandoc check --format markdown``), made to be pasted into
an issue: findings by area with evidence and the fix in the user's shell, a summary line, and the machine's
key facts folded away. Text from the facts (paths, env values, messages that quote them) is escaped, so it
reads as written and never turns into markup."""

from __future__ import annotations

import re
from collections.abc import Sequence

from wandoc.checklist import CheckItem
from wandoc.engine import Finding
from wandoc.facts import Facts
from wandoc.render.shared import SHELL_LANG, area_name, by_area, evidence_text, item_mark, key_facts, split_fix
from wandoc.render.text import MARKS, counts_line

_ESCAPING_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~])")  # a backslash that would escape what follows
_SPECIAL = re.compile(r"([`*\[\]|~])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword _ never emphasises in GFM
_BLOCK_START = re.compile(r"^([#>+\-=]+|\d+[.)])(?=\s|$)")  # a heading, quote, list or rule at the start


def _unblock(m: re.Match[str]) -> str:
    mark = m.group(1)
    return mark[:-1] + "\\" + mark[-1] if mark[0].isdigit() else "\\" + mark


def text(value: object) -> str:
    """Plain text on one line, safe in a paragraph, a list item or a table cell; a path like C:\\Users stays
    as it is, and only what markdown would read as markup is escaped."""
    s = " ".join(str(value).split())
    s = _ESCAPING_BACKSLASH.sub(r"\\\\", s)
    s = s.replace("&", "&amp;").replace("<", "&lt;")
    s = _SPECIAL.sub(r"\\\1", s)
    s = _EDGE_UNDERSCORE.sub(r"\\_", s)
    return _BLOCK_START.sub(_unblock, s)


def code(value: object) -> str:
    """An inline code span that holds any text: the fence is longer than any run of backticks inside."""
    s = " ".join(str(value).split()).replace("|", "\\|")  # GFM splits table cells on | even inside code
    fence = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def code_block(body: str, lang: str) -> list[str]:
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    return [f"{fence}{lang}", body.rstrip("\n"), fence]


def finding_lines(f: Finding, shell: str) -> list[str]:
    mark = MARKS.get(f.severity, MARKS["info"])[0]
    lines = [f"**{mark} {f.severity}: {text(f.title)}** {code(f.rule)}", "", text(f.message), ""]
    if f.evidence:
        shown = "; ".join(f"{text(k)} {code(evidence_text(k, v))}" for k, v in f.evidence.items())
        lines += [f"- evidence: {shown}"]
    prose, command = split_fix(f)
    if prose or command:
        lines += [f"- fix: {text(prose)}" if prose else "- fix:"]
        if command:
            lines += ["", *("  " + line for line in code_block(command, SHELL_LANG.get(shell, "")))]
    return [*lines, ""]


def render_check_markdown(
    findings: Sequence[Finding],
    *,
    facts: Facts,
    rules_evaluated: int,
    checklist: Sequence[CheckItem],
    source: str,
    shell: str,
) -> str:
    """The whole verdict as markdown; ends with a newline."""
    lines = [f"### wandoc check: {counts_line(findings)}", ""]
    for item in checklist:
        mark, _ = item_mark(item)
        said = item.detail
        if not item.checked:
            said = f"not checked: {said}" + (f" (to check: {item.how})" if item.how else "")
        rules = f" {', '.join(code(r) for r in item.rules)}" if item.rules else ""
        lines.append(f"- {mark} **{text(item.label)}**: {text(said)}{rules}")
    lines.append("")
    unseen = sum(1 for item in checklist if not item.checked)
    if not findings:
        lines += [f"No findings in what was checked ({unseen} areas not checked)." if unseen else "No findings.", ""]
    for area, group in by_area(findings):
        lines += [f"#### {text(area_name(area))}", ""]
        for f in group:
            lines += finding_lines(f, shell)
    lines += [
        f"**{counts_line(findings)}** from {rules_evaluated} rules over {text(source)}; fixes for {text(shell)}.",
        "",
        "<details><summary>Key facts</summary>",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {text(k)} | {text(v)} |" for k, v in key_facts(facts, source, checklist)),
        "",
        "</details>",
    ]
    return "\n".join(lines) + "\n"
