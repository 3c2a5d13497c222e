"""How long a built-in run will take, said before it starts: the work per step from the model's shape, at the
rate this device multiplies matrices, measured in a fraction of a second.

A Wan-1.3B-shaped run on a CPU takes hours; without this line the user watches "loading" for minutes with no
idea whether to wait. It is an estimate (attention kernels and memory traffic run below the matmul rate, a busy
machine below both); the live line's ETA, measured from the steps themselves, takes over at step 0.
"""

from __future__ import annotations

import time
from typing import Any

import torch

PROBE_SECONDS = 0.15
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def matmul_rate(device: torch.device, dtype: str, budget: float = PROBE_SECONDS) -> float:
    """Floating-point operations per second of square matmuls on ``device`` in ``dtype``, timed for about
    ``budget`` seconds (after one warm-up); 0.0 when the device cannot run them."""
    n = 1024 if device.type == "cpu" else 4096
    try:
        a = torch.randn(n, n, device=device).to(TORCH_DTYPES.get(dtype, torch.float32))
        b = torch.randn(n, n, device=device).to(a.dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        a @ b
        sync()
        done, start = 0, time.perf_counter()
        while True:
            a @ b
            done += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                return 2 * n**3 * done / elapsed
    except (RuntimeError, TypeError):  # a dtype the device has no matmul for
        return 0.0


def duration(seconds: float) -> str:
    """3 s, 4 min, 2 h 10 min."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def expected_length(shape: dict[str, Any], device: torch.device, dtype: str) -> str:
    """One line: the run's work from its shape and what it will take here, e.g. "8 steps x 2 forwards of 32,760
    tokens through 1.4B parameters: about 566 TFLOP a step; at this CPU's 61 GFLOP/s (fp32 matmuls), expect about
    20 h 37 min for the steps (step 0 gives a measured ETA)"."""
    flops = float(shape["flops_per_step"])
    steps, per = shape["steps"], shape["forwards_per_step"]
    work = (
        f"{steps} step{'s' * (steps != 1)} x {per} forward{'s' * (per != 1)} of {shape['tokens']:,} tokens "
        f"through {_count(shape['params'])} parameters: about {_flops(flops)} a step"
    )
    rate = matmul_rate(device, dtype)
    if rate <= 0:
        return work
    where = "this CPU" if device.type == "cpu" else f"this GPU ({device})"
    return (
        f"{work}; at {where}'s {_flops(rate)}/s ({dtype} matmuls), expect about {duration(steps * flops / rate)} "
        + ("for the steps (step 0 gives a measured ETA)")
    )


def _count(value: float) -> str:
    return f"{value / 1e9:.2g}B" if value >= 1e9 else f"{value / 1e6:.2g}M"


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} FLOP"
