"""Runtime rules over the guards' measurements: per step with {step, run, history}, at the end with {run, summary}.

A rule reports once, at the first step where it fires, with the module it names: a regression present in every
step is one finding, not fifty. Rules that already fired are not evaluated again, which keeps the per-step cost
to the rules that are still quiet (the engine caches compiled expressions). Thresholds live in the rule files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from wandoc.engine import Finding, Rule, evaluate_rule
from wandoc.metrics import RunInfo, StepHistory, StepMetrics, Summary
from wandoc.probes.platform import probe_platform


class RuntimeRules:
    def __init__(self, rules: Iterable[Rule], shell: str | None = None) -> None:
        rules = list(rules)
        self.step_rules = sorted((r for r in rules if r.scope == "step"), key=lambda r: r.id)
        self.run_rules = sorted((r for r in rules if r.scope == "run"), key=lambda r: r.id)
        self.shell = shell or probe_platform(os.environ).shell
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
        if all(r.id in self.fired for r in self.step_rules):
            return []
        scope = {
            "step": step.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "history": history.model_dump(mode="json"),
        }
        return self._judge(self.step_rules, scope, step.index)

    def at_end(self, run: RunInfo, summary: Summary) -> list[Finding]:
        scope = {"run": run.model_dump(mode="json"), "summary": summary.model_dump(mode="json")}
        return self._judge(self.run_rules, scope, None)
