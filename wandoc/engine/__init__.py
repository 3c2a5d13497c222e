"""The rule engine: rule models, the safe expression language, loading and testing rule files.

It imports nothing else of the product (no CLI, no terminal, no torch, no probes), so both commands, the
test suite and ``wandoc rules test`` use it the same way.
"""

from wandoc.engine.evaluate import Finding, at_or_above, evaluate, evaluate_rule, judge
from wandoc.engine.expr import MAX_WORK, Budget, BudgetExceeded, Expr, ExprError, compile_expr, render
from wandoc.engine.rules import SEVERITY_RANK, Example, Fix, Rule, RuleFileError, load_rule_file, load_rules
from wandoc.engine.testing import RuleTestResult, budget_problem, run_examples, schema_problems

__all__ = [
    "MAX_WORK",
    "SEVERITY_RANK",
    "Budget",
    "BudgetExceeded",
    "Example",
    "Expr",
    "ExprError",
    "Finding",
    "Fix",
    "Rule",
    "RuleFileError",
    "RuleTestResult",
    "at_or_above",
    "budget_problem",
    "compile_expr",
    "evaluate",
    "evaluate_rule",
    "judge",
    "load_rule_file",
    "load_rules",
    "render",
    "run_examples",
    "schema_problems",
]
