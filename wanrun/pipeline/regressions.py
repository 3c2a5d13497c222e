"""Switches that reproduce the slow setups users hit, done the way real setups do them, for the guards to catch.

- offload: forward pre/post hooks on every block move its weights to the GPU before the block runs and back to
  the CPU after (pageable memory, blocking), as per-block offload does: the weights cross PCIe twice per forward.
- cpu_block: one block's weights never leave the CPU; its forward is wrapped (per instance, module paths intact)
  to copy its inputs to the CPU, compute there and copy the output back.
- fp32 weights under bf16/fp16 autocast: chosen at build time (`weights_dtype`); with `requires_grad` off, as Wan
  loads its models, autocast caches nothing and re-casts every weight in every forward.
- host_copy: the latents live on the host between steps (the run loop copies them in and out each step).

The placement switches need a device apart from the host: a CPU run refuses them (PipelineConfig.check_device).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from wanrun.pipeline.config import PipelineConfig
from wanrun.pipeline.model import TORCH_DTYPES, WanStyleDiT

Placement = Literal["device", "offload", "cpu"]
CPU = torch.device("cpu")


def block_placement(cfg: PipelineConfig, device: torch.device | str) -> list[Placement]:
    """Where each block's weights live between forwards: on the device, offloaded to the CPU, or on the CPU for good."""
    n = cfg.spec.num_blocks
    if torch.device(device).type == "cpu":
        return ["device"] * n
    placement: list[Placement] = ["offload" if cfg.offload else "device"] * n
    if cfg.cpu_block is not None:
        placement[cfg.cpu_block] = "cpu"
    return placement


def add_offload_hooks(block: nn.Module, device: torch.device) -> list[torch.utils.hooks.RemovableHandle]:
    """Park `block` on the CPU and move it to `device` for each forward only."""

    def to_device(module: nn.Module, args: tuple[Any, ...]) -> None:
        module.to(device)

    def to_host(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        module.to(CPU)

    block.to(CPU)
    return [block.register_forward_pre_hook(to_device), block.register_forward_hook(to_host)]


def keep_on_cpu(block: nn.Module, device: torch.device, compute_dtype: torch.dtype) -> None:
    """Leave `block` on the CPU for good: inputs go to the CPU, the CPU computes, the output comes back."""
    block.to(CPU)
    inner: Callable[..., torch.Tensor] = block.forward
    autocast = compute_dtype != torch.float32

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple(a.to(CPU) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(CPU) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        with torch.autocast("cpu", dtype=compute_dtype, enabled=autocast):
            out = inner(*args, **kwargs)
        return out.to(device)

    block.forward = forward  # per instance, as sequence-parallel setups do; hooks on the block still fire


def apply_regressions(dit: WanStyleDiT, cfg: PipelineConfig, device: torch.device) -> dict[str, str]:
    """Apply the switches `cfg` turns on to a loaded denoiser; return one line per switch saying what it did."""
    compute, weights = cfg.resolved_dtypes(device.type)
    blocks = dit.blocks
    notes: dict[str, str] = {}
    placement = block_placement(cfg, device)
    if cfg.offload:
        moved = [i for i, p in enumerate(placement) if p == "offload"]
        for i in moved:
            add_offload_hooks(blocks[i], device)
        notes["offload"] = f"{len(moved)} blocks live on the CPU and move to {device} and back around each forward"
    if cfg.cpu_block is not None:
        keep_on_cpu(blocks[cfg.cpu_block], device, TORCH_DTYPES[compute])
        notes["cpu_block"] = f"blocks.{cfg.cpu_block} stays on the CPU; its inputs and output cross each forward"
    if weights == "fp32" and compute != "fp32":
        notes["weights_dtype"] = f"fp32 weights under {compute} autocast: every weight is re-cast in every forward"
    if cfg.host_copy:
        notes["host_copy"] = f"latents live on the host: copied to {device} and back every step"
    return notes
