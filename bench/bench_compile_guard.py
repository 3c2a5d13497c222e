"""torch.compile (inductor) under the guard, on the GPU: the same graphs compiled with and without it, and what it
costs per step at Wan-1.3B's 480p shape (32,760 tokens) with the official WanModel from the wan22 wheel.

    python bench/bench_compile_guard.py [--steps 8] [--grid 21x60x104] [--json FILE]

Each side compiles afresh (``torch._dynamo.reset()``), runs two CFG forwards per step under bf16 autocast, and
is timed by CUDA events per step after the first two (compile and warm-up). Target: the same graph count, at
most 3% slower guarded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import official_wan, wanrepo
from wanrun.guard import guard


def run(wan: Any, grid: tuple[int, int, int], steps: int, guarded: bool) -> dict[str, Any]:
    import torch._dynamo.utils as dynamo_utils

    cfg = official_wan.WAN_1_3B
    torch._dynamo.reset()
    with torch.device("cuda"):
        model = wan.WanModel(**cfg).to(torch.bfloat16).eval().requires_grad_(False)
    model = torch.compile(model)
    f, h, w = grid
    seq_len = f * (h // 2) * (w // 2)
    x = [torch.randn(16, f, h, w, device="cuda")]
    cond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    uncond = [torch.randn(cfg["text_len"], cfg["text_dim"], device="cuda")]
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    times: list[float] = []
    g = guard(device="cuda", model=model) if guarded else None

    def step(i: int) -> None:
        t = torch.tensor([999.0 - i], device="cuda")
        with torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            model(x, t=t, context=cond, seq_len=seq_len)
            model(x, t=t, context=uncond, seq_len=seq_len)

    if g is not None:
        g.__enter__()
    try:
        for i in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if g is not None:
                with g.step(i):
                    step(i)
            else:
                step(i)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    finally:
        if g is not None:
            g.__exit__(None, None, None)
    out: dict[str, Any] = {
        "graphs": dynamo_utils.counters["stats"]["unique_graphs"] - before,
        "step0_seconds": times[0],
        "median_seconds": statistics.median(times[2:]),
    }
    if g is not None:
        r = g.report
        out["findings"] = sorted({f.rule for f in r.findings})
        out["compiles"] = [s.compiles for s in r.steps]
        out["deep_steps"] = r.summary.deep_steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--grid", default="21x60x104", help="latent frames x height x width")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    grid = tuple(int(v) for v in args.grid.split("x"))
    wheel = wanrepo.fetch_wan22_wheel()
    if wheel is None:
        sys.exit("the wan22 wheel is not available")
    wan = official_wan.load_model_module(wheel, Path(tempfile.mkdtemp()))
    plain = run(wan, grid, args.steps, guarded=False)  # type: ignore[arg-type]
    guarded = run(wan, grid, args.steps, guarded=True)  # type: ignore[arg-type]
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "grid": args.grid,
        "plain": plain,
        "guarded": guarded,
        "same_graphs": plain["graphs"] == guarded["graphs"],
        "overhead": guarded["median_seconds"] / plain["median_seconds"] - 1,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
