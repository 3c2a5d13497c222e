"""Several processes (``torchrun --nproc_per_node=N -m wanrun generate --repo ...``): one report for the run.

Each rank guards itself and writes its report beside the requested one (``run.rank1.json``); rank 0 waits for the
others, merges them with rank tags into the requested file, and removes the parts. Files, not a collective: the
script may have torn its process group down by the time the guards are done, and a rank that crashed must not
hang the others (rank 0 waits a bounded time and says which ranks it did not hear from).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import ValidationError

from wandoc.atomic import write_text_atomic
from wandoc.metrics import Report

WAIT_SECONDS = 300.0


def part_path(report: Path, rank: int) -> Path:
    return report.with_name(f"{report.stem}.rank{rank}{report.suffix or '.json'}")


def merge(parts: dict[int, Report], world: int) -> Report:
    """Rank 0's report, with every rank's steps and findings tagged by rank, and the ranks not heard from."""
    base = parts[min(parts)].model_copy(deep=True)
    steps, findings = [], []
    for rank in sorted(parts):
        steps += [s.model_copy(update={"process_rank": rank}) for s in parts[rank].steps]
        findings += [f.model_copy(update={"process_rank": rank}) for f in parts[rank].findings]
    base.steps = sorted(steps, key=lambda s: (s.index, s.process_rank))
    base.findings = findings
    base.run.args["world_size"] = world
    base.run.args["ranks_merged"] = sorted(parts)
    missing = [r for r in range(world) if r not in parts]
    if missing:
        base.summary.not_checked.append(f"no report from rank(s) {', '.join(map(str, missing))}")
    errors = [f"rank {r}: {p.summary.error}" for r, p in sorted(parts.items()) if p.summary.error and r != 0]
    if errors and base.summary.error is None:
        base.summary.error = "; ".join(errors)
    return base


def gather(own: Report, report: Path, rank: int, world: int, wait: float = WAIT_SECONDS) -> Report | None:
    """Write this rank's part; on rank 0, wait for the others and return the merged report (parts removed).
    A part saved while its rank was still running (``summary.partial``) is waited on; one still partial at the
    deadline (a rank killed mid-run) is merged as it is, and the summary says so."""
    mine = part_path(report, rank)
    write_text_atomic(mine, own.to_json())
    if rank != 0:
        return None
    parts: dict[int, Report] = {}
    deadline = time.monotonic() + wait
    while True:
        for r in range(world):
            path = part_path(report, r)
            if (r not in parts or parts[r].summary.partial) and path.is_file():
                try:
                    parts[r] = Report.model_validate_json(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, ValidationError):
                    continue  # being written (atomic rename makes this rare): read it on the next pass
        finished = [r for r, p in parts.items() if not p.summary.partial]
        if len(finished) == world or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for r in parts:
        part_path(report, r).unlink(missing_ok=True)
    merged = merge(parts, world)
    partial = sorted(r for r, p in parts.items() if p.summary.partial)
    if partial:
        merged.summary.not_checked.append(
            f"rank(s) {', '.join(map(str, partial))} left only a report saved mid-run (killed?): "
            "their last steps are missing"
        )
    return merged
