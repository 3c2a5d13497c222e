"""What the guards cost: the same built-in generation with and without them, in one process.

For each shape, runs alternate between the setups, so drift (clocks, heat, neighbours) hits all alike:

* ``unguarded``: no guard; each step is timed by two CUDA events (no sync) and the phases by a sync at their
  boundaries, as the guard does, so step times compare like for like;
* ``plain``: the guard with per-op inspection off (``deep_steps=0, deep_every=0``): the cheap checks alone;
* ``guard``: the guard with its defaults (cheap checks every step, step 0 inspected in full, step 1 on its first
  forward, then a budgeted sample);
* ``saved``: ``guard`` with the report saved as the run goes, as ``wanrun generate --report`` does
  (``wanrun.report_file``: a checkpoint after every judged step and phase).

It reports medians over runs: the denoise phase time and its overhead against ``unguarded`` (also from the
fastest runs, which noise inflates least), the plain-step overhead, and the extra time of an inspected step,
in full and partial, against the unguarded step. ``--python-costs`` adds the guard's host time per plain step
and the dispatch mode's time per op, measured here. It measures and asserts nothing. Targets (DESIGN.md): at
most 2% at 480p shapes, at most 10% at small shapes.

    python bench/bench_guard_overhead.py --python-costs                  # both shapes, on the GPU
    python bench/bench_guard_overhead.py --shapes small --runs 7 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wanrun.guard import Guard
from wanrun.hooks import NullHooks
from wanrun.pipeline import PipelineConfig, model_summary, run_pipeline
from wanrun.report_file import ReportFile

SHAPES: dict[str, dict[str, Any]] = {
    # Wan-1.3B at 480p: 32,760 tokens, about 0.5 s a forward on an H100
    "480p": {"preset": "wan-1.3b", "size": "832x480", "frames": 81, "steps": 6},
    # the same model at 1,560 tokens: about 30 ms a forward, where per-op Python costs the most
    "small": {"preset": "wan-1.3b", "size": "416x240", "frames": 13, "steps": 50},
}
SETUPS = ("unguarded", "plain", "guard", "saved")


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class TimedHooks(NullHooks):
    """The unguarded baseline: phases drained at their boundaries, steps timed by events read at the end."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._events: list[tuple[Any, Any]] = []
        self._host: list[float] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def step(self, index: int) -> Iterator[None]:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            t0 = time.perf_counter()
            yield
            self._host.append(time.perf_counter() - t0)
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._events.append((start, end))

    def step_seconds(self) -> list[float]:
        _sync()
        return self._host + [s.elapsed_time(e) / 1000.0 for s, e in self._events]


def run_once(cfg: PipelineConfig, setup: str, device: str) -> dict[str, Any]:
    if setup == "unguarded":
        hooks = TimedHooks()
        run_pipeline(cfg, hooks)
        return {"denoise_s": hooks.phases["denoise"], "step_s": hooks.step_seconds()}
    # plain: no inspection at all, not even after a slow step
    plain = {"deep_steps": 0, "deep_every": 0, "slow_factor": float("inf")}
    sampling: dict[str, Any] = plain if setup == "plain" else {}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as folder:
        keeper = ReportFile(Path(folder) / "run.json") if setup == "saved" else None
        with Guard(device, on_progress=keeper.checkpoint if keeper else None, **sampling) as g:
            if keeper is not None:
                keeper.begin(g.snapshot)
            run_pipeline(cfg, g)
        report = g.report
        if keeper is not None:
            keeper.finish(report)
    steps = report.steps
    deep = [s.index for s in steps if s.deep]
    return {
        "denoise_s": report.summary.phases["denoise"],
        "step_s": [s.seconds for s in steps],
        "deep_steps": deep,
        "full_steps": deep[:1],  # the first inspected step sees every forward; later ones the first only
        "findings": [f.rule for f in report.findings],
        "checked": report.summary.checked,
    }


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pct(value: float | None, base: float | None) -> float | None:
    return 100.0 * (value / base - 1.0) if value is not None and base else None


def summarise(
    name: str, shape: dict[str, Any], cfg: PipelineConfig, runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    denoise = {k: _med([r["denoise_s"] for r in v]) for k, v in runs.items()}
    fastest = {k: min(r["denoise_s"] for r in v) for k, v in runs.items()}
    base_step = _med([s for r in runs["unguarded"] for s in r["step_s"]])
    out: dict[str, Any] = {
        "shape": name,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in shape.items()},
        "tokens": model_summary(cfg)["tokens"],
        "steps": cfg.steps,
        "runs": len(runs["unguarded"]),
        "unguarded_denoise_s": denoise["unguarded"],
        "unguarded_step_s": base_step,
    }
    for setup in SETUPS[1:]:
        if setup not in runs:
            continue
        rs = runs[setup]
        plain = [s for r in rs for i, s in enumerate(r["step_s"]) if i not in r["deep_steps"]]
        full = [r["step_s"][i] for r in rs for i in r["full_steps"]]
        partial = [r["step_s"][i] for r in rs for i in r["deep_steps"] if i not in r["full_steps"]]
        out[setup] = {
            "denoise_s": denoise[setup],
            "overhead_pct": _pct(denoise[setup], denoise["unguarded"]),
            "overhead_fastest_pct": _pct(fastest[setup], fastest["unguarded"]),
            "plain_step_s": _med(plain),
            "plain_step_overhead_pct": _pct(_med(plain), base_step),
            "full_deep_step_extra_pct": _pct(_med(full), base_step),
            "partial_deep_step_extra_pct": _pct(_med(partial), base_step),
            "deep_steps": [r["deep_steps"] for r in rs],
            "findings": sorted({f for r in rs for f in r["findings"]}),
        }
    out["runs_raw"] = runs
    return out


