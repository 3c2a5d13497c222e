"""How long `wandoc check` takes on a Wan-like checkout, against `python -m torch.utils.collect_env`.

Both run as fresh processes, alternating, several times; the table shows medians. It measures and asserts
nothing. Usage: python bench/bench_doctor.py [--runs 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
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


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        story = wanrepo.make_founding_story_repo(Path(tmp))
        cases = {
            "wandoc check": [sys.executable, "-m", "wandoc", "check", "--fail-on", "never"],
            "wandoc check --compare well": [
                sys.executable,
                "-m",
                "wandoc",
                "check",
                "--compare",
                "well",
                "--fail-on",
                "never",
            ],
            "python -m torch.utils.collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for cmd in cases.values():
            timed(cmd, story.checkout)  # warm the file cache once
        for _ in range(args.runs):
            for name, cmd in cases.items():
                times[name].append(timed(cmd, story.checkout))
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "runs": args.runs,
        "median_s": {name: round(statistics.median(v), 3) for name, v in times.items()},
        "min_s": {name: round(min(v), 3) for name, v in times.items()},
    }
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s}")
    for name in cases:
        print(f"{name:40s} {result['median_s'][name]:9.3f} {result['min_s'][name]:7.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
