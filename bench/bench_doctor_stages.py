"""Where the CPU time of one ``wandoc check`` goes: imports, each probe, the rule files, and inside the code probe
its parses and walks. It measures and asserts nothing.

Each run is a fresh process (bytecode written by a warm-up run, as an installed package has it) that wraps the
stage functions with CPU clocks of the thread that runs them (``time.thread_time``), so a probe running in a
thread is charged to itself. Stages nest: "code probe" holds "parse", "syntax compile" and "quick imports", and
parses happen inside whichever step first needs the file. The table gives the median of the runs.

Usage: python bench/bench_doctor_stages.py --repo DIR [--script S] [--runs 7] [--src DIR] [--json out.json] -- ARGS
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# (module, function, stage): wrapped in the child; a stage may collect several functions
STAGES = [
    ("wandoc.code.probe", "probe_repo", "code probe"),
    ("wandoc.code.parse", "_parse", "  parse (full syntax trees)"),
    ("wandoc.code.probe", "syntax_error", "  syntax compile (files not parsed)"),
    ("wandoc.code.parse", "_quick_imports", "  quick imports (import lines only)"),
    ("wandoc.code.probe", "_judged", "  call graph walks (with the parses they start)"),
    ("wandoc.code.probe", "find_sites", "  site scans (with the parses they start)"),
    ("wandoc.code.probe", "all_env_reads", "  env reads (with the parses they start)"),
    ("wandoc.rulebook", "load", "rule files"),
    ("wandoc.probes.gpu", "probe_nvml", "other probes"),
    ("wandoc.probes.system", "probe_system", "other probes"),
    ("wandoc.probes.amd", "probe_amd", "other probes"),
    ("wandoc.probes.torch_build", "probe_torch", "other probes"),
    ("wandoc.probes.packages", "probe_packages", "other probes"),
    ("wandoc.probes.git_compare", "probe_git", "other probes"),
    ("wandoc.probes.platform", "probe_platform", "other probes"),
    ("wandoc.probes.checkpoints", "probe_checkpoints", "other probes"),
    ("wandoc.engine", "evaluate", "evaluate the rules"),
    ("wandoc.render.text", "print_check", "render"),
]
IMPORTS = "imports (wandoc and its libraries)"
TOTAL = "total (process CPU)"


def child(argv: list[str]) -> None:
    """One ``wandoc check`` with clocks around the stages; prints the stage times (ms) as JSON on stderr."""
    import atexit
    import importlib
    import threading

    start = time.process_time()
    spent: dict[str, float] = {}
    import wandoc.cli as cli

    for module, _, _ in STAGES:
        importlib.import_module(module)
    spent[IMPORTS] = time.process_time() - start
    depth: dict[tuple[str, int], int] = {}  # per stage and thread: probes run side by side

    def wrap(mod: object, name: str, stage: str) -> None:
        fn = getattr(mod, name)

        def clocked(*args: object, **kwargs: object) -> object:
            key = (stage, threading.get_ident())
            outer = depth.get(key, 0) == 0  # recursion and nested calls are charged once
            depth[key] = depth.get(key, 0) + 1
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[key] -= 1
                if outer:
                    spent[stage] = spent.get(stage, 0.0) + time.thread_time() - t

        setattr(mod, name, clocked)

    for module, name, stage in STAGES:
        wrap(sys.modules[module], name, stage)

    def report() -> None:
        spent[TOTAL] = time.process_time()
        print(json.dumps({k: round(v * 1000, 1) for k, v in spent.items()}), file=sys.stderr)

    atexit.register(report)
    cli.main(argv)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    args_at = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--script", default="generate.py")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--src", type=Path, help="time this copy of wandoc's source instead (PYTHONPATH)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(sys.argv[1:args_at])
    run_args = sys.argv[args_at + 1 :]
    check = ["check", "--fail-on", "never", "--repo", str(args.repo.resolve()), "--script", args.script]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WANDOC_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        if args.src is not None:
            env["PYTHONPATH"] = str(args.src)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *check, "--", *run_args]
        runs: list[dict[str, float]] = []
        load_before = os.getloadavg()
        for i in range(args.runs + 1):  # the first writes the bytecode
            done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, check=False)
            line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "{}"
            if i:
                runs.append(json.loads(line))
        load_after = os.getloadavg()
    stages = [IMPORTS, *dict.fromkeys(stage for _, _, stage in STAGES), TOTAL]
    medians = {s: round(statistics.median(r.get(s, 0.0) for r in runs), 1) for s in stages}
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "source": str(args.src) if args.src else "this checkout",
        "repo": str(args.repo),
        "script": args.script,
        "args": run_args,
        "runs": args.runs,
        "cpu_ms_median": medians,
        "cpu_ms": runs,
    }
    print(f"{'stage':52s} {'CPU ms':>8s}")
    for s in stages:
        print(f"{s:52s} {medians[s]:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