def bench_shape(name: str, shape: dict[str, Any], runs: int, device: str, setups: list[str]) -> dict[str, Any]:
    cfg = PipelineConfig(device=device, out=None, **shape)
    for setup in setups:  # warm-up: allocator, kernels, cuDNN choices, the dispatch mode's first use
        run_once(cfg, setup, device)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    for i in range(runs):
        order = setups if i % 2 == 0 else setups[::-1]  # alternate, and reverse, so order effects cancel
        for setup in order:
            results[setup].append(run_once(cfg, setup, device))
    return summarise(name, shape, cfg, results)


# -- the guard's host costs, measured in isolation ---------------------------------------------------------------


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


def hollow_dit() -> torch.nn.Module:
    """The Wan-1.3B module tree on ``meta`` with a forward that does nothing: what is left of a step is the
    guard's own host work (its hooks still run, the forward is replaced per instance)."""
    from wanrun.pipeline.config import PRESETS
    from wanrun.pipeline.model import WanStyleDiT

    with torch.device("meta"):
        tree = WanStyleDiT(PRESETS["wan-1.3b"]).eval()
    tree.forward = lambda *a, **k: None  # type: ignore[method-assign]
    return tree


def seconds_per_step(tree: torch.nn.Module, hooks: Any, n: int = 300) -> float:
    """Host seconds per step of ``n`` steps of two forwards (guidance's pair) under ``hooks``."""
    t0 = time.perf_counter()
    for i in range(n):
        with hooks.step(i):
            tree(None)
            tree(None)
    return (time.perf_counter() - t0) / n


def python_costs(device: str, shape: dict[str, Any]) -> dict[str, Any]:
    """Host time of a plain step (``hollow_dit``) and per op of an inspected forward at ``shape``, against the
    same forward uninspected."""
    from wanrun.guards.casts import CastTracker
    from wanrun.guards.dispatch import DeepSession
    from wanrun.pipeline.config import latent_shape
    from wanrun.pipeline.model import build_dit

    tree = hollow_dit()

    def loop(hooks: Any) -> float:
        return seconds_per_step(tree, hooks)

    base = min(loop(NullHooks()) for _ in range(5))
    per_step = []
    for _ in range(5):
        with Guard(device, nvml=False, deep_steps=0, deep_every=0, slow_factor=1e9) as g:
            g.attach_model(tree, "dit", denoiser=True)
            per_step.append(loop(g))
    _sync()

    cfg = PipelineConfig(device=device, out=None, **shape)
    dit = build_dit(cfg.spec, torch.device(device), torch.bfloat16)
    x = torch.randn((1, *latent_shape(cfg.size, cfg.frames)), device=device)
    t = torch.full((1,), 500.0, device=device)
    ctx = torch.randn(1, cfg.spec.text_len, cfg.spec.text_dim, device=device)

    def forward() -> float:
        _sync()
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            dit(x, t, ctx)
        _sync()
        return time.perf_counter() - t0

    counter = _Count()
    with counter:
        forward()
    plain = min(forward() for _ in range(7))
    inspected = []
    for _ in range(7):
        session = DeepSession([("", "dit", dit)], CastTracker(), device != "cpu")
        session.start()
        try:
            inspected.append(forward())
        finally:
            session.stop()
    return {
        "plain_step_host_us": 1e6 * (min(per_step) - base),
        "ops_per_forward": counter.ops,
        "forward_s": plain,
        "inspected_forward_s": min(inspected),
        "inspected_us_per_op": 1e6 * (min(inspected) - plain) / max(counter.ops, 1),
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'shape':<6} {'tokens':>6} {'steps':>5} {'setup':<6} {'base s':>7} {'guard s':>7} {'overhead':>8} "
          f"{'fastest':>8} {'plain st':>8} {'full deep':>9} {'part deep':>9}")  # fmt: skip
    for r in rows:
        for setup in SETUPS[1:]:
            if setup not in r:
                continue
            g = r[setup]
            print(f"{r['shape']:<6} {r['tokens']:>6} {r['steps']:>5} {setup:<6} {r['unguarded_denoise_s']:>7.3f} "
                  f"{g['denoise_s']:>7.3f} {_fmt(g['overhead_pct']):>8} {_fmt(g['overhead_fastest_pct']):>8} "
                  f"{_fmt(g['plain_step_overhead_pct']):>8} {_fmt(g['full_deep_step_extra_pct']):>9} "
                  f"{_fmt(g['partial_deep_step_extra_pct']):>9}")  # fmt: skip
    for r in rows:
        print(f"{r['shape']}: deep steps per guarded run {r.get('guard', {}).get('deep_steps')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="override the steps of every shape")
    parser.add_argument("--setups", nargs="+", choices=SETUPS[1:], default=list(SETUPS[1:]))
    parser.add_argument("--python-costs", action="store_true", help="also measure the guard's host costs")
    parser.add_argument(
        "--preset", default=None, help="override the model preset of every shape (tiny: a CPU smoke run)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("guard_overhead.json"))
    args = parser.parse_args()

    rows = []
    for name in args.shapes:
        shape = dict(SHAPES[name])
        if args.steps is not None:
            shape["steps"] = args.steps
        if args.preset is not None:
            shape["preset"] = args.preset
        rows.append(bench_shape(name, shape, args.runs, args.device, ["unguarded", *args.setups]))
        print_table(rows[-1:])
    small = {**SHAPES["small"], **({"preset": args.preset} if args.preset else {})}
    costs = python_costs(args.device, small) if args.python_costs else None
    print_table(rows)
    if costs is not None:
        print("host costs: " + ", ".join(f"{k} {v:.4g}" for k, v in costs.items()))
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.json.write_text(json.dumps({"meta": meta, "results": rows, "python_costs": costs}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
