"""The run-time rules of the slow-causes catalog on a real GPU: each cause made for real under the guard, and its
sane twin quiet. tests/test_slow_causes_during_run.py judges recorded steps on the CPU; here the guard measures
them on CUDA: pageable copies (cause 9), math attention (12), fragmentation (6), the expert switch (11), and the
doctor's memory estimate against a built-in run's measured peak.

Run on the GPU machine (``bench/gpu_batch.sh tests``); each test skips on a machine without CUDA. Figures the
lead records (the estimate and the peak, the switch's cost) go to ``$OUT/slow_causes_gpu.json`` when OUT is set.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wandoc.estimate import estimate
from wandoc.facts import CheckpointFacts, RepoFacts
from wandoc.metrics import Report, RunInfo
from wanrun.guard import Guard
from wanrun.pipeline import PipelineConfig, run_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MIB, GIB = 2**20, 2**30


def by_rule(report: Report) -> dict[str, Any]:
    return {f.rule: f for f in report.findings}


def record(key: str, value: dict[str, Any]) -> None:
    """Keep a measured figure for the run's log: $OUT/slow_causes_gpu.json, one key per test."""
    out = os.environ.get("OUT")
    if not out:
        return
    path = Path(out) / "slow_causes_gpu.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(autouse=True)
def fresh_allocator() -> Iterator[None]:
    """Each test starts and ends with the allocator's cache empty: reserved memory is what two of them measure."""
    gc.collect()
    torch.cuda.empty_cache()
    yield
    gc.collect()
    torch.cuda.empty_cache()


class Mixer(nn.Module):
    """A denoiser-shaped module for the guard to watch: two linear layers in bf16."""

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def mixer() -> Mixer:
    return Mixer().to("cuda", torch.bfloat16).eval().requires_grad_(False)


# -- cause 9: host-device copies from pageable memory ------------------------------------------------------------


