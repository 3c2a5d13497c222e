"""What the guard costs the host on this machine, without a GPU: a second ``guard()`` in a process (rules and
targets are read once per process) and a plain step (one that is not inspected op by op).

    python bench/bench_guard_cpu_cost.py [--json FILE]

A plain step is timed as the fastest tenth of 500 guarded steps of a tiny model against the fastest of its bare
forwards, so what remains is the guard's own work at the step's boundaries (the machine's noise is not).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from wanrun.guard import guard


def tiny_dit() -> nn.Module:
    blocks = [nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)) for _ in range(4)]
    return nn.Sequential(*blocks).eval()


def second_guard_ms(repeats: int = 20) -> dict[str, float]:
    t0 = time.perf_counter()
    with guard(device="cpu", nvml=False):
        pass
    first = time.perf_counter() - t0
    costs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with guard(device="cpu", nvml=False):
            pass
        costs.append(time.perf_counter() - t0)
    return {
        "first_ms": first * 1e3,
        "second_min_ms": min(costs) * 1e3,
        "second_median_ms": statistics.median(costs) * 1e3,
    }


def plain_step_ms(steps: int = 500) -> dict[str, float]:
    model, x = tiny_dit(), torch.randn(1, 16)
    with torch.no_grad():
        bare = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model(x)
            bare.append(time.perf_counter() - t0)
        guarded = []
        with guard(device="cpu", nvml=False, model=model, deep_steps=1, deep_every=0) as g:
            for i in range(steps + 1):
                t0 = time.perf_counter()
                with g.step(i):
                    model(x)
                if i:
                    guarded.append(time.perf_counter() - t0)
    low = sorted(guarded)[len(guarded) // 10]
    return {
        "bare_forward_ms": min(bare) * 1e3,
        "guarded_step_p10_ms": low * 1e3,
        "guarded_step_median_ms": statistics.median(guarded) * 1e3,
        "plain_step_cost_ms": (low - min(bare)) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, **second_guard_ms(), **plain_step_ms()}  # fmt: skip
    for key, value in result.items():
        print(f"{key:26s} {value:.3f}" if isinstance(value, float) else f"{key:26s} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
