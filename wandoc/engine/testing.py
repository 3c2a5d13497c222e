"""A rule's own tests, and the check that its expressions read paths that exist.

The schema check catches the typo that would otherwise make a rule silently never fire
(``nvml.gpus_count`` instead of ``nvml.gpu_count``): every dotted path an expression reads must exist in
the model of its scope. The models are passed in, so the engine stays free of the rest of the product.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from wandoc.engine.evaluate import evaluate_rule
from wandoc.engine.expr import compile_expr, template_exprs
from wandoc.engine.rules import Rule

Roots = dict[str, type[BaseModel] | None]  # None: a root whose shape is free (no check)
_CONSTANT_NAMES = {"true", "false", "none", "null", "True", "False", "None"}


def _field_type(model: type[BaseModel], name: str) -> tuple[bool, Any]:
    for fname, f in model.model_fields.items():
        if name in (fname, f.alias):
            return True, f.annotation
    return False, None


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else Any
    return tp


def check_path(path: tuple[str, ...], roots: Roots) -> str | None:
    """Why a path does not exist in the schema, or None when it does (or cannot be checked)."""
    root, *rest = path
    if root not in roots:
        return f"unknown name {root!r} (known: {', '.join(sorted(roots))})"
    tp: Any = roots[root]
    walked = [root]
    for key in rest:
        tp = _unwrap(tp)
        if tp is None or tp is Any:
            return None
        origin = typing.get_origin(tp)
        if origin is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
            walked.append(key)
            continue
        if origin is list:
            return f"{'.'.join(walked)} is a list; use a comprehension or first() before '.{key}'"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            ok, tp = _field_type(tp, key)
            if not ok:
                return f"{'.'.join([*walked, key])} does not exist"
            walked.append(key)
            continue
        return f"{'.'.join(walked)} is a value, it has no '.{key}'"
    return None


def schema_problems(rule: Rule, roots: Roots) -> list[str]:
    """Paths in a rule's expressions that do not exist in its scope's schema."""
    sources = [rule.when, *(rule.evidence.values())]
    sources += [s for s in (rule.each, rule.module) if s]
    exprs = [compile_expr(s) for s in sources]
    for text in [rule.message, rule.title, rule.fix.text, rule.fix.bash, rule.fix.cmd, rule.fix.powershell]:
        if text:
            exprs.extend(template_exprs(text))
    problems = []
    for e in exprs:
        for path in e.paths():
            if path[0] in _CONSTANT_NAMES or (rule.each and path[0] == rule.as_):
                continue
            why = check_path(path, roots)
            if why:
                problems.append(f"{rule.id}: {'.'.join(path)}: {why}")
    return sorted(set(problems))


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
    rule: Rule, prepare: Callable[[dict[str, Any]], dict[str, Any]], roots: Roots | None = None
) -> RuleTestResult:
    """Run a rule's examples: each must fire (or stay quiet) as it says. A rule needs at least one example
    of each kind, and its paths must exist in the schema when ``roots`` is given."""
    result = RuleTestResult(rule.id, rule.source)
    if roots is not None:
        result.failed.extend(schema_problems(rule, roots))
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
