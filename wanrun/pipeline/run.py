"""One generation with the built-in pipeline, announced phase by phase and step by step to the hooks.

The loop has the shape of Wan's text-to-video loop: under autocast and no_grad, each scheduler step runs the
denoiser on the prompt and on the negative prompt (classifier-free guidance; one forward when guide_scale is 1),
combines them and updates the latent. A clean run moves nothing between host and device inside the loop; only
the regression switches do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wanrun.hooks import NullHooks, RunHooks
from wanrun.pipeline.config import PipelineConfig, latent_shape, model_summary, token_grid
from wanrun.pipeline.decoder import build_decoder
from wanrun.pipeline.model import TORCH_DTYPES, WanStyleDiT, build_dit
from wanrun.pipeline.regressions import apply_regressions
from wanrun.pipeline.sampler import FlowMatchSampler
from wanrun.pipeline.text import build_text_encoder, encode_prompts
from wanrun.pipeline.video import check_output, write_video

__all__ = ["PipelineResult", "model_summary", "run_pipeline"]

_NULL_HOOKS = NullHooks()


@dataclass
class PipelineResult:
    out: Path | None  # the written file, or None when the config asked for no output
    frames_shape: tuple[int, ...]  # (frames, height, width, 3)
    seconds: float  # wall time of the whole run, load to save
    denoiser: torch.nn.Module
    info: dict[str, Any]


def resolve_device(cfg: PipelineConfig) -> torch.device:
    """The run's device; asking for CUDA where torch sees none, or a GPU-only switch on a CPU, fails here."""
    device = torch.device(cfg.resolved_device())
    cfg.check_device(device.type)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {cfg.device} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {cfg.device} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def denoise(
    dit: WanStyleDiT,
    cfg: PipelineConfig,
    device: torch.device,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    hooks: RunHooks,
) -> torch.Tensor:
    """The sampling loop; returns the final latent (1, 16, F, h, w) on the device."""
    compute = TORCH_DTYPES[cfg.resolved_dtypes(device.type)[0]]
    sampler = FlowMatchSampler(cfg.steps, cfg.shift, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    latents = torch.randn((1, *latent_shape(cfg.size, cfg.frames)), generator=generator, device=device)
    host_copy = cfg.host_copy and device.type != "cpu"
    if host_copy:
        latents = latents.cpu()
    with torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
        for i in range(cfg.steps):
            with hooks.step(i):
                x = latents.to(device) if host_copy else latents
                t = sampler.timestep(i)
                velocity = dit(x, t, cond)
                if uncond is not None:
                    v_uncond = dit(x, t, uncond)
                    velocity = v_uncond + cfg.guide_scale * (velocity - v_uncond)
                latents = sampler.step(i, x, velocity)
                if host_copy:
                    latents = latents.cpu()
            hooks.progress(i + 1, cfg.steps)
    return latents.to(device) if host_copy else latents


def run_pipeline(cfg: PipelineConfig, hooks: RunHooks = _NULL_HOOKS) -> PipelineResult:
    """Load, encode, denoise, decode and save one clip; exceptions propagate to the caller."""
    start = time.perf_counter()
    if cfg.out is not None:
        check_output(cfg.out)  # before minutes of work, not after
    device = resolve_device(cfg)
    compute, weights = cfg.resolved_dtypes(device.type)
    spec = cfg.spec

    with hooks.phase("load"):
        text_encoder = build_text_encoder(spec, device)
        dit = build_dit(spec, device, TORCH_DTYPES[weights])
        decoder = build_decoder(device)
        regressions = apply_regressions(dit, cfg, device)
    hooks.attach_model(dit, "dit")

    with torch.no_grad():
        with hooks.phase("encode"):
            cond = encode_prompts(text_encoder, [cfg.prompt], device)
            uncond = encode_prompts(text_encoder, [cfg.negative_prompt], device) if cfg.guide_scale != 1.0 else None
        with hooks.phase("denoise"):
            latents = denoise(dit, cfg, device, cond, uncond, hooks)
        with hooks.phase("decode"):
            frames = decoder(latents, cfg.frames).cpu().numpy()

    out = None
    if cfg.out is not None:
        with hooks.phase("save"):
            out = write_video(frames, cfg.out, cfg.fps)

    grid = token_grid(cfg.size, cfg.frames)
    info: dict[str, Any] = {
        "preset": cfg.preset,
        "device": str(device),
        "compute_dtype": compute,
        "weights_dtype": weights,
        "size": list(cfg.size),
        "frames": cfg.frames,
        "steps": cfg.steps,
        "latent_shape": list(latent_shape(cfg.size, cfg.frames)),
        "token_grid": list(grid),
        "tokens": grid[0] * grid[1] * grid[2],
        "text_len": spec.text_len,
        "params": sum(p.numel() for p in dit.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in dit.parameters()),
        "forwards_per_step": 1 if uncond is None else 2,
        "regressions": regressions,
    }
    return PipelineResult(out, tuple(frames.shape), time.perf_counter() - start, dit, info)
