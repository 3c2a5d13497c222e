"""The guards on a real GPU: the built-in pipeline clean, and with each regression switched on.

A clean run must raise no warning; each regression must be flagged at step 0 with the module it happens in, and
the bytes the guard reports must match, within 10%, the bytes the regression really moves or casts (computed
here from the model's parameter sizes, or recorded at the module by a hook of the test's own).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from wandoc.metrics import Report, RunInfo
from wanrun.cli import main
from wanrun.guard import Guard
from wanrun.pipeline import PipelineConfig, run_pipeline
from wanrun.pipeline.config import latent_shape

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SHAPES = [
    pytest.param({"preset": "small"}, id="small"),
    pytest.param({"preset": "wan-1.3b", "size": (320, 192), "frames": 17}, id="wan-1.3b-320x192"),
]
CPU_BLOCK = 3


def nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class BlockSpy:
    """Records what crosses at one block: its device inputs (copied to the host) and its output (copied back)."""

    def __init__(self) -> None:
        self.d2h = 0
        self.h2d = 0
        self.forwards = 0

    def watch(self, block: nn.Module) -> None:
        block.register_forward_pre_hook(self._inputs, with_kwargs=True)
        block.register_forward_hook(self._output)

    def _inputs(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        values = [*args, *kwargs.values()]
        self.d2h += nbytes(t for t in values if isinstance(t, torch.Tensor) and t.is_cuda)
        self.forwards += 1

    def _output(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.h2d += nbytes([output])


class SpyingGuard(Guard):
    """A guard that also puts a BlockSpy on one block of the denoiser it is given."""

    def __init__(self, *args: Any, spy: BlockSpy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spy = spy

    def attach_model(self, model: nn.Module, name: str, denoiser: bool | None = None) -> None:
        super().attach_model(model, name, denoiser)
        self.spy.watch(model.blocks[CPU_BLOCK])


def run(shape: dict[str, Any], steps: int = 2, spy: BlockSpy | None = None, **switches: Any) -> tuple[Report, Any]:
    cfg = PipelineConfig(device="cuda", steps=steps, out=None, **shape, **switches)
    run_info = RunInfo(pipeline="builtin", args=cfg.model_dump(mode="json"))
    g = SpyingGuard("cuda", spy=spy, run=run_info) if spy is not None else Guard("cuda", run=run_info)
    with g:
        result = run_pipeline(cfg, g)
    return g.report, result


def by_rule(report: Report) -> dict[str, Any]:
    return {f.rule: f for f in report.findings}


def serious(report: Report) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in report.findings if f.severity in ("error", "warning")]


@pytest.mark.parametrize("shape", SHAPES)
def test_clean_run_raises_no_warning(shape: dict[str, Any]) -> None:
    report, _ = run(shape, steps=3)
    assert serious(report) == []
    first = report.steps[0]
    assert first.deep and first.forwards == 2
    assert (first.h2d_bytes, first.d2h_bytes, first.cpu_ops, first.repeated_cast_bytes) == (0, 0, 0, 0)
    assert first.cpu_resident == [] and first.vram_peak_bytes > 0
    # step 1 inspects its first forward and scales it: the same cast bytes as step 0, which saw both
    assert report.steps[1].deep and report.steps[1].cast_bytes == pytest.approx(first.cast_bytes, rel=0.05)
    assert any("NVML on" in c for c in report.summary.checked), report.summary.not_checked
    assert all(s.vram_used_bytes > 0 for s in report.steps)
    assert any(s.gpu_util is not None for s in report.steps)


@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_weights_are_flagged_with_their_cast_bytes(shape: dict[str, Any]) -> None:
    report, result = run(shape, weights_dtype="fp32")
    finding = by_rule(report)["RUN-REPEATED-CASTS"]
    assert finding.step == 0 and finding.module and finding.module.startswith("blocks.")
    dit = result.denoiser
    per_forward = sum(
        p.numel() * 2  # each weight autocast runs is written out again in bf16
        for name, m in dit.named_modules()
        if isinstance(m, nn.Linear | nn.Conv3d) and not name.startswith(("time_embedding", "time_projection"))
        for p in m.parameters(recurse=False)
    )
    step = report.steps[1]
    assert step.repeated_cast_bytes / step.forwards == pytest.approx(per_forward, rel=0.1)
    assert report.steps[0].repeated_cast_bytes == pytest.approx(per_forward, rel=0.1)  # the second forward


@pytest.mark.parametrize("shape", SHAPES)
def test_offload_is_flagged_with_the_weights_it_moves(shape: dict[str, Any]) -> None:
    report, result = run(shape, offload=True)
    finding = by_rule(report)["RUN-OFFLOAD-TRAFFIC"]
    assert finding.step == 0 and finding.module and finding.module.startswith("blocks.")
    assert "you chose" in finding.message
    block_bytes = sum(nbytes([*b.parameters(), *b.buffers()]) for b in result.denoiser.blocks)
    step = report.steps[0]
    assert step.weight_h2d_bytes == pytest.approx(step.forwards * block_bytes, rel=0.1)
    assert step.d2h_bytes == pytest.approx(step.forwards * block_bytes, rel=0.1)  # and back after each use
    assert "RUN-CPU-RESIDENT" not in by_rule(report) and "RUN-HOST-COPY-IN-LOOP" not in by_rule(report)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_block_left_on_the_cpu_is_named(shape: dict[str, Any]) -> None:
    spy = BlockSpy()
    report, _ = run(shape, spy=spy, cpu_block=CPU_BLOCK)
    found = by_rule(report)
    compute = found["RUN-CPU-COMPUTE"]
    assert compute.severity == "error" and compute.step == 0
    assert compute.module and compute.module.startswith(f"blocks.{CPU_BLOCK}.")
    assert found["RUN-CPU-RESIDENT"].module == f"blocks.{CPU_BLOCK}"
    step = report.steps[0]
    assert step.cpu_resident == [f"blocks.{CPU_BLOCK}"]
    per_forward_d2h, per_forward_h2d = spy.d2h / spy.forwards, spy.h2d / spy.forwards
    assert step.d2h_bytes == pytest.approx(step.forwards * per_forward_d2h, rel=0.1)
    assert step.h2d_bytes == pytest.approx(step.forwards * per_forward_h2d, rel=0.1)
    assert step.weight_h2d_bytes == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_latents_on_the_host_are_flagged_at_the_loop(shape: dict[str, Any]) -> None:
    report, _ = run(shape, host_copy=True)
    finding = by_rule(report)["RUN-HOST-COPY-IN-LOOP"]
    assert finding.step == 0 and finding.module == "(loop)"
    cfg = PipelineConfig(**shape)
    latent_bytes = math.prod(latent_shape(cfg.size, cfg.frames)) * 4  # fp32 latents, batch 1
    step = report.steps[0]
    assert step.h2d_bytes == pytest.approx(latent_bytes, rel=0.1)
    assert step.d2h_bytes == pytest.approx(latent_bytes, rel=0.1)
    assert step.weight_h2d_bytes == 0 and step.syncs >= 1


def test_cli_exit_codes_on_the_gpu(tmp_path: Path) -> None:
    base = ["generate", "--preset", "small", "--device", "cuda", "--steps", "2", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a.npy"), "--report", str(tmp_path / "a.json")]) == 0
    clean = Report.model_validate_json((tmp_path / "a.json").read_text())
    assert serious(clean) == [] and clean.run.gpu_name
    assert main([*base, "--cpu-block", "3", "--out", str(tmp_path / "b.npy")]) == 1
    assert main([*base, "--offload", "--out", str(tmp_path / "c.npy"), "--fail-on", "warning"]) == 1
    strict = [*base, "--cpu-block", "3", "--strict", "--steps", "6", "--report", str(tmp_path / "d.json")]
    assert main([*strict, "--out", str(tmp_path / "d.npy")]) == 1
    stopped = Report.model_validate_json((tmp_path / "d.json").read_text())
    assert len(stopped.steps) == 1 and stopped.summary.interrupted


def test_steps_are_timed_on_the_device_without_draining_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the phases' own boundaries nothing calls ``torch.cuda.synchronize``: steps are timed by events."""
    calls: list[int] = []
    real = torch.cuda.synchronize

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "synchronize", counting)
    report, _ = run({"preset": "small"}, steps=6)
    assert len(calls) == 2 * len(report.phases)
    assert "device time from CUDA events" in " ".join(report.summary.checked)
    assert all(s.seconds > 0 for s in report.steps)
    assert sum(s.seconds for s in report.steps) <= report.summary.phases["denoise"]


def test_a_step_is_the_devices_time_not_the_hosts() -> None:
    """Each step queues a kernel that keeps the device busy for a while and returns at once on the host."""
    cycles = 20_000_000
    model = nn.Linear(8, 8).cuda()
    torch.cuda._sleep(cycles)  # an idle GPU runs its first kernels at low clocks: wake it first
    torch.cuda.synchronize()
    with Guard("cuda", nvml=False, deep_steps=0, deep_every=0, model=model) as g:
        for i in range(4):
            with g.step(i):
                model(torch.zeros(1, 8, device="cuda"))
                torch.cuda._sleep(cycles)
    seconds = [s.seconds for s in g.report.steps]
    # the same kernel timed by events right after (a GPU's clock changes with load: measure at the same time)
    samples = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000)
    busy = statistics.median(samples)
    # the host returns from each step at once: a host timer would read ~0; the first step may still find the
    # clocks ramping up (slower, never faster)
    assert len(seconds) == 4 and all(abs(x - busy) <= 0.3 * busy for x in seconds[1:]), (seconds, busy)
    assert seconds[0] >= 0.7 * busy, (seconds, busy)
