"""Where rules come from and what they read: the shipped rule files, the user's own, and each scope's schema.

The one place that ties the engine to the product's data models, so the CLI, the guards and the tests all
load and test rules the same way. Loading needs neither the facts nor the step metrics models; those are
imported by the functions that test rules, so ``wandoc check`` does not build models it never uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wandoc.engine import Rule, RuleTestResult, load_rules, run_examples
from wandoc.engine.cache import RuleCache

if TYPE_CHECKING:
    from pydantic import BaseModel


def shipped_rules_dir() -> Path:
    """The rule files inside the installed wheel, or ``rules/`` of a source checkout."""
    packaged = Path(__file__).parent / "_shipped_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "rules"


def rule_dirs(extra: Iterable[Path] = (), *, shipped: bool = True) -> list[Path]:
    return ([shipped_rules_dir()] if shipped else []) + [Path(p) for p in extra]


def load(extra: Iterable[Path] = (), disabled: Iterable[str] = (), cache_dir: Path | None = None) -> list[Rule]:
    """The shipped rules and the user's; with ``cache_dir``, files parsed on an earlier run skip the TOML parser
    (see ``wandoc.engine.cache``: the cached tables are validated like any rule file)."""
    return load_rules(rule_dirs(extra), disabled, RuleCache(cache_dir) if cache_dir is not None else None)


@cache
def facts_roots() -> dict[str, type[BaseModel] | None]:
    from pydantic import BaseModel

    from wandoc.facts import Facts

    roots: dict[str, type[BaseModel] | None] = {}
    for name, f in Facts.model_fields.items():
        ann = f.annotation
        roots[f.alias or name] = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return roots


def roots_for(rule: Rule) -> dict[str, type[BaseModel] | None]:
    from wandoc.metrics import RUN_ROOTS, STEP_ROOTS

    if rule.scope == "step":
        return dict(STEP_ROOTS)
    if rule.scope == "run":
        return dict(RUN_ROOTS)
    return facts_roots()


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


def test_rule(rule: Rule) -> RuleTestResult:
    """Run one rule's own examples against its scope's schema."""
    prepare = {"step": prepare_step, "run": prepare_run}.get(rule.scope, prepare_facts)
    return run_examples(rule, prepare, roots_for(rule))
