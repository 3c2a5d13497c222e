"""Where rules come from and what they read: the shipped rule files, the user's own, and each scope's schema.

The one place that ties the engine to the product's data models, so the CLI, the guards and the tests all
load and test rules the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from wandoc.engine import Rule, RuleTestResult, load_rules, run_examples
from wandoc.facts import Facts
from wandoc.metrics import RUN_ROOTS, STEP_ROOTS, RunInfo, StepHistory, StepMetrics, Summary


def shipped_rules_dir() -> Path:
    """The rule files inside the installed wheel, or ``rules/`` of a source checkout."""
    packaged = Path(__file__).parent / "_shipped_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "rules"


def rule_dirs(extra: Iterable[Path] = (), *, shipped: bool = True) -> list[Path]:
    return ([shipped_rules_dir()] if shipped else []) + [Path(p) for p in extra]


def load(extra: Iterable[Path] = (), disabled: Iterable[str] = ()) -> list[Rule]:
    return load_rules(rule_dirs(extra), disabled)


@cache
def facts_roots() -> dict[str, type[BaseModel] | None]:
    roots: dict[str, type[BaseModel] | None] = {}
    for name, f in Facts.model_fields.items():
        ann = f.annotation
        roots[f.alias or name] = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return roots


def roots_for(rule: Rule) -> dict[str, type[BaseModel] | None]:
    if rule.scope == "step":
        return dict(STEP_ROOTS)
    if rule.scope == "run":
        return dict(RUN_ROOTS)
    return facts_roots()


def prepare_facts(data: dict[str, Any]) -> dict[str, Any]:
    """A facts tree with defaults filled, as a real collection would produce it."""
    return Facts.model_validate(data).as_tree()


def prepare_step(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": StepMetrics.model_validate(data.get("step", {})).model_dump(mode="json"),
        "run": RunInfo.model_validate(data.get("run", {})).model_dump(mode="json"),
        "history": StepHistory.model_validate(data.get("history", {})).model_dump(mode="json"),
    }


def prepare_run(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": RunInfo.model_validate(data.get("run", {})).model_dump(mode="json"),
        "summary": Summary.model_validate(data.get("summary", {})).model_dump(mode="json"),
    }


def test_rule(rule: Rule) -> RuleTestResult:
    """Run one rule's own examples against its scope's schema."""
    prepare = {"step": prepare_step, "run": prepare_run}.get(rule.scope, prepare_facts)
    return run_examples(rule, prepare, roots_for(rule))
