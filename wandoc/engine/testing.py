"""A rule's own tests: its examples must fire (or stay quiet) as they say, and everything it reads must exist in
its scope's schema (see ``wandoc.engine.schema``; the models are passed in, so the engine stays free of the rest
of the product)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wandoc.engine.evaluate import evaluate_rule, judge
from wandoc.engine.expr import BudgetExceeded, ExprError
from wandoc.engine.rules import Rule
from wandoc.engine.schema import Schema, rule_problems


def schema_problems(rule: Rule, schema: Schema) -> list[str]:
    """What a rule reads that its scope's schema lacks, one line each: ``ID: where: why``."""
    return [f"{rule.id}: {where}: {why}" for where, why in rule_problems(rule, schema)]


def budget_problem(rule: Rule, prepare: Callable[[dict[str, Any]], dict[str, Any]]) -> str | None:
    """The first of a rule's own examples that runs out of the work budget, as one line; None when every one
    stays within it (an example that is invalid or fails otherwise is for the rule's test to report)."""
    for ex in rule.example:
        try:
            scope = prepare(ex.facts)
        except Exception:  # invalid example facts: `wandoc rules test` words that
            continue
        try:
            judge(rule, scope)
        except BudgetExceeded as exc:
            return f"{rule.id}: example {ex.name!r} {exc}"
        except ExprError:
            continue
    return None


@dataclass
class RuleTestResult:
    rule: str
    source: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_examples(
    rule: Rule, prepare: Callable[[dict[str, Any]], dict[str, Any]], schema: Schema | None = None
) -> RuleTestResult:
    """Run a rule's examples: each must fire (or stay quiet) as it says. A rule needs at least one example
    of each kind, and what it reads must exist in the schema when one is given."""
    result = RuleTestResult(rule.id, rule.source)
    if schema is not None:
        result.failed.extend(schema_problems(rule, schema))
    if not any(e.fires for e in rule.example):
        result.failed.append(f"{rule.id}: no example where the rule fires")
    if not any(not e.fires for e in rule.example):
        result.failed.append(f"{rule.id}: no example where the rule stays quiet")
    for ex in rule.example:
        try:
            scope = prepare(ex.facts)
        except Exception as exc:  # a bad example is a failed test, with the reason
            result.failed.append(f"{rule.id} / {ex.name}: example facts invalid: {exc}")
            continue
        findings = evaluate_rule(rule, scope)
        broken = [f for f in findings if f.rule == rule.id and f.title.startswith(f"rule {rule.id} could not")]
        if broken:
            result.failed.append(f"{rule.id} / {ex.name}: {broken[0].message}")
            continue
        fired = len(findings)
        if ex.fires and not fired:
            result.failed.append(f"{rule.id} / {ex.name}: expected to fire, stayed quiet")
        elif not ex.fires and fired:
            result.failed.append(f"{rule.id} / {ex.name}: expected quiet, fired: {findings[0].message}")
        elif ex.count is not None and fired != ex.count:
            result.failed.append(f"{rule.id} / {ex.name}: expected {ex.count} finding(s), got {fired}")
        else:
            result.passed.append(ex.name)
    return result
