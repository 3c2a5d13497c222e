"""The guard's verdicts where users run Wan, on the GPU: the official WanModel found without being named,
diffusers' WanPipeline at the Wan-1.3B shape under its own offload modes, and torch.compile (inductor) under the
guard compiling what it compiles without it.

Run on the GPU machine (``bench/gpu_batch.sh everywhere``); each test skips on a machine without CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests import official_wan
from tests.gpu.test_official_wanmodel_gpu import build, by_rule, serious
from tests.gpu.test_official_wanmodel_gpu import wan as wan  # the fixture: the official model module
from wandoc.metrics import Report
from wanrun.guard import guard

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_diffusers

GRID = (5, 60, 52)  # the 1.3B shape at a reduced grid: 3,900 tokens


def discovered_run(model: nn.Module, cfg: dict[str, Any], regression: str, steps: int = 3) -> Report:
    """Wan's loop, unnamed: the guard is told nothing but the device."""
    f, h, w = GRID
    seq_len = f * (h // 2) * (w // 2)
    latent = torch.randn(16, f, h, w, device="cuda")
    if regression == "host latents":
        latent = latent.cpu()
    cond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    uncond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    timesteps = torch.linspace(999, 1, steps, device="cuda")
    with guard(device="cuda") as g:
        for i in range(steps):
            with g.step(i), torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
                x = [latent.to("cuda")]
                t = timesteps[i : i + 1]
                pos = model(x, t=t, context=cond, seq_len=seq_len)[0]
                neg = model(x, t=t, context=uncond, seq_len=seq_len)[0]
                latent = x[0] - (neg + 5.0 * (pos - neg)) * 0.01
                if regression == "host latents":
                    latent = latent.cpu()
    return g.report


def onload(module: nn.Module, args: Any) -> None:
    module.to("cuda")  # a hook that returned the module would replace the block's input


def offload(module: nn.Module, args: Any, output: Any) -> None:
    module.to("cpu")


def plant(model: nn.Module, regression: str) -> None:
    if regression == "block on cpu":
        block = model.blocks[1].to("cpu", torch.float32)  # CPU kernels mix no dtypes: the block computes in fp32
        original = block.forward

        def host(v: Any) -> Any:
            return (v.cpu().float() if v.is_floating_point() else v.cpu()) if isinstance(v, torch.Tensor) else v

        def on_cpu(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as Wan's autocast does on the GPU
                return original(*map(host, args), **{k: host(v) for k, v in kwargs.items()}).to("cuda")

        block.forward = on_cpu
    elif regression == "per-step offload":
        for b in model.blocks:
            b.to("cpu")
            b.register_forward_pre_hook(onload)
            b.register_forward_hook(offload)


EXPECTED = {
    "clean": None,
    "fp32 under autocast": "RUN-REPEATED-CASTS",
    "per-step offload": "RUN-OFFLOAD-TRAFFIC",
    "block on cpu": "RUN-CPU-COMPUTE",
    "host latents": "RUN-HOST-COPY-IN-LOOP",
}


@pytest.mark.parametrize("regression", list(EXPECTED))
def test_official_wanmodel_found_and_judged_without_being_named(wan: Any, regression: str) -> None:
    cfg = official_wan.WAN_1_3B
    model = build(wan, cfg, torch.float32 if regression == "fp32 under autocast" else torch.bfloat16)
    plant(model, regression)
    report = discovered_run(model, cfg, regression)
    assert report.run.found_by == "class WanModel" and [s.forwards for s in report.steps] == [2, 2, 2]
    rule = EXPECTED[regression]
    if rule is None:
        assert serious(report) == []
        return
    finding = by_rule(report)[rule]
    assert finding.step in (0, 1) and finding.module  # inspection starts once the denoiser is known


# -- diffusers at the Wan-1.3B shape under its own offload modes -----------------------------------------------


def wan_1_3b_pipeline() -> Any:
    import tiny_diffusers
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    with torch.device("cuda"):
        transformer = WanTransformer3DModel(
            num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096,
            in_channels=16, out_channels=16, freq_dim=256,
        ).to(torch.bfloat16).eval()  # fmt: skip
    pipe = WanPipeline(
        tokenizer=tiny_diffusers.tokenizer(), text_encoder=tiny_diffusers.text_encoder(dim=4096),
        vae=AutoencoderKLWan().eval(), transformer=transformer,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("offload", ["none", "model", "sequential", "group"])
def test_diffusers_offload_is_recognised_as_the_chosen_offload(offload: str) -> None:
    pipe = wan_1_3b_pipeline()
    weights = sum(t.numel() * t.element_size() for t in [*pipe.transformer.parameters(), *pipe.transformer.buffers()])
    if offload == "none":
        pipe.to("cuda")
    elif offload == "model":
        pipe.enable_model_cpu_offload()
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.vae.to("cuda")
        pipe.text_encoder.to("cuda")
        pipe.transformer.enable_group_offload(
            onload_device=torch.device("cuda"), offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1,
        )  # fmt: skip
    with guard(device="cuda", model=pipe.transformer) as g:
        pipe(prompt="a cat surfing a wave at sunset", negative_prompt="blurry", height=480, width=832,
             num_frames=9, num_inference_steps=3, output_type="latent")  # fmt: skip
    r = g.report
    step = r.steps[1]  # the second inspected step: the first pays one-time moves
    found = by_rule(r)
    if offload in ("none", "model"):
        assert "RUN-OFFLOAD-TRAFFIC" not in found and (step.weight_h2d_bytes or 0) < 0.1 * weights
        if offload == "model":  # the chosen offload moves the denoiser in at its first forward, once
            first = r.steps[0]
            assert first.offload_hooks and first.weights_kept_bytes == pytest.approx(weights, rel=0.1)
        return
    assert step.offload_hooks and "the offload you chose" in found["RUN-OFFLOAD-TRAFFIC"].message
    assert step.weight_h2d_bytes == pytest.approx(step.forwards * weights, rel=0.1)


# -- torch.compile (inductor) --------------------------------------------------------------------------------


def test_inductor_compiles_the_same_graphs_under_the_guard(wan: Any) -> None:
    import torch._dynamo.utils as dynamo_utils

    cfg = official_wan.WAN_1_3B
    f, h, w = GRID
    seq_len = f * (h // 2) * (w // 2)
    x = [torch.randn(16, f, h, w, device="cuda", dtype=torch.bfloat16)]
    ctx = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda", dtype=torch.bfloat16)]

    def graphs(guarded: bool) -> tuple[int, Report | None]:
        torch._dynamo.reset()
        model = torch.compile(build(wan, cfg, torch.bfloat16))
        before = dynamo_utils.counters["stats"]["unique_graphs"]
        with torch.no_grad(), torch.amp.autocast("cuda", dtype=torch.bfloat16):  # as Wan runs it
            if guarded:
                with guard(device="cuda", model=model) as g:
                    for i in range(3):
                        with g.step(i):
                            model(x, t=torch.tensor([999.0 - i], device="cuda"), context=ctx, seq_len=seq_len)
                report: Report | None = g.report
            else:
                for i in range(3):
                    model(x, t=torch.tensor([999.0 - i], device="cuda"), context=ctx, seq_len=seq_len)
                report = None
        return dynamo_utils.counters["stats"]["unique_graphs"] - before, report

    plain, _ = graphs(False)
    guarded, report = graphs(True)
    assert guarded == plain >= 1
    assert report is not None and report.steps[0].compiles and "RUN-RECOMPILES" not in by_rule(report)
