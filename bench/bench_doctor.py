"""How long `wandoc check` takes on a Wan-like checkout, against `python -m torch.utils.collect_env`.

Both run as fresh processes, alternating, several times; the table shows medians of wall time and of CPU time
(user + system, which load from other processes disturbs less). It measures and asserts nothing.

The children run as an installed package does: with bytecode, which a warm-up run writes into a temporary
folder whatever PYTHONDONTWRITEBYTECODE says here (--bytecode-as-is keeps this environment's setting, e.g. a
source checkout that compiles the doctor's modules on every run). WANDOC_* settings are left out. Run it under
`taskset -c 0,1` to see a 2-core machine on a larger one.

The official code (the wan22 wheel's ``wan`` package with the tests' generate.py-shaped entry, a ti2v-5B run) is
timed too, and with ``--fork DIR --script wgp.py`` a fork's checkout (read only, never run). ``--src DIR`` times
another copy of wandoc's source (e.g. a git worktree of an older commit) instead of this one; ``--baseline DIR``
times that copy as well, run for run beside this one (each case's runs interleaved), for before/after figures
taken under the same load.

Usage: python bench/bench_doctor.py [--runs 7] [--json out.json] [--bytecode-as-is] [--fork DIR --script S]
       [--src DIR] [--baseline DIR] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import wanrepo  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def child_env(tmp: Path, bytecode: bool, src: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WANDOC_")}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    env["XDG_CACHE_HOME"] = env["LOCALAPPDATA"] = str(tmp / "cache")  # whatever a library caches, away from the user's
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--bytecode-as-is", action="store_true", help="keep this environment's bytecode setting")
    parser.add_argument("--fork", type=Path, help="a fork's checkout to time `wandoc check --repo` on")
    parser.add_argument("--script", default="generate.py", help="the fork's entry script")
    parser.add_argument("--src", type=Path, help="time this copy of wandoc's source instead (PYTHONPATH)")
    parser.add_argument("--baseline", type=Path, help="also time this copy of wandoc's source, interleaved")
    parser.add_argument("--only", action="append", default=[], help="time only the cases whose name contains this")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        story = wanrepo.make_founding_story_repo(Path(tmp))
        env = child_env(Path(tmp), bytecode=not args.bytecode_as_is, src=args.src)
        check = [sys.executable, "-m", "wandoc", "check", "--fail-on", "never"]
        cases: dict[str, tuple[list[str], Path]] = {
            "wandoc check": (check, story.checkout),
            "wandoc check --compare well": ([*check, "--compare", "well"], story.checkout),
            "python -m torch.utils.collect_env": ([sys.executable, "-m", "torch.utils.collect_env"], story.checkout),
        }
        wheel = wanrepo.fetch_wan22_wheel()
        if wheel is not None:
            official = wanrepo.make_official_checkout(wheel, Path(tmp) / "official")
            run = ["--", "--task", "ti2v-5B", "--size", "1280*704", "--ckpt_dir", "ckpt", "--offload_model", "False"]
            cases["wandoc check (official wan22, ti2v-5B)"] = ([*check, "--repo", str(official), *run], Path(tmp))
        if args.fork is not None:
            fork = [*check, "--repo", str(args.fork.resolve()), "--script", args.script]
            cases[f"wandoc check (fork {args.fork.name}, --script {args.script})"] = (fork, Path(tmp))
        if args.only:
            cases = {k: v for k, v in cases.items() if any(o in k for o in args.only)}
        envs = {name: env for name in cases}
        if args.baseline is not None:
            base_env = child_env(Path(tmp), bytecode=not args.bytecode_as_is, src=args.baseline)
            for name, case in list(cases.items()):
                if "wandoc" in name:
                    cases[f"{name} [baseline]"] = case
                    envs[f"{name} [baseline]"] = base_env
            cases = dict(sorted(cases.items(), key=lambda kv: kv[0].removesuffix(" [baseline]")))
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for name, (cmd, cwd) in cases.items():
            timed(cmd, cwd, envs[name])  # warm the file cache and the bytecode once
        for _ in range(args.runs):
            for name, (cmd, cwd) in cases.items():
                wall, cpu = timed(cmd, cwd, envs[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()}: {cpu_model()}, {cores} cores usable, Python {platform.python_version()}",
        "cores": cores,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "bytecode": "as is" if args.bytecode_as_is else "written by the warm-up run",
        "source": str(args.src) if args.src else "this checkout",
        "baseline": str(args.baseline) if args.baseline else None,
        "runs": args.runs,
        "median_s": {name: round(statistics.median(v), 3) for name, v in walls.items()},
        "min_s": {name: round(min(v), 3) for name, v in walls.items()},
        "cpu_median_s": {name: round(statistics.median(v), 3) for name, v in cpus.items()},
        "wall_s": {name: [round(x, 3) for x in v] for name, v in walls.items()},
        "cpu_s": {name: [round(x, 3) for x in v] for name, v in cpus.items()},
    }
    print(result["machine"])
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; bytecode: {result['bytecode']}")
    print(f"{'command':60s} {'median s':>9s} {'min s':>7s} {'cpu s':>7s}")
    for name in cases:
        print(
            f"{name:60s} {result['median_s'][name]:9.3f} {result['min_s'][name]:7.3f} "
            f"{result['cpu_median_s'][name]:7.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
