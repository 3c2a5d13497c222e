"""Judging a tree of facts (or one step's metrics) with rules, and what a verdict looks like."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, Field

from wandoc.engine.expr import (
    ENTRY_UNITS,
    FINDING_UNITS,
    MAX_WORK,
    Budget,
    BudgetExceeded,
    ExprError,
    compile_expr,
    render,
    show,
)
from wandoc.engine.rules import SEVERITY_RANK, Rule, Severity


class Finding(BaseModel):
    rule: str = Field(description="The rule's id, e.g. RUN-OFFLOAD-TRAFFIC (see docs/rules.md).")
    severity: Severity = Field(description="error (fails, or many times slower), warning (noticeably slower) or info.")
    title: str = Field(description="What is wrong, in a few words.")
    message: str = Field(description="What the rule saw, citing the evidence.")
    fix: str = Field("", description="Prose and, where there is one, the command for the user's shell.")
    fix_command: str | None = Field(None, description="The command alone, for the user's shell, when the fix has one.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="The values the rule judged, by name.")
    area: str = Field("", description="The rule's area: ENV, GPU, TORCH, SYS, ARGS, ATTN, CODE, CKPT, GIT or RUN.")
    step: int | None = Field(None, description="Runtime findings: the first step where it fired.")
    module: str | None = Field(None, description="Runtime findings: dotted module path.")
    process_rank: int | None = Field(None, description="Runtime findings of a multi-process run: the rank that saw it.")

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)


MAX_TITLE, MAX_TEXT = 1_000, 10_000  # characters of a finding's title, and of its message and fix


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fix(rule: Rule, scope: dict[str, Any], shell: str, budget: Budget) -> tuple[str, str | None]:
    text = render(rule.fix.text, scope, budget) if rule.fix.text else ""
    template = rule.fix.command_for(shell)
    command = _clip(render(template, scope, budget), MAX_TEXT) if template else None
    return _clip(f"{text} {command}".strip() if command else text, MAX_TEXT), command


def judge(rule: Rule, scope: dict[str, Any], shell: str = "bash", budget: Budget | None = None) -> list[Finding]:
    """The findings of one rule over one scope, raising ExprError (BudgetExceeded when it runs out of ``budget``):
    ``evaluate_rule`` is what commands call."""
    budget = budget or Budget()
    when, each = rule.compiled()
    items: list[Any] = [None]
    if each is not None:
        seq = each.evaluate(scope, budget)
        if isinstance(seq, dict):
            budget.charge(len(seq) * ENTRY_UNITS)
            seq = [{"key": k, "value": v} for k, v in seq.items()]
        items = seq if isinstance(seq, list) else []
    out: list[Finding] = []
    for item in items:
        if each is None:
            s = scope
        else:
            budget.charge(1 + len(scope) // 8)  # the item's own copy of the scope
            s = {**scope, rule.as_: item}
        if not when.truth(s, budget):
            continue
        budget.charge(FINDING_UNITS)
        message, (fix, command) = _clip(render(rule.message, s, budget).strip(), MAX_TEXT), _fix(rule, s, shell, budget)
        evidence = {}
        for label, src in rule.evidence.items():
            evidence[label] = value = compile_expr(src).evaluate(s, budget)
            budget.charge_deep(value)  # it is stored, printed and written as JSON
        module = compile_expr(rule.module).evaluate(s, budget) if rule.module else None
        budget.charge_deep(module)
        out.append(
            Finding(
                rule=rule.id,
                severity=rule.severity,
                title=_clip(render(rule.title, s, budget), MAX_TITLE),
                message=message,
                fix=fix,
                fix_command=command,
                evidence=evidence,
                area=rule.area,
                module=show(module) if module is not None else None,
            )
        )
    return out


def evaluate_rule(rule: Rule, scope: dict[str, Any], shell: str = "bash", budget: int = MAX_WORK) -> list[Finding]:
    """The findings of one rule over one scope, within one work budget for everything the rule does there (its
    ``each`` items, condition, evidence and messages). A rule that fails at run time, or runs out of budget,
    gives a finding of its own (severity info) naming it, rather than an exception: one bad rule never hides
    the others nor ends a run."""
    try:
        return judge(rule, scope, shell, Budget(budget))
    except BudgetExceeded as exc:
        return [_not_evaluated(rule, f"rule {rule.id} {exc}; it was left out of this run", ": it ran out of budget")]
    except ExprError as exc:
        return [_not_evaluated(rule, str(exc))]
    except Exception as exc:  # the engine's own bug: still never the end of a run
        return [_not_evaluated(rule, f"rule {rule.id} failed: {type(exc).__name__}: {show(str(exc))[:200]}")]


def _not_evaluated(rule: Rule, why: str, title: str = "") -> Finding:
    return Finding(
        rule=rule.id,
        severity="info",
        title=f"rule {rule.id} could not be evaluated{title}",
        message=why,
        area=rule.area,
        evidence={"source": rule.source},
    )


def evaluate(
    rules: Iterable[Rule], scope: dict[str, Any], *, scope_kind: str = "facts", shell: str = "bash"
) -> list[Finding]:
    """All findings of the rules of one scope kind, most severe first, in rule-id order within a severity."""
    findings: list[Finding] = []
    for rule in rules:
        if rule.scope == scope_kind:
            findings.extend(evaluate_rule(rule, scope, shell))
    return sorted(findings, key=lambda f: (-f.rank, f.rule))


def at_or_above(findings: Iterable[Finding], level: str) -> list[Finding]:
    """Findings that reach a --fail-on level ("never" reaches nothing)."""
    if level == "never":
        return []
    return [f for f in findings if f.rank >= SEVERITY_RANK[level]]


Prepare = Callable[[dict[str, Any]], dict[str, Any]]
