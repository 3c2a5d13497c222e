"""The guards on the official WanModel (from the wan22 wheel), clean and with each regression planted.

The model runs the way Wan's pipelines run it: ``eval().requires_grad_(False)``, two forwards per step
(classifier-free guidance) under ``torch.amp.autocast('cuda', dtype=bfloat16)``. Each regression is planted
the way real setups get it, and must be flagged at step 0 with the module it happens in, with the bytes the
guard reports within 10% of what the regression really moves or casts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests import official_wan, wanrepo
from wandoc.metrics import Report, RunInfo
from wanrun.guard import Guard

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# (config, latent frames, height, width): tiny, and the 1.3B shape at a reduced grid (3,900 tokens)
SHAPES = [
    pytest.param((official_wan.TINY, 3, 16, 16), id="tiny"),
    pytest.param((official_wan.WAN_1_3B, 5, 60, 52), id="wan-1.3b"),
]
BLOCK = 1  # a block every shape has (tiny has two)


@pytest.fixture(scope="module")
def wan() -> Any:
    wheel = wanrepo.fetch_wan22_wheel()
    if wheel is None:
        pytest.skip("the wan22 wheel is not available")
    return official_wan.load_model_module(wheel, Path(tempfile.mkdtemp()))


def nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def build(wan: Any, cfg: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    with torch.device("cuda"):
        model = wan.WanModel(**cfg)
    return model.to(dtype).eval().requires_grad_(False)


def generate(
    model: nn.Module,
    cfg: dict[str, Any],
    grid: tuple[int, int, int],
    steps: int = 2,
    host_latents: bool = False,
    setup: Callable[[nn.Module], None] | None = None,
) -> Report:
    f, h, w = grid
    seq_len = f * (h // 2) * (w // 2)
    latent = torch.randn(16, f, h, w, device="cuda")
    if host_latents:
        latent = latent.cpu()
    cond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    uncond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    timesteps = torch.linspace(999, 1, steps, device="cuda")
    g = Guard("cuda", run=RunInfo(denoiser="WanModel"))  # a Python API run: no pipeline of ours
    with g:
        g.attach_model(model, "dit")
        if setup is not None:
            setup(model)
        for i in range(steps):
            with g.step(i), torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
                x = [latent.to("cuda")] if host_latents else [latent]
                t = timesteps[i : i + 1]
                pos = model(x, t=t, context=cond, seq_len=seq_len)[0]
                neg = model(x, t=t, context=uncond, seq_len=seq_len)[0]
                update = (neg + 5.0 * (pos - neg)) * 0.01
                latent = (x[0] - update).cpu() if host_latents else x[0] - update
    return g.report


def by_rule(report: Report) -> dict[str, Any]:
    return {f.rule: f for f in report.findings}


def serious(report: Report) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in report.findings if f.severity in ("error", "warning")]


@pytest.mark.parametrize("shape", SHAPES)
def test_clean_official_model_raises_no_warning(wan: Any, shape: Any) -> None:
    cfg, *grid = shape
    report = generate(build(wan, cfg, torch.bfloat16), cfg, tuple(grid), steps=3)
    assert serious(report) == []
    assert report.steps[0].forwards == 2 and report.steps[0].cpu_ops == 0


@pytest.mark.parametrize("shape", SHAPES[1:])  # at the tiny shape the casts are kilobytes: under the rule's floor
def test_official_fp32_weights_under_autocast(wan: Any, shape: Any) -> None:
    cfg, *grid = shape
    model = build(wan, cfg, torch.float32)
    report = generate(model, cfg, tuple(grid))
    finding = by_rule(report)["RUN-REPEATED-CASTS"]
    assert finding.step == 0 and finding.module and finding.module.startswith("blocks.")
    # autocast re-casts the weights of every Linear/Conv that runs in a bf16 region (the time embedding and the
    # head run under an fp32 autocast region in WanModel, so they are not cast)
    per_forward = sum(
        p.numel() * 2
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv3d) and not name.startswith(("time_embedding", "time_projection", "head"))
        for p in m.parameters(recurse=False)
    )
    step = report.steps[1]
    assert step.repeated_cast_bytes / step.forwards == pytest.approx(per_forward, rel=0.1)


@pytest.mark.parametrize("shape", SHAPES[1:])  # at the tiny shape the weights are kilobytes: under the rule's floor
def test_official_blocks_offloaded_per_forward(wan: Any, shape: Any) -> None:
    cfg, *grid = shape
    model = build(wan, cfg, torch.bfloat16)

    def load(mod: nn.Module, args: Any) -> None:
        mod.to("cuda")

    def unload(mod: nn.Module, args: Any, out: Any) -> None:
        mod.to("cpu")

    def offload(m: nn.Module) -> None:
        for block in m.blocks:
            block.to("cpu")
            block.register_forward_pre_hook(load)
            block.register_forward_hook(unload)

    report = generate(model, cfg, tuple(grid), setup=offload)
    finding = by_rule(report)["RUN-OFFLOAD-TRAFFIC"]
    assert finding.step == 0 and finding.module and finding.module.startswith("blocks.")
    block_bytes = sum(nbytes([*b.parameters(), *b.buffers()]) for b in model.blocks)
    step = report.steps[0]
    assert step.weight_h2d_bytes == pytest.approx(step.forwards * block_bytes, rel=0.1)


@pytest.mark.parametrize("shape", SHAPES)
def test_official_block_left_on_the_cpu(wan: Any, shape: Any) -> None:
    cfg, *grid = shape
    model = build(wan, cfg, torch.bfloat16)

    def to_cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.cpu()
        if isinstance(value, list | tuple):
            return type(value)(to_cpu(v) for v in value)
        return value

    def leave_on_cpu(m: nn.Module) -> None:
        block = m.blocks[BLOCK].to("cpu", torch.float32)  # never moved, never converted
        original = block.forward

        def forward_on_cpu(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):  # the CUDA autocast does not cover CPU ops
                return original(*args, **kwargs)

        block.forward = forward_on_cpu  # per instance, the way sequence parallel replaces forward
        block.register_forward_pre_hook(
            lambda mod, args, kwargs: (to_cpu(args), {k: to_cpu(v) for k, v in kwargs.items()}), with_kwargs=True
        )
        block.register_forward_hook(lambda mod, args, out: out.to("cuda"))

    report = generate(model, cfg, tuple(grid), setup=leave_on_cpu)
    found = by_rule(report)
    assert found["RUN-CPU-COMPUTE"].step == 0
    assert (found["RUN-CPU-COMPUTE"].module or "").startswith(f"blocks.{BLOCK}")
    assert report.steps[0].cpu_resident == [f"blocks.{BLOCK}"]


@pytest.mark.parametrize("shape", SHAPES)
def test_official_latents_on_the_host(wan: Any, shape: Any) -> None:
    cfg, f, h, w = shape
    report = generate(build(wan, cfg, torch.bfloat16), cfg, (f, h, w), host_latents=True)
    if cfg is official_wan.TINY:
        # a few kilobytes per step is a fact, not an alarm: the rule's threshold is in megabytes
        assert "RUN-HOST-COPY-IN-LOOP" not in by_rule(report)
        return
    assert by_rule(report)["RUN-HOST-COPY-IN-LOOP"].step == 0
    latent_bytes = 16 * f * h * w * 4
    assert report.steps[1].h2d_bytes == pytest.approx(latent_bytes, rel=0.1)
