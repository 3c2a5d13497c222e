"""Rules are checked against the facts and metrics models when they load: a path, a loop variable's field or an
enumeration value that does not exist would make the rule silently never fire, so the rule is refused instead,
with one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from wandoc import rulebook
from wandoc.cli import main
from wandoc.engine import RuleFileError
from wandoc.engine.rules import parse_rule_text
from wandoc.engine.schema import ListOf, Model, Schema, type_of
from wandoc.facts import SITE_KINDS, CheckpointFile, CheckpointModel, CodeSite, Facts, GpuFacts
from wandoc.metrics import Phase, Summary

ROOT = Path(__file__).resolve().parents[1]
FACTS = Schema.of_model(Facts)

RULE = """
id = "GPU-TEST"
title = "{{first(nvml.gpus).name}} test"
severity = "warning"
when = "nvml.available and gpu.memory_free_bytes < gib(4) and true"
each = "nvml.gpus"
as = "gpu"
message = "{gpu.name}: {join([p.name for p in gpu.processes])}"
[evidence]
big = "[g.name for g in nvml.gpus if g.memory_total_bytes > gib(20)]"
[fix]
text = "Close {gpu.name}'s other programs."
"""


def _replace(old: str, new: str) -> str:
    assert old in RULE
    return RULE.replace(old, new)


def test_the_sane_rule_loads_against_the_facts() -> None:
    rule = parse_rule_text(RULE, "ok.toml", schemas=lambda scope: FACTS)[0]
    assert rule.id == "GPU-TEST"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (_replace("nvml.available", "nvml.availabl"), 5, "when: nvml.availabl does not exist (NvmlFacts has no "
         "'availabl'; did you mean 'available'?)"),
        (_replace("g.memory_total_bytes", "g.memory_totl_bytes"), 10, "evidence.big: g.memory_totl_bytes does not "
         "exist (GpuFacts has no 'memory_totl_bytes'; did you mean 'memory_total_bytes'?)"),
        (_replace("{gpu.name}:", "{gpu.nme}:"), 8, "message: gpu.nme does not exist (GpuFacts has no 'nme'"),
        (_replace("p.name for p", "p.pid_name for p"), 8, "message: p.pid_name does not exist (GpuProcess has no"),
        (_replace("Close {gpu.name}", "Close {gpu.nam}"), 12, "fix.text: gpu.nam does not exist"),
        (_replace("{{first(nvml.gpus).name}}", "{first(nvml.gpus).nme}"), 3, "title: first(nvml.gpus).nme does"),
        (_replace('each = "nvml.gpus"', 'each = "nvml.gpu"'), 6, "each: nvml.gpu does not exist"),
        (_replace("and true", "and len(nvml.gpus.name)"), 5, "nvml.gpus is a list; use a comprehension or first()"),
        (_replace("and true", "and count(s.kind == 'mask_per_cal' for s in repo.sites)"), 5,
         "'mask_per_cal' is not one of 'sdpa_flash_disabled', "),
        (_replace("and true", "and [s for s in repo.sites if s.kind in ['sdpa_call', 'sdpa_cal']]"), 5,
         "'sdpa_cal' is not one of"),
        (_replace("and true", "and unknown_root"), 5, "unknown name 'unknown_root'"),
    ],
)  # fmt: skip
def test_a_rule_reading_what_the_facts_lack_is_refused_at_load(text: str, line: int, needle: str) -> None:
    with pytest.raises(RuleFileError) as exc:
        parse_rule_text(text, "bad.toml", schemas=lambda scope: FACTS)
    message = str(exc.value)
    assert message.startswith(f"bad.toml:{line}: GPU-TEST: "), message
    assert needle in message and "\n" not in message


@pytest.mark.parametrize(
    "source",
    [
        "'mask_per_call' in git.sites_added",
        "any(s.kind == 'mask_per_call' for s in repo.sites)",
        "[v.key for v in entries(repo.env_vars) if v.value.set_in_env]",
        "[k for k, v in repo.env_vars if v.read_on_path]",
        "[e.value.value for e in repo.env_vars]",  # a comprehension over a dict gives {key, value} entries
        "get(repo.env_vars, 'X').set_in_env",
        "repo.effective.offload_model",  # a free-form dict: any key
        "first(checkpoints.models).role == 'high_noise_model'",
        "nvml.gpus[0].processes[1].used_bytes",
        "parallel.world_size_from == 'torchrun'",
        "true and none is null",
        "nvml.gpu_count >= 2 and nvml.available == 1 and parallel.world_size != none",
        "repo.effective.offload_model == 'True'",  # a free-form value may be anything
        "[s for s in repo.sites if s.reach in ['forward', 'once']]",
    ],
)
def test_typed_reads_that_exist(source: str) -> None:
    assert FACTS.problems(source) == []


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("'mask_per_cal' in git.sites_added", "'mask_per_cal' is not one of"),
        ("[e.value.valu for e in repo.env_vars]", "e.value.valu does not exist (EnvVarUse has no 'valu'"),
        ("[e.ky for e in entries(repo.env_vars)]", "e.ky does not exist (an entry has key and value)"),
        ("[v.read_on_pat for k, v in repo.env_vars]", "v.read_on_pat does not exist"),
        ("get(repo.env_vars, 'X').set_in_en", "set_in_en does not exist"),
        ("first(checkpoints.models).role == 'ditt'", "'ditt' is not one of '', 'dit',"),
        ("nvml.gpus[0].processes[1].used", "nvml.gpus[0].processes[1].used does not exist"),
        ("parallel.world_size_from != 'torchrn'", "'torchrn' is not one of"),
        ("[s for s in repo.sites if s.reach == 'every_step']", "'every_step' is not one of 'forward', 'once'"),
        ("repo.path.name", "repo.path is a value (str), it has no '.name'"),
        ("nvml.gpu_count == '2'", "int compared with the string '2': never equal, never ordered"),
        ("first(nvml.gpus).name > 3", "a string compared with the number 3: never equal"),
    ],
)
def test_typed_reads_that_do_not_exist(source: str, needle: str) -> None:
    problems = FACTS.problems(source)
    assert len(problems) == 1 and needle in problems[0], problems


def test_runtime_rules_are_typed_from_the_metrics_models() -> None:
    step, run = rulebook.schema_for("step"), rulebook.schema_for("run")
    assert step.problems("[m.module for m in step.top_h2d if m.bytes > 0]") == []
    assert "m.byts does not exist (ModuleVolume" in step.problems("[m.byts for m in step.top_h2d]")[0]
    assert run.problems("summary.phases.decode > summary.phases.denoise") == []
    assert "'decod' is not one of" in run.problems("summary.phases.decod > 1")[0]
    assert "unknown name 'step'" in run.problems("step.seconds > 1")[0]


def test_check_refuses_a_user_rule_with_a_typo_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = ROOT / "tests" / "fixtures" / "machines" / "h100-server.json"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mine.toml").write_text(_replace("nvml.available", "nvml.availabl"), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["check", "--facts", str(facts), "--rules", str(bad)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert err.startswith(f"wandoc: {bad / 'mine.toml'}:5: GPU-TEST: when: nvml.availabl does not exist"), err
    (bad / "mine.toml").write_text(RULE, encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["check", "--facts", str(facts), "--rules", str(bad), "--fail-on", "never", "--format", "json"])
    assert exc.value.code == 0
    assert str(bad / "mine.toml") in json.loads(capsys.readouterr().out)["rules"]["files"]


def test_rules_test_lists_every_rule_with_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.toml").write_text(_replace("nvml.available", "nvml.availabl"), encoding="utf-8")
    (tmp_path / "b.toml").write_text(_replace("GPU-TEST", "GPU-OTHER").replace("{gpu.name}:", "{gpu.nme}:"))
    with pytest.raises(SystemExit) as exc:
        main(["rules", "test", str(tmp_path)])
    out = capsys.readouterr().out
    assert exc.value.code == 1
    assert "GPU-TEST: when: nvml.availabl does not exist" in out and "GPU-OTHER: message: gpu.nme" in out


def test_every_shipped_rule_loads_with_every_scope_checked() -> None:
    rules = rulebook.load()
    assert len(rules) >= 70 and {r.scope for r in rules} == {"facts", "step", "run"}


def test_enumerations_are_literal_types_that_hold_what_the_probes_write() -> None:
    from wandoc.probes.checkpoints import _NAME_ROLES, DIT_ROLES, FOLDER_ROLES, FORMATS

    kind = type_of(CodeSite.model_fields["kind"].annotation)
    assert set(kind.values) == set(SITE_KINDS)  # type: ignore[union-attr]
    assert set(FORMATS.values()) <= set(get_args(CheckpointFile.model_fields["format"].annotation))
    roles = {*FOLDER_ROLES.values(), *DIT_ROLES, *(role for _, role in _NAME_ROLES), "other"}
    assert roles <= set(get_args(CheckpointModel.model_fields["role"].annotation))
    assert set(get_args(Summary.model_fields["phases"].annotation)[0].__args__) == set(
        get_args(Phase.model_fields["name"].annotation)
    )
    assert type_of(list[GpuFacts]) == ListOf(Model(GpuFacts))
