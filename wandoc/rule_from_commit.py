"""A rule file written from the evidence of one commit: ``wandoc rules new ID --from COMMIT``.

The condition tests the commit's side of each perf-relevant difference against its parent (a site kind that
appeared on the run's path, a default that changed), and the two examples are the facts of both sides, so the
file passes ``wandoc rules test`` as written and says, on any checkout, "this has what that commit did". The
text is checked the way ``rules test`` checks it before anything is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wandoc.commit_change import ChangeError, CommitChange, CommitInfo, commit_change

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _escape(text: str, multiline: bool = False) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n" and multiline:
            out.append(ch)
        elif ch in "\n\t":
            out.append("\\n" if ch == "\n" else "\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def toml_str(text: str) -> str:
    return f'"{_escape(text)}"'


def toml_value(value: Any) -> str:
    """A TOML value; None has no TOML form, so callers leave such keys out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return toml_str(str(value))


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_str(key)


def toml_table(prefix: str, data: dict[str, Any], array: bool = False) -> list[str]:
    """``data`` as a ``[prefix]`` (or ``[[prefix]]``) table; lists of tables become ``[[prefix.key]]`` blocks."""
    plain = {k: v for k, v in data.items() if v is not None and not _tables(v)}
    nested = {k: v for k, v in data.items() if _tables(v)}
    lines = [f"[[{prefix}]]" if array else f"[{prefix}]"] if plain or array or not nested else []
    lines += [f"{_key(k)} = {toml_value(v)}" for k, v in plain.items()]
    for k, items in nested.items():
        for item in items:
            lines += toml_table(f"{prefix}.{_key(k)}", item, array=True)
    return lines


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _braces(text: str) -> str:
    """Literal text inside a message template: braces doubled so they are not read as expressions."""
    return text.replace("{", "{{").replace("}", "}}")


def _shell_path(path: str) -> str:
    return f'"{path}"' if re.search(r"[^A-Za-z0-9_./:@+-]", path) else path


def rule_text(rule_id: str, path: Path, change: CommitChange) -> str:
    """The rule file for ``change``; ChangeError when the commit changed no fact a condition can test."""
    info, facts = change.info, change.git
    used = change.conditions
    if not used:
        on = ", ".join(facts.changed_on_path) or "none"
        off = ", ".join(facts.changed_off_path) or "none"
        raise ChangeError(
            f"commit {info.short} changes no code fact the doctor reads on the run's path (files changed on the "
            f"path: {on}; off the path: {off}); `wandoc rules new {rule_id}` writes a template to fill in by hand"
        )
    if len(used) == 1:
        when = toml_str(str(used[0].condition))
    else:  # one clause a line; a backslash at a line's end joins the lines in a TOML multi-line string
        when = '"""' + " \\\nor ".join(f"({_escape(str(d.condition))})" for d in used) + '"""'
    subject = info.subject if len(info.subject) <= 80 else info.subject[:77] + "..."
    labels = ", ".join(d.label for d in used[:4]) + (", ..." if len(used) > 4 else "")
    title = _braces(f"The run executes what commit {info.short} changed: {labels}")
    cited = "; ".join(f"{d.phrase} {{{d.cite}}}" for d in used)
    message = (
        f"The code this run executes has what commit {_braces(info.short)} (\u201c{_braces(subject)}\u201d) "
        f"changed against its parent, the change that made generation slower: {cited}."
    )
    listed = "\n".join(f"- {d.what}: {d.before} -> {d.after}" for d in change.differences)
    explain = (
        f"Written by `wandoc rules new {rule_id} --from {info.short}`. Commit {info.sha} by {info.author} "
        f"({info.date}), \u201c{info.subject}\u201d, changed {', '.join(facts.changed_on_path) or 'no file'} on the "
        f"run's import path. Its code facts against its parent ({info.parent[:7]}):\n{listed}\n"
        "Say here why this makes Wan slow, with the figures you measured."
    )
    files = " ".join(_shell_path(p) for p in facts.changed_on_path)
    fix_text = f"Read what commit {info.short} changed on the run's path, and undo the part that made it slower:"
    show = _braces(f"git show {info.short}" + (f" -- {files}" if files else ""))
    lines = [
        f"# A wandoc rule written from commit {info.short} against its parent. Test it with: wandoc rules test {path}",
        "# The condition and the examples come from the code facts the commit changed on the run's import path",
        "# (see `wandoc facts`); edit the title, message, explain and fix to say why it is slow.",
        f"id = {toml_str(rule_id)}",
        f"title = {toml_str(title)}",
        'severity = "warning"          # error: many times slower or fails; warning: noticeably slower; info',
        f"when = {when}",
        f"message = {toml_str(message)}",
        f'explain = """\n{_escape(explain, multiline=True)}"""',
        "refs = []",
        "",
        "[evidence]",
        *(f"{_key(d.label)} = {toml_str(str(d.cite))}" for d in used),
        "",
        "[fix]",
        f"text = {toml_str(_braces(fix_text))}",
        *(f"{shell} = {toml_str(show)}" for shell in ("bash", "cmd", "powershell")),
        "",
        *_example(f"commit {info.short}: {subject}", True, change.example_facts(facts.here)),
        "",
        *_example(f"its parent {info.parent[:7]}", False, change.example_facts(facts.there)),
    ]
    return "\n".join(lines) + "\n"


def _example(name: str, fires: bool, facts: dict[str, Any]) -> list[str]:
    lines = ["[[example]]", f"name = {toml_str(name)}", f"fires = {toml_value(fires)}"]
    for root, data in facts.items():
        lines += toml_table(f"example.facts.{root}", data)
    return lines


def rule_from_commit(
    rule_id: str,
    path: Path,
    commit: str,
    repo: Path | None,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
) -> tuple[str, CommitChange]:
    """The text of a rule built from ``commit`` against its parent, checked like ``wandoc rules test`` would."""
    from wandoc import rulebook
    from wandoc.engine.rules import RuleFileError, parse_rule_text

    change = commit_change(repo, commit, script, given_args)
    text = rule_text(rule_id, path, change)
    try:
        (rule,) = parse_rule_text(text, str(path))
    except RuleFileError as exc:
        raise ChangeError(f"the rule written from {change.info.short} does not load: {exc}") from None
    result = rulebook.test_rule(rule)
    if not result.ok:
        raise ChangeError(f"the rule written from {change.info.short} fails its own examples: {result.failed[0]}")
    return text, change


def suggested_id(info: CommitInfo) -> str:
    """A rule id for the regression a commit brought: CODE-SLOW-<short sha>."""
    return f"CODE-SLOW-{info.short.upper()}"
