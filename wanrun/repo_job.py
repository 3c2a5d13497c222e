"""``wanrun generate --repo``: the doctor first, then the user's script under the guards, then one report.

The report is complete whatever the script does: its exit code and exception (with where it happened), the
steps that ran, the doctor's findings, and the file it wrote.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from wandoc.engine import Finding, Rule
from wandoc.metrics import Report, RunInfo

if TYPE_CHECKING:
    from wanrun.report_file import ReportFile
    from wanrun.targets import Targets

EXIT_FINDINGS, EXIT_FAILED, EXIT_INTERRUPTED = 1, 3, 130


class RepoUsageError(ValueError):
    """The checkout or script cannot be run: one line for the user, exit 2."""


@dataclass
class RepoJob:
    repo: Path
    script: str
    args: list[str]
    rules: list[Rule]
    targets: Targets
    device: str = "auto"
    strict: bool = False
    deep_every: int | None = None
    quiet: bool = False
    doctor: bool = True


def rank_info() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun sets RANK and WORLD_SIZE)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def run_repo_job(
    job: RepoJob, console: Console, keeper: ReportFile | None = None
) -> tuple[int, Report, Finding | None]:
    """Exit code, report, and the finding that stopped a strict run. With ``keeper`` the report is on disk before
    the script starts and after each judged step (``wanrun.report_file``), and written whole if the script ends
    the process with ``os._exit``."""
    from wanrun.doctor import examine, not_a_checkout

    repo = job.repo.resolve()
    if not repo.is_dir():
        raise RepoUsageError(f"--repo {job.repo}: no such folder")
    if not (repo / job.script).is_file():
        raise RepoUsageError(f"--script {job.script}: no such file in {repo}")
    verdict = examine(repo, job.script, job.args, job.rules)
    problem = not_a_checkout(verdict.facts)
    if problem is not None:
        raise RepoUsageError(f"--repo {job.repo}: {problem}")
    rank, world = rank_info()
    if job.doctor and not job.quiet and rank == 0:
        _show_doctor(console, verdict.findings, verdict.rules_evaluated)

    import torch

    from wanrun.guard import Guard, resolve_device
    from wanrun.live import LiveView
    from wanrun.repo_run import RepoRunner

    device = resolve_device(job.device)
    if job.device == "auto" and device.type == "cuda" and world > 1:  # torchrun: each rank drives its own GPU
        local = os.environ.get("LOCAL_RANK", "0")
        device = torch.device("cuda", int(local) if local.isdigit() else 0)
    run = RunInfo(
        pipeline="repo",
        args={"repo": str(repo), "script": job.script, "argv": job.args, "rank": rank, "world_size": world},
    )
    view = LiveView(console, quiet=job.quiet or rank != 0, total=0, gpu=device.type != "cpu",
                    waiting=f"running {job.script}; the first step's time gives the ETA…")  # fmt: skip
    sampling: dict[str, Any] = {} if job.deep_every is None else {"deep_every": job.deep_every, "deep_budget": None}
    guard = Guard(device, job.rules, strict=job.strict, on_finding=view.on_finding, on_step=view.on_step, run=run,
                  on_progress=keeper.checkpoint if keeper is not None else None, **sampling)  # fmt: skip
    runner = RepoRunner(repo, job.script, job.args, guard, job.targets, on_total=lambda n: setattr(view, "total", n))

    def with_job(report: Report) -> Report:
        """The guard's report, with what the doctor said and how the script ran."""
        report.doctor = list(verdict.findings)
        report.run.args = {**report.run.args, "script_exit_code": runner.outcome.exit_code,
                           "denoiser_found_by": runner.outcome.found_by, "imported": list(runner.imported)}  # fmt: skip
        git = verdict.facts.git
        if git.is_repo:
            report.run.args["git"] = {"commit": git.commit, "branch": git.branch, "dirty": git.dirty}
        return report

    def os_exit(status: int, main_thread: bool) -> None:
        """The script is ending the process: close the run as well as the moment allows, and write it."""
        with contextlib.suppress(BaseException):
            view.__exit__(None, None, None)
        if main_thread:  # the script's own code is on hold: the guard can judge what is left
            guard.__exit__(None, None, None)
            report = with_job(guard.report)
        else:  # the main thread may be anywhere: the steps judged so far, marked partial
            report = with_job(guard.snapshot())
            report.summary.partial, report.summary.ended_by = True, "os._exit"
        if keeper is not None:
            keeper.finish(report)
        where = f"; report: {keeper.path}" if keeper is not None else ""
        _say(f"{job.script} ended the process with os._exit({status}){where}")

    runner.on_os_exit = os_exit
    if keeper is not None:
        try:
            keeper.begin(lambda: with_job(guard.snapshot()))
        except OSError as exc:
            raise RepoUsageError(f"cannot write the report {keeper.path}: {exc.strerror or exc}") from None
    with view, guard:
        outcome = runner.run()
    report = with_job(guard.report)
    if outcome.stopped is not None:
        return EXIT_FINDINGS, report, outcome.stopped.finding
    if outcome.interrupted:
        return outcome.exit_code or EXIT_INTERRUPTED, report, None
    if guard.error is not None:
        return EXIT_FAILED, report, None
    return 0, report, None


def _say(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"wanrun: {message}\n")
        sys.stderr.flush()


def _show_doctor(console: Console, findings: list[Finding], evaluated: int) -> None:
    """The doctor's verdict before the first step, marked as `wandoc check` marks it."""
    from rich.text import Text

    from wandoc.render.text import counts_line, print_finding

    console.print(Text("doctor", style="bold").append(f" ({evaluated} rules): {counts_line(findings)}", style=""))
    for f in findings:
        print_finding(console, f, evidence=False)
    console.print()
