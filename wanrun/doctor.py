"""The doctor's verdict on a checkout and its arguments, taken before a guarded run of it.

A run that is about to be slow for a reason the doctor can see (``offload_model`` effectively True, a dead
``WAN_FORCE_FP16``) is said before the first step, and the run report carries these findings beside the
guards' own, so one file tells the whole story.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wandoc.collect import Request, collect
from wandoc.engine import Finding, Rule, evaluate
from wandoc.facts import Facts


@dataclass
class DoctorVerdict:
    facts: Facts
    findings: list[Finding]
    rules_evaluated: int


def not_a_checkout(facts: Facts) -> str | None:
    """Why the folder cannot be run as a Wan checkout, or None when it can."""
    if not facts.repo.found:
        return facts.repo.error or "not a checkout"
    if not facts.repo.is_wan:
        return "does not look like a Wan checkout (no Wan model code on the script's import path)"
    return None


def examine(
    repo: Path, script: str, args: Sequence[str], rules: Sequence[Rule], shell: str | None = None
) -> DoctorVerdict:
    facts = collect(Request(repo=repo, script=script, generate_args=list(args)))
    chosen = shell or facts.platform.shell or "bash"
    facts_rules = [r for r in rules if r.scope == "facts"]
    findings = evaluate(facts_rules, facts.as_tree(), scope_kind="facts", shell=chosen)
    return DoctorVerdict(facts, findings, len(facts_rules))
