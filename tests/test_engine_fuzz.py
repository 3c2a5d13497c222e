"""Random rules from the expression grammar, evaluated under the work budget, and random rule files: nothing but an
ExprError (a note in the findings) or a RuleFileError ever comes out, no rule runs past a time bound, and every
finding prints and serialises. One generator, driven by hypothesis (small, shrinking) and by a seeded loop of
10,000 rules (about 30 s on a 2-core box)."""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rich.console import Console

from wandoc.engine import Rule, RuleFileError, evaluate_rule
from wandoc.engine.expr import HELPERS
from wandoc.engine.rules import parse_rule_text
from wandoc.render.text import print_findings

Pick = Callable[[int], int]  # a choice among n
TIME_BOUND = 5.0  # seconds for one rule, everything included; the budget keeps it near one on a loaded 2-core box

ROOTS = ("a", "b", "xs", "s", "d", "n")
HELPER_NAMES = sorted(HELPERS)
CONSTANTS = (
    "0", "1", "-3", "2.5", "1e308", "255", str(2**255), "''", "'x'", "'a,b'", "'[/bold]'", "'\\x1b[2J'", "'*a*'",
    "true", "false", "none", "null",
)  # fmt: skip
ATTRS = ("x", "y", "key", "value", "name", "items")
BINOPS = (" + ", " - ", " * ", " / ", " // ", " % ")
CMPOPS = (" == ", " != ", " < ", " <= ", " > ", " >= ", " in ", " not in ", " is ", " is not ")


def gen_expr(pick: Pick, names: tuple[str, ...] = ROOTS, depth: int = 0) -> str:
    """One expression of the rule language (and, now and then, one it refuses)."""
    if depth >= 4 or pick(3) == 0:
        return names[pick(len(names))] if pick(2) else CONSTANTS[pick(len(CONSTANTS))]
    sub = lambda: gen_expr(pick, names, depth + 1)  # noqa: E731
    kind = pick(11)
    if kind == 0:
        return f"{sub()}.{ATTRS[pick(len(ATTRS))]}"
    if kind == 1:
        return f"{sub()}[{sub()}]"
    if kind == 2:
        return f"{HELPER_NAMES[pick(len(HELPER_NAMES))]}({', '.join(sub() for _ in range(pick(4)))})"
    if kind == 3:
        return f"({sub()}{BINOPS[pick(len(BINOPS))]}{sub()})"
    if kind == 4:
        return f"({'not ' if pick(2) else '-'}{sub()})"
    if kind == 5:
        return f"({sub()}{CMPOPS[pick(len(CMPOPS))]}{sub()}{CMPOPS[pick(len(CMPOPS))] + sub() if pick(4) == 0 else ''})"
    if kind == 6:
        return f"({sub()}{' and ' if pick(2) else ' or '}{sub()})"
    if kind == 7:
        return f"({sub()} if {sub()} else {sub()})"
    if kind == 8:
        return f"[{', '.join(sub() for _ in range(pick(4)))}]"
    # comprehensions, sometimes over a dict's entries with a pair of names, sometimes inside a helper
    var = f"v{depth}"
    target, bound = (f"k{depth}, {var}", (f"k{depth}", var)) if pick(3) == 0 else (var, (var,))
    inner = names + bound
    cond = f" if {gen_expr(pick, inner, depth + 1)}" if pick(2) else ""
    body = f"{gen_expr(pick, inner, depth + 1)} for {target} in {sub()}{cond}"
    return f"{HELPER_NAMES[pick(len(HELPER_NAMES))]}({body})" if kind == 9 else f"[{body}]"


