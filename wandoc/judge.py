"""Judge one commit by a short guarded run: ``wanrun generate`` on it, ``wanrun compare`` against the baseline.

Both are separate processes on purpose: the doctor never imports the guard side (it works without torch), and a
run that crashes, hangs on a GPU or is interrupted takes only its own process down. The contract used here is
the public one: ``wanrun generate --repo DIR --script S --report R.json --quiet -- ARGS`` exits 0 (clean),
1 (findings), 2 (bad input), 3 (the generation failed) or 130 (interrupted); ``wanrun compare A B`` exits 1
when B got worse than A (a per-step median past the threshold, or findings A lacks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wandoc.bisect import Candidate, Judgement, Verdict
from wandoc.bounded import FileRefused, load_json
from wandoc.metrics import step_median

# -P: the runs start in the checkout, whose own modules (a wanrun/, rich.py, json.py) must not shadow the
# runner's; the runner puts the script's folder on the path itself, as python generate.py would
WANRUN: tuple[str, ...] = (sys.executable, "-P", "-m", "wanrun")
STEPS_FLAG = "--sample_steps"  # Wan's generate.py
SAVE_FLAG = "--save_file"
EXIT_INTERRUPTED = 130
STOP_GRACE_S = 5.0
PARENT_FD_ENV = "WANRUN_PARENT_FD"  # wanrun's contract: the read end of a pipe from the parent (wanrun.ending)
LOG_TAIL = 64 << 10


def with_steps(args: Sequence[str], steps: int | None) -> list[str]:
    """``args`` with Wan's ``--sample_steps`` set to ``steps`` (replaced where given, else appended)."""
    out = list(args)
    if steps is None:
        return out
    for i, a in enumerate(out):
        if a == STEPS_FLAG and i + 1 < len(out):
            out[i + 1] = str(steps)
            return out
        if a.startswith(STEPS_FLAG + "="):
            out[i] = f"{STEPS_FLAG}={steps}"
            return out
    return [*out, STEPS_FLAG, str(steps)]


def _rebase(value: str, user_checkout: Path, checkout: Path) -> str:
    """A relative path that exists in the user's checkout but not in the worktree (checkpoints, inputs that git
    does not track) is made absolute, so the run finds what it finds when the user runs it."""
    p = Path(value)
    if not value or value.startswith("-") or p.is_absolute():
        return value
    try:
        if (checkout / p).exists() or not (user_checkout / p).exists():
            return value
    except (OSError, ValueError):  # a prompt is no path: too long a name, a NUL, ...
        return value
    return str((user_checkout / p).resolve())


def run_args(args: Sequence[str], user_checkout: Path, checkout: Path, save_to: Path) -> list[str]:
    """The user's generate.py arguments for a run in the worktree: paths rebased, the output kept in scratch."""
    out: list[str] = []
    it = iter(args)
    for a in it:
        if a == SAVE_FLAG:
            old = next(it, "")
            out += [a, str(save_to.with_suffix(Path(old).suffix or ".mp4"))]
        elif a.startswith(SAVE_FLAG + "="):
            out.append(f"{SAVE_FLAG}={save_to.with_suffix(Path(a.split('=', 1)[1]).suffix or '.mp4')}")
        elif a.startswith("--") and "=" in a:
            flag, value = a.split("=", 1)
            out.append(f"{flag}={_rebase(value, user_checkout, checkout)}")
        else:
            out.append(_rebase(a, user_checkout, checkout))
    return out


def _read(report: Path) -> dict[str, Any]:
    try:
        data = load_json(report)
    except FileRefused:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(log: Path, limit: int = LOG_TAIL) -> str:
    """The end of a run's output (a script may print gigabytes; the verdict needs the last lines)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - limit, 0))
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _median_step(report: dict[str, Any]) -> float | None:
    """The median step time as ``wanrun compare`` reads it (``wandoc.metrics.step_median``), from the JSON."""
    steps = report.get("steps")
    timed = [(s.get("seconds"), bool(s.get("deep"))) for s in steps if isinstance(s, dict)] if (
        isinstance(steps, list)
    ) else []  # fmt: skip
    return step_median(timed)[0]


def _rules(report: dict[str, Any]) -> set[str]:
    """The warnings and errors of a run, the doctor's included, as ``wanrun compare`` counts them."""
    found = [f for key in ("doctor", "findings") if isinstance(report.get(key), list) for f in report[key]]
    return {f["rule"] for f in found if isinstance(f, dict) and "rule" in f and f.get("severity") != "info"}


