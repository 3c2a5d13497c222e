"""What the guards cost: the same built-in generation with and without them, in one process.

For each shape, runs alternate unguarded (phases timed with one device sync at each phase boundary, nothing per
step) and guarded (``wanrun.guard`` with its defaults: cheap checks every step, per-op inspection on the first
steps and a budgeted sample). It reports medians over runs: the denoise time, the overhead on the whole loop,
the overhead of a plain (cheap-checks-only) step, and the extra time of an inspected step. It measures and
asserts nothing. Targets (DESIGN.md): at most 2% at 480p shapes, at most 10% at small shapes.

    python bench/bench_guard_overhead.py                       # both shapes, 3 runs each, on the GPU
    python bench/bench_guard_overhead.py --shapes small --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from wanrun.guard import Guard
from wanrun.hooks import NullHooks
from wanrun.pipeline import PipelineConfig, model_summary, run_pipeline

SHAPES: dict[str, dict[str, Any]] = {
    # Wan-1.3B at 480p: 32,760 tokens, about 0.5 s a forward on an H100
    "480p": {"preset": "wan-1.3b", "size": "832x480", "frames": 81, "steps": 6},
    # the same model at 1,560 tokens: about 30 ms a forward, where per-op Python costs the most
    "small": {"preset": "wan-1.3b", "size": "416x240", "frames": 13, "steps": 50},
}


class TimedHooks(NullHooks):
    """The unguarded baseline: phase wall times, the device drained at phase boundaries only."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def run_once(cfg: PipelineConfig, guarded: bool, device: str) -> dict[str, Any]:
    if not guarded:
        hooks = TimedHooks()
        run_pipeline(cfg, hooks)
        return {"denoise_s": hooks.phases["denoise"]}
    with Guard(device) as g:
        run_pipeline(cfg, g)
    report = g.report
    plain = [s.seconds for s in report.steps if not s.deep]
    deep = [s.seconds for s in report.steps if s.deep]
    return {
        "denoise_s": report.summary.phases["denoise"],
        "plain_step_s": statistics.median(plain) if plain else None,
        "deep_step_s": statistics.median(deep) if deep else None,
        "deep_steps": report.summary.deep_steps,
        "findings": [f.rule for f in report.findings],
    }


def bench_shape(name: str, shape: dict[str, Any], runs: int, device: str) -> dict[str, Any]:
    cfg = PipelineConfig(device=device, out=None, **shape)
    run_once(cfg, guarded=False, device=device)  # warm-up: allocator, kernels, cuDNN choices
    run_once(cfg, guarded=True, device=device)
    base, guarded = [], []
    for _ in range(runs):  # alternate, so drift (clocks, heat) hits both sides alike
        base.append(run_once(cfg, guarded=False, device=device))
        guarded.append(run_once(cfg, guarded=True, device=device))
    base_denoise = statistics.median(r["denoise_s"] for r in base)
    guard_denoise = statistics.median(r["denoise_s"] for r in guarded)
    base_step = base_denoise / cfg.steps
    plain = [r["plain_step_s"] for r in guarded if r["plain_step_s"] is not None]
    deep = [r["deep_step_s"] for r in guarded if r["deep_step_s"] is not None]
    plain_step = statistics.median(plain) if plain else None
    deep_step = statistics.median(deep) if deep else None
    return {
        "shape": name,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in shape.items()},
        "tokens": model_summary(cfg)["tokens"],
        "steps": cfg.steps,
        "runs": runs,
        "unguarded_denoise_s": base_denoise,
        "guarded_denoise_s": guard_denoise,
        "overhead_pct": 100.0 * (guard_denoise / base_denoise - 1.0),
        "unguarded_step_s": base_step,
        "plain_step_s": plain_step,
        "plain_step_overhead_pct": 100.0 * (plain_step / base_step - 1.0) if plain_step else None,
        "deep_step_s": deep_step,
        "deep_step_extra_pct": 100.0 * (deep_step / base_step - 1.0) if deep_step else None,
        "deep_steps": guarded[-1]["deep_steps"],
        "findings": guarded[-1]["findings"],
        "runs_raw": {"unguarded": base, "guarded": guarded},
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'shape':<7} {'tokens':>7} {'steps':>5} {'base s':>8} {'guard s':>8} {'overhead':>9} "
    head += f"{'plain step':>10} {'deep step':>10}  deep steps"
    print(head)
    for r in rows:
        line = f"{r['shape']:<7} {r['tokens']:>7} {r['steps']:>5} {r['unguarded_denoise_s']:>8.3f} "
        line += f"{r['guarded_denoise_s']:>8.3f} {_pct(r['overhead_pct']):>9} "
        line += f"{_pct(r['plain_step_overhead_pct']):>10} {_pct(r['deep_step_extra_pct']):>10}  {r['deep_steps']}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="override the steps of every shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("guard_overhead.json"))
    args = parser.parse_args()

    rows = []
    for name in args.shapes:
        shape = dict(SHAPES[name])
        if args.steps is not None:
            shape["steps"] = args.steps
        rows.append(bench_shape(name, shape, args.runs, args.device))
    print_table(rows)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
