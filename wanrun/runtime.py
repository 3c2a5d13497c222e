"""Runtime rules over the guards' measurements: per step with {step, run, history}, at the end with {run, summary}.

A rule reports once, at the first step where it fires, with the module it names: a regression present in every
step is one finding, not fifty. Rules that already fired are not evaluated again, which keeps the per-step cost
to the rules that are still quiet (the engine caches compiled expressions). Thresholds live in the rule files.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from wandoc import rulebook
from wandoc.engine import Finding, Rule, evaluate_rule
from wandoc.engine.expr import HELPERS, Expr, ExprError, compile_expr
from wandoc.metrics import INSPECTED_ONLY, RunInfo, StepHistory, StepMetrics, Summary
from wandoc.probes.platform import probe_platform
from wanrun.targets import Targets, load_targets


@cache
def _shell() -> str:
    """The user's shell, for the fixes' commands: walking the parent processes once per process is enough."""
    return probe_platform(os.environ).shell


@dataclass(frozen=True)
class Gate:
    """What a step rule needs before it is worth evaluating, read from its condition: the ``step.*`` figures that
    must be measured (an ``and`` part ordering arithmetic over them: arithmetic with null is null, and ordering
    null is false), and the parts that read only ``run.*`` (judged again only when the run info changes)."""

    measured: tuple[str, ...] = ()
    run_parts: tuple[Expr, ...] = ()
    step_flags: tuple[str, ...] = ()  # ``step.deep`` standing alone in the ``and``

    def reads_inspected(self) -> bool:
        return bool(set(self.measured) & set(INSPECTED_ONLY)) or "deep" in self.step_flags


def gate_of(when: str) -> Gate:
    try:
        tree = ast.parse(when, mode="eval").body
    except SyntaxError:
        return Gate()
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    measured: set[str] = set()
    run_parts, flags = [], []
    for part in parts:
        roots = {n.id for n in ast.walk(part) if isinstance(n, ast.Name)}
        if roots and roots <= {"run"} | set(HELPERS):
            run_parts.append(compile_expr(ast.unparse(part)))
        elif isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "step":
            flags.append(part.attr)
        elif isinstance(part, ast.Compare) and all(
            isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in part.ops
        ):
            for side in [part.left, *part.comparators]:
                measured |= _arithmetic_reads(side)
    return Gate(tuple(sorted(measured)), tuple(run_parts), tuple(flags))


def _arithmetic_reads(node: ast.expr) -> set[str]:
    """The step figures an expression of only + - * / over step figures and constants reads (else none). A
    figure with a fallback (``(step.x or 0)``) is not needed: null there is the fallback, not null."""
    reads: set[str] = set()

    def walk(sub: ast.expr) -> bool:
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "step":
            reads.add(sub.attr)
            return True
        if isinstance(sub, ast.Constant | ast.Name | ast.Attribute):
            return True
        if isinstance(sub, ast.BinOp):
            return walk(sub.left) and walk(sub.right)
        if isinstance(sub, ast.UnaryOp):
            return walk(sub.operand)
        if isinstance(sub, ast.BoolOp) and isinstance(sub.op, ast.Or) and isinstance(sub.values[-1], ast.Constant):
            return all(isinstance(v, ast.Attribute | ast.Constant) for v in sub.values)
        return False

    return reads if walk(node) else set()


class RuntimeRules:
    def __init__(self, rules: Iterable[Rule], shell: str | None = None) -> None:
        rules = list(rules)
        self.step_rules = sorted((r for r in rules if r.scope == "step"), key=lambda r: r.id)
        # what each rule needs: a step without it skips the rule (most steps judge few rules)
        self.gates = {r.id: gate_of(r.when) for r in self.step_rules}
        self.plain_rules = [r for r in self.step_rules if not self.gates[r.id].reads_inspected()]
        self._run_ok: dict[str, bool] = {}
        self.run_rules = sorted((r for r in rules if r.scope == "run"), key=lambda r: r.id)
        self.shell = shell or _shell()
        self.fired: set[str] = set()
        self._run_values: list[object] | None = None
        self._run_dump: dict[str, Any] = {}

    def _judge(self, rules: list[Rule], scope: dict[str, object], step: int | None) -> list[Finding]:
        new: list[Finding] = []
        for rule in rules:
            if rule.id in self.fired:
                continue
            found = evaluate_rule(rule, scope, self.shell)
            if found:
                self.fired.add(rule.id)
                for f in found:
                    f.step = step
                new.extend(found)
        return sorted(new, key=lambda f: (-f.rank, f.rule))

    def on_step(self, step: StepMetrics, run: RunInfo, history: StepHistory) -> list[Finding]:
        """Findings that first fire at this step."""
        if all(r.id in self.fired for r in self.step_rules):
            return []
        tree, run_tree = step.model_dump(mode="json"), self._run_tree(run)
        rules = [r for r in self.step_rules if r.id not in self.fired and self._open(r, tree)]
        scope = {
            "step": tree,
            "run": run_tree,
            "history": history.model_dump(mode="json"),
        }
        return self._judge(rules, scope, step.index)

    def _run_tree(self, run: RunInfo) -> dict[str, Any]:
        """The run as rules read it, dumped again only when it changed (it rarely does once steps run); the rules'
        run-only conditions are judged again with it."""
        values = list(run.__dict__.values())
        if self._run_values != values:
            self._run_values, self._run_dump = values, run.model_dump(mode="json")
            scope = {"run": self._run_dump}
            self._run_ok = {}
            for rule in self.step_rules:
                try:
                    self._run_ok[rule.id] = all(part.truth(scope) for part in self.gates[rule.id].run_parts)
                except ExprError:
                    self._run_ok[rule.id] = True  # the rule's own evaluation will say what is wrong
        return self._run_dump

    def _open(self, rule: Rule, step: dict[str, Any]) -> bool:
        """A loop, not ``all()`` over a generator, for the figures: this runs for every step rule at every step."""
        if not self._run_ok.get(rule.id, True):
            return False
        gate = self.gates[rule.id]
        for name in gate.measured:
            if step.get(name) is None:
                return False
        return all(step.get(name) for name in gate.step_flags)  # mostly empty

    def at_end(self, run: RunInfo, summary: Summary) -> list[Finding]:
        scope = {"run": run.model_dump(mode="json"), "summary": summary.model_dump(mode="json")}
        return self._judge(self.run_rules, scope, None)


_RULES: dict[tuple[Path, ...], tuple[tuple[tuple[str, int, int], ...], list[Rule]]] = {}
_TARGETS: dict[tuple[Path, ...], tuple[tuple[tuple[str, int, int], ...], Targets]] = {}


def _signature(dirs: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What the user's rule files look like on disk (name, size, mtime): a file changed means parse again. The
    shipped rules are part of the installed package and are read once per process."""
    out = []
    for base in dirs:
        paths = sorted(base.rglob("*.toml")) if base.is_dir() else [base]
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


def cached_rules(extra: tuple[Path, ...]) -> list[Rule]:
    """The shipped rules and ``extra`` rule files, parsed once per process (a second guard costs a stat of
    each file, not a parse)."""
    signature = _signature(extra)
    hit = _RULES.get(extra)
    if hit is None or hit[0] != signature:
        hit = (signature, rulebook.load(extra))
        _RULES[extra] = hit
    return list(hit[1])


def cached_targets(extra: tuple[Path, ...]) -> Targets:
    """What to hook by name (``targets.toml``), read once per process like the rules."""
    signature = _signature(extra)
    hit = _TARGETS.get(extra)
    if hit is None or hit[0] != signature:
        hit = (signature, load_targets(extra))
        _TARGETS[extra] = hit
    return hit[1]