def gen_value(pick: Pick, depth: int = 0) -> Any:
    kind = pick(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return [2**300, -(2**64), 0, 7, 10**4000][pick(5)]  # big ones from data: the shown text must not raise
    if kind == 2:
        return [0.5, -1e308, float("inf"), float("nan")][pick(4)]
    if kind == 3:
        return ["", "x", "a,b,c", "[/red]", "\x1b]0;t\x07", "a" * 5000][pick(6)]
    if kind == 4:
        return bool(pick(2))
    if kind == 5:
        return pick(100)
    if kind == 6:
        return [gen_value(pick, depth + 1) for _ in range(pick(6))]
    if kind == 7:
        return {k: gen_value(pick, depth + 1) for k in ATTRS[: pick(len(ATTRS))]}
    return list(range(pick(2) * 1500))  # now and then a long list, for the budget


def gen_rule(pick: Pick) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": "GEN-RULE", "severity": ("error", "warning", "info")[pick(3)]}
    names = ROOTS
    if pick(3) == 0:
        rule |= {"each": gen_expr(pick), "as": "item"}
        names = (*ROOTS, "item")
    rule["when"] = gen_expr(pick, names)
    template = lambda: " ".join(f"{{{gen_expr(pick, names)}}}" for _ in range(pick(3))) or "t"  # noqa: E731
    rule |= {"title": template(), "message": template(), "fix": {"text": template()}}
    rule["evidence"] = {f"e{i}": gen_expr(pick, names) for i in range(pick(3))}
    return rule


def judge_one(pick: Pick) -> None:
    raw = gen_rule(pick)
    scope = {name: gen_value(pick) for name in ROOTS}
    try:
        rule = Rule.model_validate(raw)
    except ValidationError:  # an expression the language refuses: refused at load, as it must be
        return
    t0 = time.perf_counter()
    findings = evaluate_rule(rule, scope)  # an ExprError is a note "could not be evaluated"; anything else "failed:"
    assert time.perf_counter() - t0 < TIME_BOUND, raw
    assert len(findings) <= 1000
    assert not any(f.message.startswith("rule GEN-RULE failed:") for f in findings), (raw, findings)
    for f in findings:
        json.dumps(f.model_dump(), default=str)
        f.model_dump_json()
    print_findings(Console(file=io.StringIO(), force_terminal=True), findings)


@settings(max_examples=200, deadline=timedelta(seconds=TIME_BOUND), derandomize=True)
@given(st.data())
def test_random_rules_only_ever_raise_expr_errors(data: st.DataObject) -> None:
    judge_one(lambda n: data.draw(st.integers(0, n - 1)))


@pytest.mark.slow
def test_ten_thousand_random_rules() -> None:
    rng = random.Random(11)
    t0 = time.perf_counter()
    for _ in range(10_000):
        judge_one(rng.randrange)
    assert time.perf_counter() - t0 < 600


# -- rule files -----------------------------------------------------------------------------------------------


def _nested(pick: Pick) -> str:
    depth = [1, 20, 33, 400, 3000][pick(5)]
    kind = pick(4)
    if kind == 0:
        return "a = " + "[" * depth + "]" * depth
    if kind == 1:
        return "a = " + "{b = " * depth + "1" + "}" * depth
    if kind == 2:
        return ".".join(["a"] * depth) + " = 1"
    return "\n".join(f"[{'.'.join(['t'] * (i + 1))}]" for i in range(min(depth, 200)))


def _huge(pick: Pick) -> str:
    size = [10, 5000, 100_000][pick(3)]
    return [
        f"a = 1{'0' * size}",
        f"a = {'9' * size}.5",
        f'title = "{"x" * size}"',
        f'explain = """{"[" * size}"""\ncolour = 1',
        "x" * size,
        f'when = "{"a." * (size // 2)}b"',
        'id = "A-B"\ntitle = "t"\nseverity = "info"\nmessage = "m"\nwhen = "' + "(" * min(size, 3000) + '"',
    ][pick(7)]


@settings(max_examples=150, deadline=timedelta(seconds=TIME_BOUND), derandomize=True)
@given(st.data())
def test_nested_and_huge_rule_files_are_refused_in_one_line(data: st.DataObject) -> None:
    pick = lambda n: data.draw(st.integers(0, n - 1))  # noqa: E731
    text = _nested(pick) if pick(2) else _huge(pick)
    t0 = time.perf_counter()
    try:
        parse_rule_text(text, "r.toml")
    except RuleFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("r.toml")
    assert time.perf_counter() - t0 < TIME_BOUND
