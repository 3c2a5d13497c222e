"""Runtime rules over the guards' measurements: per step with {step, run, history}, at the end with {run, summary}.

A rule reports once, at the first step where it fires, with the module it names: a regression present in every
step is one finding, not fifty. Rules that already fired are not evaluated again, which keeps the per-step cost
to the rules that are still quiet (the engine caches compiled expressions). Thresholds live in the rule files.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from wandoc import rulebook
from wandoc.engine import Finding, Rule, evaluate_rule
from wandoc.metrics import INSPECTED_ONLY, RunInfo, StepHistory, StepMetrics, Summary
from wandoc.probes.platform import probe_platform
from wanrun.targets import Targets, load_targets


@cache
def _shell() -> str:
    """The user's shell, for the fixes' commands: walking the parent processes once per process is enough."""
    return probe_platform(os.environ).shell


def needs_inspection(when: str) -> bool:
    """The condition cannot hold on a step that was not inspected: an ``and`` of which one part orders a figure
    only inspection measures (null otherwise: arithmetic with null is null, and ordering null is false)."""
    try:
        tree = ast.parse(when, mode="eval").body
    except SyntaxError:
        return False
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    return any(_orders_inspected(part) for part in parts)


def _orders_inspected(node: ast.expr) -> bool:
    if not isinstance(node, ast.Compare) or not all(
        isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in node.ops
    ):
        return False
    return any(_arithmetic_over_inspected(side) for side in [node.left, *node.comparators])


def _arithmetic_over_inspected(node: ast.expr) -> bool:
    """Null when a figure only inspection measures is null: only + - * / over such figures and constants."""
    reads = False
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "step":
            reads = reads or sub.attr in INSPECTED_ONLY
        elif not isinstance(sub, ast.BinOp | ast.UnaryOp | ast.Name | ast.Constant | ast.Load | ast.operator
                            | ast.unaryop | ast.Attribute):  # fmt: skip
            return False
    return reads


class RuntimeRules:
    def __init__(self, rules: Iterable[Rule], shell: str | None = None) -> None:
        rules = list(rules)
        self.step_rules = sorted((r for r in rules if r.scope == "step"), key=lambda r: r.id)
        # rules that stay quiet on a step that was not inspected: skipped there (most plain steps judge few rules)
        self.plain_rules = [r for r in self.step_rules if not needs_inspection(r.when)]
        self.run_rules = sorted((r for r in rules if r.scope == "run"), key=lambda r: r.id)
        self.shell = shell or _shell()
        self.fired: set[str] = set()

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
        rules = self.step_rules if step.deep else self.plain_rules
        if all(r.id in self.fired for r in rules):
            return []
        scope = {
            "step": step.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "history": history.model_dump(mode="json"),
        }
        return self._judge(rules, scope, step.index)

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
