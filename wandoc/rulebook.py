"""Where rules come from and what they read: the shipped rule files, the user's own, and each scope's schema.

The one place that ties the engine to the product's data models, so the CLI, the guards and the tests all
load and test rules the same way. Each scope's models are imported when a rule of that scope is checked, so
``wandoc check`` (which checks its facts rules only) does not build the step-metric models it never uses.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from wandoc.engine import Rule, RuleFileError, RuleTestResult, budget_problem, load_rules, run_examples
from wandoc.engine.schema import Schema


def shipped_rules_dir() -> Path:
    """The rule files inside the installed wheel, or ``rules/`` of a source checkout."""
    packaged = Path(__file__).parent / "_shipped_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "rules"


def rule_dirs(extra: Iterable[Path] = (), *, shipped: bool = True) -> list[Path]:
    return ([shipped_rules_dir()] if shipped else []) + [Path(p) for p in extra]


SCOPES = ("facts", "step", "run")


def load(extra: Iterable[Path] = (), disabled: Iterable[str] = (), *, checked: Collection[str] = SCOPES) -> list[Rule]:
    """The shipped rules and the user's, read from their files on every run (no cache: what a rule file says is
    what runs).

    A rule of a ``checked`` scope that reads a path, loop-variable field or enumeration value its scope does
    not have is refused here, naming the file: it would never fire. So is a user's rule whose own examples run
    out of the work budget (the shipped rules' examples are run by the test suite). The doctor checks only its
    facts rules, so it never builds the step-metric models; wanrun checks the runtime rules when it loads them."""
    rules = load_rules(rule_dirs(extra), disabled, lambda scope: schema_for(scope) if scope in checked else None)
    shipped = str(shipped_rules_dir())
    for rule in rules:
        if rule.scope in checked and not rule.source.startswith(shipped):
            problem = budget_problem(rule, PREPARE[rule.scope])
            if problem:
                raise RuleFileError(f"{rule.source}: {problem}")
    return rules


@cache
def schema_for(scope: str) -> Schema:
    """What the rules of one scope read: the facts tree, or the runtime rules' step and run roots."""
    if scope == "facts":
        from wandoc.facts import Facts

        return Schema.of_model(Facts)
    from wandoc.metrics import RUN_ROOTS, STEP_ROOTS

    return Schema(STEP_ROOTS if scope == "step" else RUN_ROOTS)


def prepare_facts(data: dict[str, Any]) -> dict[str, Any]:
    """A facts tree with defaults filled, as a real collection would produce it."""
    from wandoc.facts import Facts

    return Facts.model_validate(data).as_tree()


def prepare_step(data: dict[str, Any]) -> dict[str, Any]:
    from wandoc.metrics import RunInfo, StepHistory, StepMetrics

    return {
        "step": StepMetrics.model_validate(data.get("step", {})).model_dump(mode="json"),
        "run": RunInfo.model_validate(data.get("run", {})).model_dump(mode="json"),
        "history": StepHistory.model_validate(data.get("history", {})).model_dump(mode="json"),
    }


def prepare_run(data: dict[str, Any]) -> dict[str, Any]:
    from wandoc.metrics import RunInfo, Summary

    return {
        "run": RunInfo.model_validate(data.get("run", {})).model_dump(mode="json"),
        "summary": Summary.model_validate(data.get("summary", {})).model_dump(mode="json"),
    }


PREPARE = {"facts": prepare_facts, "step": prepare_step, "run": prepare_run}


def test_rule(rule: Rule) -> RuleTestResult:
    """Run one rule's own examples against its scope's schema."""
    return run_examples(rule, PREPARE[rule.scope], schema_for(rule.scope))
