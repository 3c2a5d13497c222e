"""Rules come from strangers and shared folders: each evaluation has one budget of work and memory for everything
the rule does (comprehensions, helpers, each items, messages, evidence). A rule that exceeds it is refused when
its own examples do, and dropped from a run with a note when a machine makes it; never a hang, a crash or a
lost run. Rule files that are nested or huge are refused with one line."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from wandoc import rulebook
from wandoc.cli import main
from wandoc.engine import Budget, BudgetExceeded, ExprError, compile_expr, evaluate_rule, render
from wandoc.engine.expr import MAX_WORK, show
from wandoc.engine.rules import parse_rule_text

ROOT = Path(__file__).resolve().parents[1]
XS = list(range(1000))
# a 200-item list built by a rule from nothing but its own text
L200 = "split('" + "a," * 199 + "a', ',')"


@pytest.mark.parametrize(
    ("source", "scope"),
    [
        ("count([count([y == x for y in xs]) for x in xs]) > 0", {"xs": XS}),  # quadratic count()
        ("len([[[1 for c in xs] for b in xs] for a in xs])", {"xs": XS}),  # a billion items
        ("len([[[1 for c in L] for b in L] for a in L])".replace("L", L200), {}),  # from its own text
        ("len([xs + xs + xs + xs + xs + xs + xs + xs for a in xs])", {"xs": XS}),  # list building
        ("len([s + s + s + s for a in xs])", {"s": "x" * 100_000, "xs": XS}),  # string building: 400 MB asked
        ("len(str([ys for a in ys]))", {"ys": [XS] * 1000}),  # a billion numbers shown
        ("len(join([[s for b in xs] for a in xs]))", {"s": "x" * 1000, "xs": XS}),
        ("[a == ys for a in ys]", {"ys": [list(range(1000)) for _ in range(1000)]}),  # deep equality
        ("[entries(d) for a in xs]", {"d": {str(i): i for i in range(1000)}, "xs": XS}),
        ("[split(s, ',') for a in xs]", {"s": "a," * 100_000, "xs": XS}),
        ("[like(s, '*a*a*a*a*a*a*a*a*b') for a in xs]", {"s": "a" * 10_000, "xs": XS}),
        ("[median(ys) for a in xs]", {"ys": list(range(100_000)), "xs": XS}),
        ("[unique(ys) for a in xs]", {"ys": [str(i) for i in range(100_000)], "xs": XS}),
        ("[version_lt(ys, ys) for a in xs]", {"ys": list(range(100_000)), "xs": XS}),
        ("[min(ys) for a in xs]", {"ys": [[1] * 1000 for _ in range(1000)], "xs": XS}),
        ("[contains(s, t) for a in xs]", {"s": "a" * 1_000_000, "t": "a" * 99 + "b", "xs": XS}),
    ],
)
def test_heavy_expressions_run_out_of_budget_quickly(source: str, scope: dict) -> None:
    expr = compile_expr(source)
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceeded, match=f"exceeded its work budget of {MAX_WORK:,} steps"):
        expr.evaluate(scope)
    assert time.perf_counter() - t0 < 5  # about 1 s at most on a 2-core box


@pytest.mark.parametrize(
    ("source", "scope"),
    [
        ("len([xs + xs + xs + xs + xs + xs + xs + xs for a in xs])", {"xs": XS}),
        ("len([s + s + s + s for a in xs])", {"s": "x" * 100_000, "xs": XS}),  # 400 MB asked for
        ("[entries(d) for a in xs]", {"d": {str(i): i for i in range(1000)}, "xs": XS}),
        ("[split(s, ',') for a in xs]", {"s": "a," * 100_000, "xs": XS}),
    ],
)
def test_building_runs_out_of_budget_before_memory(source: str, scope: dict) -> None:
    expr = compile_expr(source)
    tracemalloc.start()
    try:
        with pytest.raises(BudgetExceeded):
            expr.evaluate(scope)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_the_budget_is_one_for_all_of_an_evaluation() -> None:
    expr = compile_expr("len([x for x in xs])")
    budget = Budget(3000)
    expr.evaluate({"xs": XS}, budget)  # 1,000 items and their nodes: about 2,000 units
    with pytest.raises(BudgetExceeded):
        expr.evaluate({"xs": XS}, budget)  # the same budget does not stretch to a second pass
    assert compile_expr("len([x for x in xs])").evaluate({"xs": XS}) == 1000  # a fresh one does


@pytest.mark.parametrize(
    "source",
    ["x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x*x", "gib(gib(gib(gib(gib(gib(gib(gib(gib(x)))))))))"],
)
def test_integers_stay_small(source: str) -> None:
    with pytest.raises(ExprError, match="an integer larger than 256 bits"):
        compile_expr(source).evaluate({"x": 10**9})
    assert compile_expr("x * x * x").evaluate({"x": 10**9}) == 10**27  # the sane twin


def test_a_huge_integer_constant_is_refused_and_a_huge_value_still_shows() -> None:
    with pytest.raises(ExprError, match="256 bits"):
        compile_expr("1" + "0" * 100)
    assert show(10**5000).startswith("<a 16,610-bit integer>")  # str() of it would raise
    assert render("{x}", {"x": 10**5000}) == "<a 16,610-bit integer>"
    assert show([[[1]], 2]) == "1, 2" and show(2**64) == str(2**64) and show(1e308) == "1e+308"


def _rule(when: str, *, each: str = "", examples: str = "", scope: str = "facts") -> str:
    lines = ['id = "GPU-HEAVY"', 'title = "heavy"', 'severity = "error"', f'scope = "{scope}"', f'when = "{when}"']
    if each:
        lines += [f'each = "{each}"', 'as = "gpu"']
    return "\n".join([*lines, 'message = "m"', examples])


HEAVY = "len([[[1 for c in L] for b in L] for a in L]) > 0".replace("L", L200)
EXAMPLES = '[[example]]\nname = "one gpu"\nfires = true\n[example.facts.nvml]\ngpus = [{ name = "x" }]\n'


def test_a_rule_whose_own_examples_exceed_the_budget_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "heavy.toml").write_text(_rule(HEAVY, examples=EXAMPLES), encoding="utf-8")
    with pytest.raises(Exception, match=r"heavy\.toml: GPU-HEAVY: example 'one gpu' exceeded its work budget"):
        rulebook.load([tmp_path])
    (tmp_path / "heavy.toml").write_text(_rule("len(nvml.gpus) > 0", examples=EXAMPLES), encoding="utf-8")
    assert any(r.id == "GPU-HEAVY" for r in rulebook.load([tmp_path]))


def test_rules_test_fails_a_rule_over_budget_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    quiet = '[[example]]\nname = "quiet"\nfires = false\n'
    (tmp_path / "heavy.toml").write_text(_rule(HEAVY, examples=EXAMPLES + quiet), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["rules", "test", str(tmp_path)])
    out = capsys.readouterr().out
    assert exc.value.code == 1
    assert "GPU-HEAVY / one gpu: rule GPU-HEAVY exceeded its work budget" in out


def test_a_rule_over_budget_on_a_machine_is_dropped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """each over many items with a heavy when: the budget is the rule's, not each item's."""
    when = "count([count([a == b for a in gpu.throttle_reasons]) for b in gpu.throttle_reasons]) >= 0"
    (tmp_path / "heavy.toml").write_text(_rule(when, each="nvml.gpus"), encoding="utf-8")
    facts = json.loads((ROOT / "tests" / "fixtures" / "machines" / "h100-server.json").read_text())
    facts["nvml"]["gpus"] = [{"name": f"g{i}", "throttle_reasons": [str(j) for j in range(200)]} for i in range(60)]
    (tmp_path / "facts.json").write_text(json.dumps(facts), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["check", "--facts", str(tmp_path / "facts.json"), "--format", "json"])
    others = json.loads(capsys.readouterr().out)["findings"]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit):
        main(["check", "--facts", str(tmp_path / "facts.json"), "--rules", str(tmp_path), "--format", "json"])
    assert time.perf_counter() - t0 < 20
    out = json.loads(capsys.readouterr().out)
    notes = [f for f in out["findings"] if f["rule"] == "GPU-HEAVY"]
    assert [f["severity"] for f in notes] == ["info"]
    assert notes[0]["message"] == (
        f"rule GPU-HEAVY exceeded its work budget of {MAX_WORK:,} steps; it was left out of this run"
    )
    assert notes[0]["evidence"]["source"] == str(tmp_path / "heavy.toml")
    assert [f for f in out["findings"] if f["rule"] != "GPU-HEAVY"] == others  # every other rule judged
    # the sane twin: with few reasons the same rule fires on each GPU
    facts["nvml"]["gpus"] = facts["nvml"]["gpus"][:2]
    (tmp_path / "facts.json").write_text(json.dumps(facts), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["check", "--facts", str(tmp_path / "facts.json"), "--rules", str(tmp_path), "--format", "json"])
    mine = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["rule"] == "GPU-HEAVY"]
    assert [f["severity"] for f in mine] == ["error", "error"]


def test_findings_of_one_rule_are_bounded() -> None:
    rule = parse_rule_text(_rule("true", each="nvml.gpus"), "r.toml")[0]
    few = evaluate_rule(rule, {"nvml": {"gpus": [{}] * 100}})
    assert len(few) == 100 and all(f.severity == "error" for f in few)
    many = evaluate_rule(rule, {"nvml": {"gpus": [{}] * 1000}})  # a finding costs 1,000 steps
    assert len(many) == 1 and "work budget" in many[0].message


def test_a_broken_runtime_rule_never_ends_a_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wanrun.cli import main as wanrun

    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "heavy.toml").write_text(_rule(HEAVY.replace("GPU", "RUN"), scope="step").replace("GPU-", "RUN-"))
    code = wanrun(
        ["generate", "--steps", "2", "--quiet", "--out", "c.npy", "--report", "r.json", "--rules", str(rules)]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    notes = [f for f in report["findings"] if f["rule"] == "RUN-HEAVY"]
    assert len(notes) == 1 and notes[0]["severity"] == "info" and "work budget" in notes[0]["message"]
    assert notes[0]["step"] == 0 and len(report["steps"]) == 2  # dropped at the first step, the run went on


# -- rule files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a = " + "[" * 500 + "]" * 500, "nested more than 32 levels"),
        ("a = " + "{b = " * 500 + "1" + "}" * 500, "nested more than 32 levels"),
        ("a" + ".a" * 100 + " = 1", "nested more than 32 levels"),
        ("a = 1" + "0" * 5000, "not valid TOML: Exceeds the limit"),
    ],
)
def test_nested_and_huge_rule_files_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(Exception, match=needle) as exc:
        parse_rule_text(text, "f.toml")
    assert type(exc.value).__name__ == "RuleFileError" and str(exc.value).startswith("f.toml: ")


def test_a_bad_key_beside_a_long_line_is_found_at_once() -> None:
    """The line finder of the bad-key error was a backtracking regex: minutes on one long line of brackets."""
    base = 'id = "A-B"\ntitle = "t"\nseverity = "info"\nwhen = "true"\nmessage = "m"\n'
    text = base + 'explain = """\n' + "[" * 100_000 + ' x\n"""\ncolour = 1\n'
    t0 = time.perf_counter()
    with pytest.raises(Exception, match=r"f\.toml:9: colour: unknown key"):
        parse_rule_text(text, "f.toml")
    assert time.perf_counter() - t0 < 2


def test_an_unexpected_failure_inside_a_rule_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from wandoc.engine import expr

    def broken(x: object) -> int:
        raise RuntimeError("a bug in a helper")

    monkeypatch.setitem(expr.HELPERS, "len", broken)
    rule = parse_rule_text(_rule("len(nvml.gpus) > 0"), "r.toml")[0]
    [note] = evaluate_rule(rule, {"nvml": {"gpus": [{}]}})
    assert note.severity == "info" and note.message == "rule GPU-HEAVY failed: RuntimeError: a bug in a helper"