def summary(report: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """One line such as ``1.8 s/step, 2 new findings``, read from the reports' JSON (the public schema)."""
    median = _median_step(report)
    parts = [f"{median:.3g} s/step" if median is not None else "no steps timed"]
    if base is not None:
        new = _rules(report) - _rules(base)
        parts.append(f"{len(new)} new finding{'s' * (len(new) != 1)}" if new else "no new findings")
    return ", ".join(parts)


def _reason(log: Path) -> str:
    """Why a run failed, from its output: wanrun's own one-line message, else the last line."""
    lines = [line.strip() for line in _tail(log).splitlines()]
    said = [line for line in lines if line.startswith("wanrun: ")]
    return said[-1] if said else next((line for line in reversed(lines) if line), "")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a run we are abandoning, so no orphan keeps the GPU: a Ctrl-C in the terminal reached it too, so
    give it a moment to stop on its own, then terminate it, then kill it."""
    for send in (lambda: None, proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        try:
            send()
            proc.wait(timeout=STOP_GRACE_S)
        except (subprocess.TimeoutExpired, OSError):
            continue


class RunJudge:
    """Judges a commit by running it under wanrun and comparing with the good ref's run."""

    def __init__(
        self,
        user_checkout: Path,
        args: Sequence[str] = (),
        script: str = "generate.py",
        steps: int | None = None,
        threshold: float | None = None,
        wanrun: Sequence[str] | None = None,
    ) -> None:
        self.user_checkout = user_checkout
        self.args = with_steps(args, steps)
        self.script = script
        self.threshold = threshold
        self.wanrun = list(wanrun or WANRUN)
        self.base: Path | None = None

    def _call(self, args: Sequence[str], cwd: Path, log: Path) -> int:
        """Run wanrun and wait for it. The run gets the read end of a pipe whose write end only this process
        holds: if this process dies, even by SIGKILL, the run reads end-of-file and stops (wanrun.ending), so no
        orphan keeps the GPU. (PR_SET_PDEATHSIG would be Linux-only and fires when the forking thread ends.)"""
        watch_r, watch_w = os.pipe() if os.name == "posix" else (-1, -1)
        env = {**os.environ, PARENT_FD_ENV: str(watch_r)} if watch_r >= 0 else None
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen([*self.wanrun, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, pass_fds=(watch_r,) if watch_r >= 0 else ())  # fmt: skip
                if watch_r >= 0:
                    os.close(watch_r)
                    watch_r = -1
                try:
                    code = proc.wait()
                except BaseException:
                    _stop(proc)
                    raise
        finally:
            for fd in (watch_r, watch_w):
                if fd >= 0:
                    os.close(fd)
        if code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        return code

    def __call__(self, cand: Candidate) -> Judgement:
        name = cand.sha[:12]
        report = cand.scratch / f"{name}.json"
        log = cand.scratch / f"{name}.log"
        args = run_args(self.args, self.user_checkout, cand.checkout, cand.scratch / f"{name}-out")
        generate = ["generate", "--repo", str(cand.checkout), "--script", self.script, "--report", str(report)]
        code = self._call([*generate, "--quiet", "--", *args], cand.checkout, log)
        if code not in (0, 1) or not report.is_file():
            why = {2: "bad input", 3: "the generation failed"}.get(code, f"exit {code}")
            reason = _reason(log)
            return Judgement(
                Verdict.SKIP, f"did not run ({why})", f"wanrun generate: {why}{' (' + reason + ')' if reason else ''}"
            )
        data = _read(report)
        if cand.baseline:
            self.base = report
            return Judgement(Verdict.GOOD, summary(data), "baseline")
        if self.base is None:
            return Judgement(Verdict.SKIP, "not compared", "no baseline: the good ref is judged first")
        compare = ["compare", str(self.base), str(report)]
        if self.threshold is not None:
            compare += ["--threshold", str(self.threshold)]
        clog = cand.scratch / f"{name}.compare.log"
        code = self._call(compare, cand.checkout, clog)
        text = _tail(clog).rstrip()
        line = summary(data, _read(self.base))
        if code == 0:
            return Judgement(Verdict.GOOD, line, text)
        if code == 1:
            return Judgement(Verdict.BAD, line, text)
        return Judgement(Verdict.SKIP, f"not compared (wanrun compare exit {code})", text or f"exit {code}")
