"""Recorded machines: the exact set of error and warning findings the shipped rules give on each.

The sets are exact on purpose. A new rule that fires on one of these machines, or a changed rule that stops
firing, must be a conscious change: update the expectation here in the same commit and say why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wandoc import rulebook
from wandoc.engine import evaluate
from wandoc.facts import FACTS_SCHEMA, Facts

MACHINES = Path(__file__).parent / "fixtures" / "machines"

# rule ids at error or warning level, per machine
EXPECTED: dict[str, set[str]] = {
    "win-4090-desktop.json": {
        "GPU-MODEL-EXCEEDS-FREE-VRAM",  # fp32 A14B expert (57 GB) on a 24 GB card
        "ATTN-FLASH-ATTN-MISSING",  # official attention asserts flash_attn; none installed
        "GPU-WINDOWS-SYSMEM-SPILL",
        "GPU-VRAM-HELD-BY-OTHERS",  # 3 GB held by a browser
        "ARGS-FP32-DIT-WITHOUT-CONVERT",
        "SYS-OFFLOAD-WILL-SWAP",  # idle fp32 expert + T5 in 64 GB RAM
    },
    "cpu-wheel-on-gpu-box.json": {"TORCH-CPU-WHEEL-ON-GPU-MACHINE"},
    "two-gpus-one-busy.json": {
        "GPU-MODEL-EXCEEDS-FREE-VRAM",  # 3.4 GB free on GPU 0
        "GPU-VRAM-HELD-BY-OTHERS",
        "GPU-RUN-ON-BUSY-GPU",
    },
    "laptop-8gb.json": {
        "GPU-MODEL-EXCEEDS-FREE-VRAM",
        "GPU-WINDOWS-SYSMEM-SPILL",
        "GPU-LAPTOP-SMALL-VRAM",
        "SYS-OFFLOAD-WILL-SWAP",  # T5 on the CPU + the DiT after the loop in 16 GB RAM
    },
    "h100-server.json": set(),  # a healthy machine: nothing at warning or above
    "founding-story.json": {"ENV-DEAD-SETTING"},  # WAN_FORCE_FP16 / WAN_COMPILE read only off the run's path
}

# info findings a machine must show (a subset: info rules may be added freely)
EXPECTED_INFO: dict[str, set[str]] = {
    "founding-story.json": {"GIT-NOTHING-ON-PATH-DIFFERS"},
}


@pytest.fixture(scope="module")
def rules():
    return rulebook.load()


def _load(name: str) -> dict:
    return json.loads((MACHINES / name).read_text(encoding="utf-8"))


def _findings(rules, name: str):
    data = _load(name)
    return evaluate(rules, rulebook.prepare_facts(data), shell=data["platform"]["shell"])


def test_every_fixture_has_an_expectation() -> None:
    assert {p.name for p in MACHINES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_a_full_facts_tree(name: str) -> None:
    data = _load(name)
    assert data["schema"] == FACTS_SCHEMA
    # a full tree, as `wandoc facts` prints it: validating and dumping again changes nothing
    assert Facts.model_validate(data).as_tree() == data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_errors_and_warnings_are_exactly_the_expected_ones(rules, name: str) -> None:
    findings = _findings(rules, name)
    broken = [f for f in findings if f.title.startswith(f"rule {f.rule} could not")]
    assert not broken, [f.message for f in broken]
    got = {f.rule for f in findings if f.severity in ("error", "warning")}
    assert got == EXPECTED[name], f"unexpected: {sorted(got - EXPECTED[name])}, missing: {sorted(EXPECTED[name] - got)}"


@pytest.mark.parametrize("name", sorted(EXPECTED_INFO))
def test_expected_info_findings(rules, name: str) -> None:
    got = {f.rule for f in _findings(rules, name) if f.severity == "info"}
    assert EXPECTED_INFO[name] <= got


def test_h100_server_is_clean(rules) -> None:
    assert not [f for f in _findings(rules, "h100-server.json") if f.severity in ("error", "warning")]


def test_founding_story_names_the_dead_settings(rules) -> None:
    dead = [f for f in _findings(rules, "founding-story.json") if f.rule == "ENV-DEAD-SETTING"]
    assert sorted(f.evidence["var"] for f in dead) == ["WAN_COMPILE", "WAN_FORCE_FP16"]
    for f in dead:
        assert "attention_main_backup.py" in f.message
        assert f.fix_command and f.fix_command.startswith("set ")  # cmd syntax: the machine's shell


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_messages_render_cleanly(rules, name: str) -> None:
    """No placeholder failed to render ("<...>" is what a broken template leaves behind)."""
    for f in _findings(rules, name):
        for text in (f.title, f.message, f.fix):
            assert "<" not in text, f"{f.rule}: {text}"


def test_nothing_known_means_nothing_said(rules) -> None:
    """With every fact at its default (no probe could read anything), every rule stays quiet."""
    for shell in ("bash", "cmd", "powershell"):
        assert evaluate(rules, rulebook.prepare_facts({}), shell=shell) == []
