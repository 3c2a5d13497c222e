"""``wandoc bisect`` in a terminal: a line per run while it searches, then the first bad commit and its evidence."""

from __future__ import annotations

import shlex
import textwrap

from wandoc.bisect import BisectResult, Range, Step, Verdict
from wandoc.commit_change import CommitChange, CommitInfo

_ROLE = {"good": "baseline", "bad": "bad ref", "candidate": "testing"}
_MARK = {Verdict.GOOD: "good", Verdict.BAD: "bad", Verdict.SKIP: "skip"}


def step_start(step: Step) -> str:
    """The start of a progress line, printed before the run: ``testing abc1234 (~3 runs left) subject ... ``."""
    left = f" (~{step.runs_left} run{'s' * (step.runs_left != 1)} left)" if step.runs_left is not None else ""
    subject = step.subject if len(step.subject) <= 50 else step.subject[:47] + "..."
    return f"{_ROLE.get(step.role, step.role)} {step.sha[:7]}{left} {subject} ... "


def step_end(step: Step) -> str:
    """The end of the line once judged: ``1.8 s/step, 2 new findings → bad``."""
    j = step.judgement
    if j is None:
        return ""
    verdict = "ran" if step.role == "good" and j.verdict is Verdict.GOOD else _MARK[j.verdict]
    return f"{j.summary} → {verdict}" if j.summary else verdict


def header(rng: Range) -> list[str]:
    n = rng.commits
    lines = [
        f"bisecting {n} commit{'s' * (n != 1)} from {rng.good_ref} ({rng.good[:7]}) to {rng.bad_ref} ({rng.bad[:7]}) "
        f"in a temporary worktree of {rng.top}"
    ]
    if rng.dirty:
        lines.append("note: uncommitted changes in the checkout are not part of the bisection (only commits are run)")
    return lines


def _commit(info: CommitInfo) -> list[str]:
    return [f"  {info.subject}", f"  {info.author}, {info.date}"]


def change_lines(change: CommitChange) -> list[str]:
    """A commit's perf-relevant code facts against its parent, on the run's import path."""
    facts = change.git
    lines = [f"code facts against its parent {change.info.parent[:7]}, on the run's import path:"]
    lines.append(f"  files changed on the path: {', '.join(facts.changed_on_path) or 'none'}")
    if facts.changed_off_path:
        lines.append(f"  files changed off the path (never executed by the run): {', '.join(facts.changed_off_path)}")
    for d in change.differences:
        lines.append(f"  {d.what}: {d.before} -> {d.after}")
    if not change.differences:
        files = " ".join(shlex.quote(p) for p in facts.changed_on_path)
        lines.append("  no code fact the doctor reads differs (attention, masks, syncs, casts, defaults, env reads);")
        lines.append(f"  read the change itself: git show {change.info.short}" + (f" -- {files}" if files else ""))
    return lines


def result_lines(result: BisectResult, rule_id: str, repo_option: str = "") -> list[str]:
    """The answer: the first bad commit with its verdict and evidence, and the command to make it a rule."""
    if result.suspects:
        lines = [
            "the first bad commit is one of these (runs did not start on some of them, so the search cannot tell):"
        ]
        lines += [f"  {s.sha[:7]} {s.subject}" for s in result.suspects]
        return lines
    info = result.first_bad
    if info is None:
        return ["no first bad commit found"]
    lines = [f"first bad commit: {info.sha}", *_commit(info)]
    j = result.judgement
    if j is not None:
        lines.append(
            f"  verdict: {j.summary + ' → ' if j.summary else ''}{_MARK[j.verdict]} against {result.range.good_ref}"
        )
        if j.detail:
            lines += textwrap.indent(j.detail, "    ").splitlines()
    if result.change is not None:
        lines += change_lines(result.change)
        if not result.change.git.changed_on_path:
            lines += [
                "warning: this commit changes no file the run imports, so it cannot have made the run slower by",
                "  itself: the difference measured is most likely noise (short runs on a busy machine). Bisect again",
                "  with more --steps or a higher --threshold.",
            ]
        if result.change.conditions:
            lines.append(f"next: wandoc rules new {rule_id} --from {info.short}{repo_option}")
        else:
            lines.append(f"next: wandoc rules new {rule_id}  (a template: no code fact to build a condition from)")
    elif result.change_error:
        lines.append(f"code facts against its parent: {result.change_error}")
    return lines
