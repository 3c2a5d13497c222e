"""Where a plain guarded step's host time goes, on the machine it runs on (a GPU one: the CUDA calls are the
part a CPU-only box cannot show).

The step ``bench_guard_overhead.py --python-costs`` times (its ``hollow_dit`` and ``seconds_per_step``): the
per-step cost against no guard, the CUDA calls a step makes timed one by one, and a profile of the guarded loop
(top functions by own time). It measures and asserts nothing.

    python bench/profile_plain_step.py [--steps 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path
from typing import Any

import torch
from bench_guard_overhead import hollow_dit, seconds_per_step  # beside this script: python puts bench/ on the path

from wanrun.guard import Guard
from wanrun.hooks import NullHooks


def _per_call_us(fn: Any, n: int = 2000) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e6 * (time.perf_counter() - t0) / n


def cuda_calls(device: torch.device) -> dict[str, float]:
    """Microseconds per call of what the step clock asks of CUDA."""
    ev = torch.cuda.Event(enable_timing=True)
    stream = torch.cuda.current_stream(device)
    return {
        "reset_peak_memory_stats": _per_call_us(lambda: torch.cuda.reset_peak_memory_stats(device)),
        "memory_stats_as_nested_dict": _per_call_us(lambda: torch.cuda.memory_stats_as_nested_dict(device)),
        "max_memory_allocated": _per_call_us(lambda: torch.cuda.max_memory_allocated(device)),
        "memory_reserved": _per_call_us(lambda: torch.cuda.memory_reserved(device)),
        "Event()": _per_call_us(lambda: torch.cuda.Event(enable_timing=True)),
        "event.record(stream)": _per_call_us(lambda: ev.record(stream)),
        "current_stream": _per_call_us(lambda: torch.cuda.current_stream(device)),
        "is_initialized": _per_call_us(torch.cuda.is_initialized),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA initialised, as it is in a run: the clock then uses device events

    tree = hollow_dit()

    def loop(hooks: Any, n: int) -> float:
        return seconds_per_step(tree, hooks, n)

    base = min(loop(NullHooks(), 300) for _ in range(5))
    result: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    with Guard(str(device), nvml=False, deep_steps=0, deep_every=0, slow_factor=1e9) as g:
        g.attach_model(tree, "dit", denoiser=True)
        loop(g, 50)  # past the first steps' one-off work
        result["plain_step_host_us"] = 1e6 * (min(loop(g, 300) for _ in range(5)) - base)
        prof = cProfile.Profile()
        prof.enable()
        loop(g, args.steps)
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    if device.type == "cuda":
        result["cuda_calls_us"] = cuda_calls(device)
    print(out.getvalue())
    for k, v in result.items():
        print(f"{k:28} {v}")
    if args.json:
        args.json.write_text(json.dumps({**result, "profile": out.getvalue()}, indent=1))


if __name__ == "__main__":
    main()
