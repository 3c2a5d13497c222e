"""The rule engine: the safe expression language, rule files from strangers, evaluation and rule tests."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wandoc import rulebook
from wandoc.engine import ExprError, RuleFileError, compile_expr, evaluate, load_rule_file, load_rules, render
from wandoc.engine.rules import parse_rule_text

FACTS = {
    "nvml": {"available": True, "gpus": [{"name": "RTX 4090", "memory_free_bytes": 3 * 2**30, "index": 0}]},
    "env": {"vars": {"WAN_FORCE_FP16": "true", "CUDA_VISIBLE_DEVICES": ""}},
    "torch": {"version": "2.9.1+cu128", "cuda_build": 12.8},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("nvml.available and len(nvml.gpus) == 1", True),
        ("first(nvml.gpus).memory_free_bytes < gib(4)", True),
        ("any(g.memory_free_bytes > gib(8) for g in nvml.gpus)", False),
        ("[g.name for g in nvml.gpus if g.index == 0]", ["RTX 4090"]),
        ("env.vars.WAN_FORCE_FP16 in ['1', 'yes']", False),
        ("get(env.vars, 'CUDA_VISIBLE_DEVICES') == ''", True),
        ("version_lt(torch.version, '2.10')", True),
        ("torch.cuda_build >= 12.4", True),
        ("missing.path.deep > 3", False),  # missing data is None; ordering with None is false
        ("missing.path is None", True),
        ("nvml.gpus[5].name", None),
        ("[k for k, v in env.vars if v == 'true']", ["WAN_FORCE_FP16"]),
        ("1 / 0", None),
        ("'a' + 'b'", "ab"),
        ("bytes(1536 * 2**10)" if False else "bytes(1572864)", "1.5 MiB"),
        ("'x' < 3", False),
    ],
)
def test_expressions(source: str, expected: object) -> None:
    assert compile_expr(source).evaluate(FACTS) == expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('echo owned')",
        "().__class__.__bases__[0].__subclasses__()",
        "nvml.__dict__",
        "open('/etc/passwd')",
        "eval('1')",
        "(lambda: 1)()",
        "[x for x in nvml.gpus for y in nvml.gpus]",
        "2 ** 100000",
        "nvml.gpus[::-1]",
        "{'a': 1}",
        "len(x=1)",
        "getattr(nvml, 'gpus')",
        "x := 1",
        "f'{nvml}'",
        "a" * 5000,
        "",
    ],
)
def test_hostile_expressions_are_refused(source: str) -> None:
    with pytest.raises(ExprError):
        compile_expr(source)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(source=st.text(max_size=60), data=json_values)
def test_fuzz_any_text_either_refused_or_evaluates(source: str, data: object) -> None:
    """Whatever a rule file contains, the evaluator refuses it or returns a value: it never raises anything else."""
    try:
        expr = compile_expr(source)
    except ExprError:
        return
    with contextlib.suppress(ExprError):
        expr.evaluate({"a": data, "b": data, "x": data})


names = st.sampled_from(["a", "b", "a.x", "b[0]", "1", "'s'", "none", "len(a)", "first(b)", "gib(1)", "a.y.z"])
ops = st.sampled_from([" and ", " or ", " == ", " != ", " < ", " >= ", " + ", " - ", " * ", " / ", " % ", " in "])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.tuples(names, ops), min_size=1, max_size=6), data=json_values)
def test_fuzz_wellformed_expressions_never_crash(parts: list[tuple[str, str]], data: object) -> None:
    source = "".join(n + o for n, o in parts) + "a"
    with contextlib.suppress(ExprError):
        compile_expr(source).evaluate({"a": data, "b": [data]})


def test_render_message_templates() -> None:
    scope = {"gpu": {"name": "RTX 3090", "free": 5 * 2**30}, "xs": ["a", "b"]}
    assert render("{gpu.name} has {bytes(gpu.free)} free; {{literal}} {xs}", scope) == (
        "RTX 3090 has 5.0 GiB free; {literal} a, b"
    )


RULE = """
id = "GPU-TEST"
title = "test rule"
severity = "warning"
each = "nvml.gpus"
as = "gpu"
when = "gpu.memory_free_bytes < gib(4)"
message = "{gpu.name}: only {bytes(gpu.memory_free_bytes)} free"
[fix]
text = "Close other programs."
bash = "export A=1"
cmd = "set A=1"
powershell = '$env:A="1"'
[[example]]
name = "fires"
fires = true
count = 1
[example.facts.nvml]
gpus = [{ name = "x", memory_free_bytes = 1 }, { name = "y", memory_free_bytes = 99999999999 }]
[[example]]
name = "quiet"
fires = false
"""


def test_each_gives_one_finding_per_item_and_shell_fix() -> None:
    rule = parse_rule_text(RULE, "t.toml")[0]
    findings = evaluate([rule], FACTS | {"nvml": {"gpus": [{"name": "a", "memory_free_bytes": 1}] * 2}}, shell="cmd")
    assert [f.message for f in findings] == ["a: only 1 B free"] * 2
    assert findings[0].fix == "Close other programs. set A=1"
    assert findings[0].fix_command == "set A=1"
    assert evaluate([rule], FACTS, shell="powershell")[0].fix_command == '$env:A="1"'
    assert rulebook.test_rule(rule).ok


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("id = ", "not valid TOML"),
        (RULE.replace('severity = "warning"', 'severity = "fatal"'), ":4: severity"),
        (RULE.replace('title = "test rule"', 'title = "t"\ncolour = "red"'), "colour: unknown key"),
        (RULE.replace('when = "gpu.memory_free_bytes < gib(4)"', "when = \"__import__('os')\""), "when:"),
        (RULE.replace('message = "{gpu.name}', 'message = "{gpu.__class__}'), "message"),
        (RULE.replace('id = "GPU-TEST"', 'id = "lowercase"'), "area prefix"),
        (RULE.replace('[fix]\ntext = "Close other programs."', '[fix]\ntext = "{open(1)}"'), "fix.text"),
    ],
)
def test_bad_rule_files_name_file_and_reason(text: str, needle: str) -> None:
    with pytest.raises(RuleFileError) as exc:
        parse_rule_text(text, "bad.toml")
    assert str(exc.value).startswith("bad.toml")
    assert needle in str(exc.value)


def test_rule_tests_catch_schema_typos_and_missing_examples() -> None:
    typo = RULE.replace('when = "gpu.', 'when = "nvml.gpu_cnt > 0 and gpu.')
    rule = parse_rule_text(typo, "t.toml")[0]
    result = rulebook.test_rule(rule)
    assert any("nvml.gpu_cnt does not exist" in f for f in result.failed)
    lonely = parse_rule_text(RULE.split("[[example]]")[0], "t.toml")[0]
    assert any("no example where the rule fires" in f for f in rulebook.test_rule(lonely).failed)


def test_a_wrong_example_fails_its_test() -> None:
    rule = parse_rule_text(RULE.replace("fires = false", "fires = true"), "t.toml")[0]
    assert any("expected to fire, stayed quiet" in f for f in rulebook.test_rule(rule).failed)


def test_user_rule_overrides_shipped_and_disabled(tmp_path: Path) -> None:
    shipped = rulebook.shipped_rules_dir()
    (tmp_path / "mine.toml").write_text(RULE.replace("GPU-TEST", "ENV-VISIBLE-DEVICES-HIDES-GPU"))
    rules = load_rules([shipped, tmp_path])
    mine = [r for r in rules if r.id == "ENV-VISIBLE-DEVICES-HIDES-GPU"]
    assert len(mine) == 1 and mine[0].source.endswith("mine.toml")
    assert not [r for r in load_rules([shipped], ["ENV-VISIBLE-DEVICES-HIDES-GPU"]) if r.id.startswith("ENV-VIS")]


def test_unreadable_and_oversized_rule_files(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * 100_000)
    with pytest.raises(RuleFileError, match="larger than"):
        load_rule_file(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rule_file(binary)
    with pytest.raises(RuleFileError, match="no such"):
        load_rules([tmp_path / "nope"])
