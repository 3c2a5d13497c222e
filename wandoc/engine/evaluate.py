"""Judging a tree of facts (or one step's metrics) with rules, and what a verdict looks like."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, Field

from wandoc.engine.expr import ExprError, compile_expr, render
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


def _fix(rule: Rule, scope: dict[str, Any], shell: str) -> tuple[str, str | None]:
    text = render(rule.fix.text, scope) if rule.fix.text else ""
    template = rule.fix.command_for(shell)
    command = render(template, scope) if template else None
    return (f"{text} {command}".strip() if command else text), command


def evaluate_rule(rule: Rule, scope: dict[str, Any], shell: str = "bash") -> list[Finding]:
    """The findings of one rule over one scope; an expression that fails at run time is a finding of its own
    (severity info) rather than an exception, so one bad rule never hides the others."""
    when, each = rule.compiled()
    try:
        items: list[dict[str, Any]]
        if each is None:
            items = [scope]
        else:
            seq = each.evaluate(scope)
            if isinstance(seq, dict):
                seq = [{"key": k, "value": v} for k, v in seq.items()]
            items = [{**scope, rule.as_: item} for item in seq] if isinstance(seq, list) else []
        out: list[Finding] = []
        for s in items:
            if not when.truth(s):
                continue
            message, (fix, command) = render(rule.message, s).strip(), _fix(rule, s, shell)
            evidence = {label: compile_expr(src).evaluate(s) for label, src in rule.evidence.items()}
            module = compile_expr(rule.module).evaluate(s) if rule.module else None
            out.append(
                Finding(
                    rule=rule.id,
                    severity=rule.severity,
                    title=render(rule.title, s),
                    message=message,
                    fix=fix,
                    fix_command=command,
                    evidence=evidence,
                    area=rule.area,
                    module=str(module) if module is not None else None,
                )
            )
        return out
    except ExprError as exc:
        return [
            Finding(
                rule=rule.id,
                severity="info",
                title=f"rule {rule.id} could not be evaluated",
                message=str(exc),
                area=rule.area,
                evidence={"source": rule.source},
            )
        ]


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