@pytest.mark.parametrize("pinned", [False, True], ids=["pageable", "pinned"])
def test_pageable_copies_in_the_loop_are_flagged_and_pinned_ones_are_not(pinned: bool) -> None:
    """512 MiB copied to the GPU in every step, as block swap does: from pageable memory, blocking, the rule
    fires with the bytes copied; the same copy from pinned memory with ``non_blocking=True`` is quiet."""
    model = mixer()
    host = torch.ones(512 * MIB // 2, dtype=torch.bfloat16)  # 512 MiB
    if pinned:
        host = host.pin_memory()
    x = torch.randn(1, 64, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), Guard("cuda", model=model) as g:
        for i in range(3):
            with g.step(i):
                on_device = host.to("cuda", non_blocking=pinned)
                model(x + on_device[: x.numel()].view_as(x))
    report = g.report
    first = report.steps[0]
    assert first.deep and first.h2d_bytes is not None and first.h2d_bytes >= host.nbytes, first
    found = by_rule(report)
    if pinned:
        assert first.pageable_copy_bytes == 0 and first.blocking_copies == 0, first
        assert "RUN-PAGEABLE-COPIES" not in found, found
        return
    assert first.pageable_copy_bytes == pytest.approx(host.nbytes, rel=0.01), first
    finding = found["RUN-PAGEABLE-COPIES"]
    assert finding.step == 0 and finding.severity == "warning"
    assert finding.evidence["pageable_copy_bytes"] == pytest.approx(host.nbytes, rel=0.01), finding.evidence
    assert finding.evidence["blocking_copies"] >= 1 and finding.evidence["copies"] >= 1, finding.evidence


# -- cause 12: attention on the math kernel ----------------------------------------------------------------------


class Attention(nn.Module):
    """Self-attention at a Wan-like length (4,096 tokens, 8 heads of 64): 512 MiB of fp32 scores on the math path."""

    def __init__(self, math: bool) -> None:
        super().__init__()
        self.math = math
        self.proj = nn.Linear(512, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).view(1, -1, 8, 64).transpose(1, 2)
        if self.math:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                out = F.scaled_dot_product_attention(q, q, q)
        else:
            out = F.scaled_dot_product_attention(q, q, q)
        return out.transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("math", [True, False], ids=["math", "fused"])
def test_math_attention_is_flagged_from_its_kernels_and_fused_attention_is_not(math: bool) -> None:
    """The kernel names the guard sees: SDPA forced to the math backend materialises the (L x L) scores (a
    softmax over them), flagged with the call count and the score bytes; the default bf16 call runs a fused
    kernel (flash, memory-efficient or cuDNN) and is quiet."""
    model = Attention(math).to("cuda", torch.bfloat16).eval().requires_grad_(False)
    x = torch.randn(1, 4096, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), Guard("cuda", model=model) as g:
        for i in range(3):
            with g.step(i):
                model(x)
                model(x)
    report = g.report
    first = report.steps[0]
    assert first.deep and first.forwards == 2
    attention = first.attention or {}
    found = by_rule(report)
    if not math:
        assert attention and set(attention) <= {"flash", "efficient", "cudnn"}, attention
        assert sum(attention.values()) == 2 and not first.attention_math_bytes, first
        assert "RUN-ATTENTION-MATH" not in found, found
        return
    # one call's (8, 4096, 4096) scores: fp32 where the math backend upcasts bf16 (torch's default), else bf16
    calls = {2 * 8 * 4096 * 4096 * itemsize for itemsize in (4, 2)}
    assert attention == {"math": 2}, attention
    assert first.attention_math_bytes in calls, (first.attention_math_bytes, calls)
    finding = found["RUN-ATTENTION-MATH"]
    assert finding.step == 0 and finding.severity == "warning"
    assert finding.evidence["attention"] == {"math": 2}, finding.evidence
    assert finding.evidence["math_bytes"] == first.attention_math_bytes, finding.evidence
    assert finding.evidence["gpu_capability"] >= 8.0, finding.evidence


# -- cause 6: fragmentation at the edge of VRAM ------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "clean"])
def test_reserved_memory_the_step_cannot_use_is_flagged_and_a_clean_run_is_not(fragmented: bool) -> None:
    """The rule reads reserved minus the step's allocated peak, and fires only at the edge of VRAM (reserved at
    least 90% of the card). Step 0 fills the allocator's cache with 1 GiB segments to 91% of the card and frees
    them; step 1 needs one 2 GiB block, which no 1 GiB segment can hold, so the allocator maps a new one: the
    card is nearly all reserved while the step used 2 GiB. The twin skips step 0's pattern and stays quiet."""
    if "expandable_segments:True" in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""):
        pytest.skip("expandable segments are on: the allocator grows one mapping and does not fragment")
    total = torch.cuda.get_device_properties(0).total_memory
    chunks = int(0.91 * total) // GIB + 1
    free, _ = torch.cuda.mem_get_info()
    if free < (chunks + 3) * GIB:
        pytest.skip(f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB: another process holds the card")
    model = mixer()
    x = torch.randn(1, 64, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), Guard("cuda", model=model) as g:
        with g.step(0):
            model(x)
            if fragmented:
                held = [torch.empty(GIB, dtype=torch.uint8, device="cuda") for _ in range(chunks)]
                del held  # back to the allocator's cache, still reserved
        for i in (1, 2):
            with g.step(i):
                big = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
                big.fill_(1)
                model(x)
                del big
    report = g.report
    step = report.steps[1]
    assert step.vram_peak_bytes is not None and step.vram_reserved_bytes is not None
    assert step.vram_peak_bytes >= 2 * GIB, step
    found = by_rule(report)
    figures = {"total": total, "reserved": step.vram_reserved_bytes, "peak": step.vram_peak_bytes}
    if not fragmented:
        assert step.vram_reserved_bytes < 0.5 * total, figures
        assert "RUN-VRAM-FRAGMENTED" not in found, found
        return
    assert step.vram_reserved_bytes >= 0.9 * total, figures
    finding = found["RUN-VRAM-FRAGMENTED"]
    assert finding.step == 1 and finding.severity == "warning", finding
    ev = finding.evidence
    assert ev["vram_total_bytes"] == total and ev["reserved_bytes"] == step.vram_reserved_bytes, ev
    assert ev["reserved_bytes"] - ev["peak_bytes"] >= chunks * GIB - GIB, ev  # the 1 GiB segments, unusable
    record("fragmentation", figures)


# -- cause 11: the Wan2.2 A14B expert switch ---------------------------------------------------------------------

EXPERT_BLOCKS, EXPERT_DIM = 32, 8192  # 32 x 8192 x 8192 fp32: 8 GiB an expert


class Expert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(EXPERT_DIM, EXPERT_DIM, bias=False) for _ in range(EXPERT_BLOCKS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def expert(device: str) -> Expert:
    """An 8 GiB expert on ``device``, made without initialising it (zeros: only the bytes matter here)."""
    with torch.device("meta"):
        model = Expert()
    model.to_empty(device=device).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


class TwoExperts:
    """Wan2.2's loop shape: the high-noise expert for the first steps, the low-noise one after the boundary; with
    ``init_on_cpu`` (or offload) the idle one waits on the host and the switch moves the two."""

    def __init__(self, parked: bool) -> None:
        self.parked = parked
        self.high_noise_model = expert("cuda")
        self.low_noise_model = expert("cpu" if parked else "cuda")

    def generate(self, steps: int, boundary: int, step_done: Any) -> None:
        x = torch.randn(1, 16, EXPERT_DIM, device="cuda")
        for i in range(steps):
            if i == boundary and self.parked:
                self.high_noise_model.to("cpu")
                self.low_noise_model.to("cuda")
            model = self.high_noise_model if i < boundary else self.low_noise_model
            x = (model(x) - model(x)) * 0.5 + x
            step_done()


@pytest.mark.parametrize("parked", [True, False], ids=["parked", "resident"])
def test_the_expert_switch_is_seen_and_its_cost_reported(parked: bool) -> None:
    """With the low-noise expert parked on the host, the boundary step moves 8 GiB in and 8 GiB out over PCIe:
    the guard records both at that step and the rule reports what the switch cost over the median step. With both
    experts resident the same switch moves nothing and the rule is quiet."""
    pipe = TwoExperts(parked)
    expert_bytes = sum(p.nbytes for p in pipe.low_noise_model.parameters())
    boundary = 4
    with torch.no_grad(), Guard("cuda") as g:
        g.attach_model(pipe.high_noise_model, "high_noise_model", denoiser=True)
        g.attach_model(pipe.low_noise_model, "low_noise_model", denoiser=True)
        pipe.generate(steps=8, boundary=boundary, step_done=g.step_callback())
    report = g.report
    assert report.run.experts == 2 and [s.forwards for s in report.steps] == [2] * 8, report.steps
    switch = report.steps[boundary]
    assert switch.experts_run == ["low_noise_model"] and report.steps[boundary - 1].experts_run == ["high_noise_model"]
    found = by_rule(report)
    if not parked:
        assert sum(s.weights_in_bytes for s in report.steps) == 0, [s.weights_in_bytes for s in report.steps]
        assert "RUN-EXPERT-SWITCH" not in found, found
        return
    assert switch.weights_in_bytes == expert_bytes and switch.weights_out_bytes == expert_bytes, switch
    assert sum(s.weights_in_bytes for s in report.steps) == expert_bytes
    plain = sorted(s.seconds for s in report.steps[:boundary])
    figures = {"expert_bytes": expert_bytes, "switch_seconds": switch.seconds, "steps_before": plain}
    record("expert_switch", figures)
    finding = found.get("RUN-EXPERT-SWITCH")
    assert finding is not None, f"the switch cost too little to flag: {figures}"
    assert finding.step == boundary and finding.module == "low_noise_model", finding
    ev = finding.evidence
    assert ev["weights_in_bytes"] == expert_bytes and ev["weights_out_bytes"] == expert_bytes, ev
    assert ev["experts_run"] == ["low_noise_model"], ev
    assert ev["step_seconds"] - ev["median_seconds"] >= 1.0 and ev["step_seconds"] >= 2 * ev["median_seconds"], ev
    said = re.search(r"the switch cost about ([0-9.]+) s", finding.message)
    cost = ev["step_seconds"] - ev["median_seconds"]
    assert said and float(said[1]) == pytest.approx(cost, abs=0.06), finding.message


# -- the doctor's memory estimate against a measured peak --------------------------------------------------------

ESTIMATE_FACTOR = 1.5


def test_the_memory_estimate_is_within_a_factor_of_a_built_in_runs_peak() -> None:
    """``wandoc check`` sizes a 1.3B run before launch (``wandoc.estimate``): the DiT's bf16 weights plus a
    per-token guess at activations. The built-in pipeline's wan-1.3b preset is the same architecture; its
    denoise steps' allocator peak (weights resident plus one forward's activations) must be within
    ESTIMATE_FACTOR of that estimate, either way."""
    width, height, frames = 832, 480, 21
    cfg = PipelineConfig(preset="wan-1.3b", size=(width, height), frames=frames, steps=2, device="cuda", out=None)
    with Guard("cuda", run=RunInfo(pipeline="builtin", args=cfg.model_dump(mode="json"))) as g:
        run_pipeline(cfg, g)
    report = g.report
    measured = max(s.vram_peak_bytes or 0 for s in report.steps)
    facts = RepoFacts(
        effective={"task": "t2v-1.3B", "size": f"{width}*{height}", "frame_num": frames, "convert_model_dtype": True}
    )
    est = estimate(facts, CheckpointFacts())
    assert est.known, est.note
    denoise = est.dit_bytes + est.activations_bytes
    figures = {
        "estimate_denoise_bytes": denoise,
        "estimate_dit_bytes": est.dit_bytes,
        "estimate_activations_bytes": est.activations_bytes,
        "estimate_peak_vram_no_offload": est.peak_vram_no_offload,
        "measured_step_peak_bytes": measured,
        "measured_run_peak_bytes": report.summary.vram_peak_bytes,
        "ratio": denoise / measured if measured else None,
        "shape": f"{width}x{height}x{frames}",
    }
    record("memory_estimate", figures)
    assert measured > 0, figures
    assert measured / ESTIMATE_FACTOR <= denoise <= measured * ESTIMATE_FACTOR, figures
