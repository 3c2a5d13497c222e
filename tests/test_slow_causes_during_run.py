"""Scoreboard: each cause of ../shared/SLOW_CAUSES.md that shows during a run, caught by the run-time rules.

One case per cause: the rule(s) that catch it, the step or run as the guards record it when the cause is there,
and its sane twin, which must stay quiet. The measurements themselves are tested where they are made
(test_guards.py, test_guard_everywhere.py, test_guard_clock.py, tests/gpu/); this file says which rule turns
each one into a verdict, at which severity. Cause 25 (an update made the same run slower) is judged by
``wanrun compare`` between two runs, not by a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from wandoc import rulebook
from wandoc.metrics import Report, RunInfo, StepHistory, StepMetrics, Summary
from wanrun.compare import compare
from wanrun.runtime import RuntimeRules

GB = 10**9
WIN_4090 = {"platform_os": "Windows", "power_limit_w": 450, "expects_gpu": True, "device": "cuda"}
H100 = {"expects_gpu": True, "device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_capability": 9.0,
        "vram_total_bytes": 85 * GB, "model_weight_bytes": int(2.84 * GB)}  # fmt: skip


@dataclass
class Case:
    cause: int
    rules: tuple[str, ...]  # all of them fire on the positive; none on the twin
    scope: str  # "step" or "run"
    bad: dict[str, Any]
    sane: dict[str, Any]
    severity: str = "warning"  # the least severe of the rules' severities
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(1, ("RUN-VRAM-SPILL",), "step",
         {"run": WIN_4090, "step": {"index": 6, "seconds": 48.0, "vram_used_bytes": int(25.3 * GB),
                                    "vram_total_bytes": int(25.76 * GB), "gpu_util": 99, "power_w": 120},
          "history": {"count": 6, "median_seconds": 21.0}},
         {"run": WIN_4090, "step": {"index": 6, "seconds": 22.0, "vram_used_bytes": 18 * GB,
                                    "vram_total_bytes": int(25.76 * GB), "gpu_util": 99, "power_w": 420},
          "history": {"count": 6, "median_seconds": 21.0}}, "error"),
    Case(2, ("RUN-VRAM-SPILL",), "step",
         {"run": {**WIN_4090, "power_limit_w": 115}, "step": {"index": 0, "seconds": 400.0, "gpu_util": 97,
                  "power_w": 30, "vram_used_bytes": int(8.4 * GB), "vram_total_bytes": int(8.59 * GB)}},
         {"run": {**WIN_4090, "power_limit_w": 115}, "step": {"index": 0, "seconds": 9.0, "gpu_util": 97,
                  "power_w": 100, "vram_used_bytes": int(6 * GB), "vram_total_bytes": int(8.59 * GB)}}, "error",
         note="a laptop's dedicated 8 GB: the same spill"),
    Case(4, ("RUN-RAM-LOW", "RUN-SWAP-GROWING"), "step",
         {"run": {"swap_used_start_bytes": GB // 2},
          "step": {"index": 2, "ram_available_bytes": int(1.2 * GB), "ram_total_bytes": 34 * GB,
                   "swap_used_bytes": int(6.5 * GB)}},
         {"run": {"swap_used_start_bytes": GB // 2},
          "step": {"index": 2, "ram_available_bytes": 20 * GB, "ram_total_bytes": 64 * GB,
                   "swap_used_bytes": GB // 2}}),
    Case(6, ("RUN-VRAM-FRAGMENTED",), "step",
         {"run": {"vram_total_bytes": int(34.19 * GB)},
          "step": {"index": 9, "vram_reserved_bytes": 33 * GB, "vram_peak_bytes": int(26.5 * GB)}},
         {"run": {"vram_total_bytes": int(34.19 * GB), "alloc_conf": "expandable_segments:True"},
          "step": {"index": 9, "vram_reserved_bytes": 33 * GB, "vram_peak_bytes": int(26.5 * GB)}}),
    Case(7, ("RUN-OFFLOAD-TRAFFIC",), "step",
         {"run": H100, "step": {"index": 0, "deep": True, "offload_hooks": True, "weight_h2d_bytes": int(2.84 * GB),
                                "h2d_bytes": int(2.84 * GB), "h2d_copies": 825,
                                "top_h2d": [{"module": "blocks.0.ffn.0", "bytes": 55_000_000, "count": 2}]}},
         {"run": H100, "step": {"index": 0, "deep": True, "weight_h2d_bytes": 0, "h2d_bytes": 1920}},
         note="diffusers' sequential offload on a card the model fits"),
    Case(8, ("RUN-OFFLOAD-TRAFFIC",), "step",
         {"run": {**H100, "vram_total_bytes": 12 * GB, "args": {"profile": 4}},
          "step": {"index": 1, "deep": True, "weight_h2d_bytes": int(5.6 * GB), "h2d_copies": 900,
                   "vram_used_bytes": 5 * GB}},
         {"run": {**H100, "vram_total_bytes": 12 * GB},
          "step": {"index": 1, "deep": True, "weight_h2d_bytes": 0, "vram_used_bytes": 9 * GB}},
         note="a low-VRAM profile streaming every weight each step"),
    Case(9, ("RUN-PAGEABLE-COPIES",), "step",
         {"run": H100, "step": {"index": 1, "deep": True, "pageable_copy_bytes": int(2.8 * GB),
                                "blocking_copies": 400, "copies": 400}},
         {"run": H100, "step": {"index": 1, "deep": True, "pageable_copy_bytes": 0, "blocking_copies": 0,
                                "copies": 400}}),
    Case(10, ("RUN-OFFLOAD-TRAFFIC", "RUN-PAGEABLE-COPIES"), "step",
         {"run": {**H100, "args": {"offload": True}},
          "step": {"index": 1, "deep": True, "weight_h2d_bytes": int(2.1 * GB), "pageable_copy_bytes": int(2.1 * GB),
                   "blocking_copies": 300, "copies": 300}},
         {"run": H100, "step": {"index": 1, "deep": True, "weight_h2d_bytes": 0, "pageable_copy_bytes": 0,
                                "copies": 0}},
         note="block swap from pageable memory"),
    Case(11, ("RUN-EXPERT-SWITCH",), "step",
         {"run": {**H100, "experts": 2},
          "step": {"index": 12, "seconds": 61.0, "weights_in_bytes": int(28.6 * GB),
                   "weights_out_bytes": int(28.6 * GB), "experts_run": ["low_noise_model"]},
          "history": {"count": 12, "median_seconds": 9.0}},
         {"run": {**H100, "experts": 2},
          "step": {"index": 12, "seconds": 9.1, "experts_run": ["low_noise_model"]},
          "history": {"count": 12, "median_seconds": 9.0}}),
    Case(12, ("RUN-ATTENTION-MATH",), "step",
         {"run": H100, "step": {"index": 0, "deep": True, "attention": {"math": 60},
                                "attention_math_bytes": 64 * GB}},
         {"run": H100, "step": {"index": 0, "deep": True, "attention": {"flash": 60}, "attention_math_bytes": 0}}),
    Case(14, ("RUN-REPEATED-CASTS",), "step",
         {"run": {**H100, "model_weight_bytes": int(5.68 * GB), "model_param_dtype": "float32",
                  "autocast_dtype": "bfloat16"},
          "step": {"index": 1, "deep": True, "repeated_cast_bytes": int(5.66 * GB), "repeated_casts": 1090,
                   "top_casts": [{"module": "blocks.0.ffn.0", "bytes": 55_000_000, "count": 2}]}},
         {"run": {**H100, "model_param_dtype": "bfloat16", "autocast_dtype": "bfloat16"},
          "step": {"index": 1, "deep": True, "repeated_cast_bytes": 85_000_000}}),
    Case(17, ("RUN-DECODE-CUDNN-SLOW",), "run",
         {"run": {"torch_version": "2.9.0+cu128", "cudnn_version": 91002},
          "summary": {"phases": {"denoise": 300.0, "decode": 66.0}}},
         {"run": {"torch_version": "2.8.0+cu128", "cudnn_version": 91002},
          "summary": {"phases": {"denoise": 300.0, "decode": 33.0}}}),
    Case(18, ("RUN-RECOMPILES", "RUN-STEP0-COLD"), "step",
         {"step": {"index": 4, "compiles": 30, "compile_seconds": 41.0},
          "history": {"count": 4, "first_seconds": 240.0, "first_compile_seconds": 210.0, "median_seconds": 9.0}},
         {"step": {"index": 4, "compiles": 0, "compile_seconds": 0.0},
          "history": {"count": 4, "first_seconds": 9.5, "median_seconds": 9.0}}, "info",
         note="recompiles are a warning; the cold start alone is a note"),
    Case(21, ("RUN-ENCODE-SLOW",), "run",
         {"summary": {"seconds_total": 700.0, "phases": {"encode": 95.0, "denoise": 560.0}}},
         {"summary": {"seconds_total": 600.0, "phases": {"encode": 0.6, "denoise": 560.0}}}),
    Case(22, ("RUN-DECODE-DOMINATES",), "run",
         {"summary": {"steps": 50, "phases": {"denoise": 26.0, "decode": 77.0}}},
         {"summary": {"steps": 50, "phases": {"denoise": 560.0, "decode": 38.0}}}, "info",
         note="a note: the loop is not where the time goes, nothing in it to fix"),
    Case(23, ("RUN-LOAD-SLOW-DISK",), "run",
         {"summary": {"phases": {"load": 240.0, "denoise": 500.0}, "phase_read_bytes": {"load": 28 * GB}}},
         {"summary": {"phases": {"load": 12.0, "denoise": 500.0}, "phase_read_bytes": {"load": 28 * GB}}}),
    Case(24, ("RUN-CPU-COMPUTE", "RUN-CPU-RESIDENT"), "step",
         {"run": {"expects_gpu": True, "device": "cuda"},
          "step": {"index": 0, "deep": True, "cpu_ops": 400, "cpu_flops": 3.2e12, "cpu_resident": ["dit"],
                   "cpu_resident_bytes": int(2.84 * GB), "weight_h2d_bytes": 0,
                   "top_cpu": [{"module": "blocks.0.ffn.0", "bytes": 5_000_000, "count": 2}]}},
         {"run": {"expects_gpu": True, "device": "cuda"},
          "step": {"index": 0, "deep": True, "cpu_ops": 0, "cpu_flops": 0.0, "weight_h2d_bytes": 0}}, "warning",
         note="a CPU-only torch, or the model never moved: the CPU computes the matmuls"),
]  # fmt: skip

RANK = {"info": 0, "warning": 1, "error": 2}


def fired(case: Case, data: dict[str, Any]) -> dict[str, str]:
    rules = RuntimeRules(rulebook.load(), shell="bash")
    run = RunInfo.model_validate(data.get("run", {}))
    if case.scope == "step":
        step = StepMetrics.model_validate(data.get("step", {}))
        found = rules.on_step(step, run, StepHistory.model_validate(data.get("history", {})))
    else:
        summary = {"denoisers": 1, **data.get("summary", {})}  # the guard watched the run
        found = rules.at_end(run, Summary.model_validate(summary))
    return {f.rule: f.severity for f in found}


@pytest.mark.parametrize("case", CASES, ids=[f"cause-{c.cause}" for c in CASES])
def test_each_cause_fires_its_rules_and_its_sane_twin_is_quiet(case: Case) -> None:
    bad, sane = fired(case, case.bad), fired(case, case.sane)
    assert set(case.rules) <= set(bad), bad
    assert min(RANK[bad[r]] for r in case.rules) >= RANK[case.severity]
    assert not set(case.rules) & set(sane), sane
    assert not [r for r, sev in sane.items() if sev != "info"], sane  # nothing else cries wolf on the twin


def report(seconds: float) -> Report:
    return Report(steps=[StepMetrics(index=i, seconds=seconds) for i in range(10)])


def test_cause_25_an_update_regression_is_what_compare_reports() -> None:
    assert compare(report(1.0), report(2.4)).regressed
    assert not compare(report(1.0), report(1.02)).regressed


def test_docs_during_the_run_column_matches_the_scoreboard() -> None:
    """docs/slow-causes.md's "during the run" column names each case's rules, only rules that exist, and says
    "no run-time signal" for the causes without one."""
    import re

    from test_slow_causes_before_launch import ROOT, doc_rows

    rows, ids = doc_rows(), {r.id for r in rulebook.load()}
    for number, (_, during) in rows.items():
        named = re.findall(r"`(RUN-[A-Z0-9-]+)`", during)
        assert set(named) <= ids, number
        case = next((c for c in CASES if c.cause == number), None)
        if case is not None:
            assert named[: len(case.rules)] == list(case.rules), number
        elif number == 25:
            assert "wanrun compare" in during
        else:
            assert during.startswith("no run-time signal"), number
    text = (ROOT / "docs" / "slow-causes.md").read_text(encoding="utf-8")
    serious = {c.cause for c in CASES if any(RANK[s] >= 1 for s in fired(c, c.bad).values())} | {25}
    assert f"**{len(serious)} of the 18**" in text


def test_the_scoreboard_covers_the_causes_with_a_runtime_signal() -> None:
    """18 causes show during a run (RUN in SLOW_CAUSES.md); 25 is compare's. At least 16 at warning or error."""
    causes = {c.cause for c in CASES} | {25}
    assert causes == {1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 14, 17, 18, 21, 22, 23, 24, 25}
    serious = {c.cause for c in CASES if any(RANK[s] >= 1 for s in fired(c, c.bad).values())} | {25}
    assert len(serious) >= 16, sorted(causes - serious)
