"""However a run ends, its report is there and says how: signals, repeated Ctrl-C, SIGKILL, a script's os._exit, a
script's leftover threads, a script that patches what the runner cleans up with, a parent that dies.

Runs that receive signals are ``wanrun`` processes (tests/limits.py: a memory limit and a timeout each), on the
built-in pipeline (no doctor: the cheapest start) or on a two-file checkout whose script does the hostile thing.
"""

from __future__ import annotations

import builtins
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from limits import WANRUN, child_env, start_limited
from torch import nn

from wandoc.metrics import Report
from wanrun.cli import main

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

PIPE_PY = '''\
"""A Wan-shaped pipeline small enough for a CPU: one WanModel, a flow scheduler, a short sleep per step."""
import time

import torch
from torch import nn


class WanModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 8))

    def forward(self, x, t):
        return self.blocks(x)


class FlowUniPCMultistepScheduler:
    def set_timesteps(self, n):
        self.timesteps = torch.linspace(1000, 0, n)

    def step(self, noise, t, x):
        time.sleep(0.02)
        return x - 0.1 * noise


def generate(steps):
    model, sched = WanModel(), FlowUniPCMultistepScheduler()
    sched.set_timesteps(steps)
    x = torch.randn(2, 8)
    for t in sched.timesteps:
        x = sched.step(model(x, t) - model(x, t), t, x)
    return x
'''


def checkout(tmp_path: Path, script: str) -> Path:
    """A folder the doctor takes for a Wan checkout (WanModel on the script's import path), running ``script``."""
    repo = tmp_path / "co"
    repo.mkdir()
    (repo / "pipe.py").write_text(PIPE_PY)
    (repo / "generate.py").write_text(textwrap.dedent(script))
    return repo


def summary(path: Path) -> dict:
    return json.loads(path.read_text())["summary"]


class Lines:
    """A child's stdout and stderr, read on a thread so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            try:
                line = self._q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"{needle!r} never came; output so far:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the run ended before {needle!r}:\n{self.text}")
            self.text += line

    def rest(self) -> str:
        while (line := self._q.get(timeout=30)) is not None:
            self.text += line
        return self.text


def generate(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Lines]:
    proc = start_limited([*WANRUN, "generate", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, Lines(proc)


def finish(proc: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


BUILTIN = ("--preset", "tiny", "--steps", "400", "--out", "c.npy", "--report", "r.json")


def test_sigterm_then_quick_ctrl_c_end_the_run_with_the_whole_report(tmp_path: Path) -> None:
    """A scheduler's SIGTERM stops the run like a Ctrl-C and the report says so; two impatient Ctrl-C right after
    must not break the report the first signal asked for. During the run the file already holds the steps judged
    so far, marked partial. (SIGHUP takes the same path: test_the_console_close_event_stops_the_run_like_a_signal.)"""
    proc, out = generate(tmp_path, *BUILTIN)
    out.wait_for(" 4/400 done")
    during = summary(tmp_path / "r.json")
    assert during["partial"] is True and during["ended_by"] is None and during["steps"] >= 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
        proc.send_signal(sig)
        time.sleep(0.02)
    assert finish(proc) == 143
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    s = report.summary
    assert (s.partial, s.ended_by, s.interrupted) == (False, "SIGTERM", True)
    assert 4 <= s.steps == len(report.steps) < 400 and "denoise" in s.phases
    assert "interrupted (SIGTERM)" in out.rest() and "Traceback" not in out.text


def test_sigkill_loses_at_most_the_step_in_flight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, out = generate(tmp_path, *BUILTIN)
    out.wait_for(" 8/400 done")
    proc.send_signal(signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    report = tmp_path / "r.json"
    s = summary(report)
    assert s["partial"] is True and s["ended_by"] is None
    assert s["steps"] >= 7  # step 8 was printed once judged; its save may still have been under way
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.json.")]  # no temp file left
    # the partial report is an ordinary report: it can be read and compared
    assert main(["report", str(report)]) == 0
    assert "partial report: saved while the run went on and never finished" in capsys.readouterr().out
    assert main(["compare", str(report), str(report)]) == 0


def test_a_script_that_calls_os_exit_gets_its_whole_report(tmp_path: Path) -> None:
    """os._exit skips every cleanup; the runner writes the report first and the process exits as asked. A child
    the script forks and ends with os._exit owns no report and writes none."""
    repo = checkout(tmp_path, """\
        import os
        import pipe

        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        pipe.generate(3)
        os._exit(7)
        """)  # fmt: skip
    proc, out = generate(tmp_path, "--repo", str(repo), "-q", "--report", "r.json")
    assert finish(proc) == 7
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    s = report.summary
    assert (s.partial, s.ended_by, s.steps) == (False, "os._exit", 3)
    assert s.error == "generate.py ended the process with os._exit(7)" and report.run.args["script_exit_code"] == 7
    assert "generate.py ended the process with os._exit(7); report: r.json" in out.rest()


def test_threads_a_script_leaves_running_do_not_keep_wanrun_alive(tmp_path: Path) -> None:
    repo = checkout(tmp_path, """\
        import threading
        import time

        import pipe

        threading.Thread(target=time.sleep, args=(3600,), name="forever").start()
        pipe.generate(3)
        """)  # fmt: skip
    proc, out = generate(tmp_path, "--repo", str(repo), "-q", "--report", "r.json")
    assert finish(proc, timeout=90) == 0
    s = summary(tmp_path / "r.json")
    assert (s["partial"], s["ended_by"], s["steps"]) == (False, "finished", 3)
    assert "the script left 1 thread(s) running (forever); ended the process after 5 s" in out.rest()


PATCHER = """\
import io
import os
import shutil
import tempfile

import torch.utils.hooks

import pipe


def broken(*args, **kwargs):
    raise RuntimeError("patched by the script")


os.replace = os.rename = os.unlink = os.remove = os.chdir = shutil.move = tempfile.mkstemp = broken
torch.utils.hooks.RemovableHandle.remove = broken
pipe.generate(3)
os.open = os.write = os.stat = os.lstat = os.mkdir = io.open = broken
"""


def test_a_script_that_patches_the_runners_tools_still_gets_a_report(tmp_path: Path, monkeypatch) -> None:
    """The runner's file writes and hook removal use the functions taken before the script ran: the report is
    written and nothing of the runner stays installed, whatever the script did to os, io, shutil and torch."""
    import io
    import shutil
    import tempfile

    import torch.utils.hooks

    patched = (
        (os, ("replace", "rename", "unlink", "remove", "chdir", "open", "write", "stat", "lstat", "mkdir")),
        (shutil, ("move",)), (tempfile, ("mkstemp",)), (io, ("open",)),
        (torch.utils.hooks.RemovableHandle, ("remove",)),
    )  # fmt: skip
    saved = {(mod, name): getattr(mod, name) for mod, names in patched for name in names}
    for (mod, name), value in saved.items():
        monkeypatch.setattr(mod, name, value)  # put back after the test, whatever the script did
    repo = checkout(tmp_path, PATCHER)
    imp, cwd = builtins.__import__, os.getcwd()
    code = main(["generate", "--repo", str(repo), "-q", "--report", str(tmp_path / "r.json")])
    assert os.replace is not saved[(os, "replace")]  # the script's patch is in place: the runner did not need it
    for (mod, name), value in saved.items():
        setattr(mod, name, value)
    assert code == 0
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert report.summary.steps == 3 and report.summary.ended_by == "finished" and report.summary.error is None
    assert builtins.__import__ is imp and os.getcwd() == cwd
    assert not nn.modules.module._global_forward_pre_hooks and not nn.modules.module._global_forward_hooks
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.json.")]


def test_ctrl_c_while_the_guard_starts_is_an_interrupted_run(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C during the load (here: while the guard warms up, before the first step) is reported as interrupted,
    not as a clean run of no steps."""
    import wanrun.guard as guard_module

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(guard_module, "warm_up", interrupted)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--preset", "tiny", "--steps", "3", "-q", "--out", "c.npy", "--report", "r.json"]) == 130
    s = summary(tmp_path / "r.json")
    assert (s["interrupted"], s["ended_by"], s["partial"], s["steps"]) == (True, "KeyboardInterrupt", False, 0)


PARENT = """\
import sys
from pathlib import Path

from wandoc.judge import RunJudge

repo, report, log = (Path(a) for a in sys.argv[1:4])
RunJudge(repo)._call(["generate", "--repo", str(repo), "-q", "--report", str(report)], repo, log)
"""

SWALLOWER = """\
import os
import time

import pipe

pipe.generate(2)
open("pid", "w").write(str(os.getpid()))
while True:
    try:
        time.sleep(3600)
    except KeyboardInterrupt:
        print("swallowed", flush=True)
"""


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_ends_with_the_parent_that_started_it(tmp_path: Path) -> None:
    """``wandoc bisect`` killed with SIGKILL: its run stops, and, when the script swallows the stop, leaves at
    once after the grace with the report saved in haste."""
    repo = checkout(tmp_path, SWALLOWER)
    (tmp_path / "parent.py").write_text(PARENT)
    report, log = tmp_path / "r.json", tmp_path / "run.log"
    parent = start_limited([sys.executable, str(tmp_path / "parent.py"), str(repo), str(report), str(log)],
                           env=child_env())  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (repo / "pid").exists() and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
        child = int((repo / "pid").read_text())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 60
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(child), "the run outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
    s = summary(report)
    assert (s["partial"], s["ended_by"], s["steps"]) == (True, "parent process ended", 2)
    text = log.read_text()
    assert "swallowed" in text and "parent process ended: left at once" in text


CONSOLE = """\
import os
import signal
import threading
import time

from wanrun.ending import Ending, StopRequest

# as a run started from a terminal has it: under nohup (CI, a background job) SIGHUP comes in ignored, and the
# run rightly leaves an ignored signal alone
signal.signal(signal.SIGHUP, signal.SIG_DFL)
with Ending():  # a closed terminal
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(60)
    except StopRequest as exc:
        print("stopped:", exc.reason, exc.exit_code, flush=True)
hasty = []
ending = Ending(haste=hasty.append)
with ending:
    threading.Timer(0.2, lambda: print("close event handled:", ending._console_event(2), flush=True)).start()
    try:
        time.sleep(60)
    except StopRequest as exc:
        print("stopped:", exc.reason, exc.exit_code, flush=True)
    time.sleep(0.1)
    ending.done()
    time.sleep(0.2)
print("Ctrl-C left to Python's signals:", not ending._console_event(0), "saved in haste:", hasty)
os.name = "nt"  # as on Windows without a console library: setting the handler must not raise
ending._set_console_handler(True)
print("import-safe")
"""


def test_the_console_close_event_stops_the_run_like_a_signal(tmp_path: Path) -> None:
    """Windows calls the console handler on a thread of its own when the window closes; the run stops as on a
    signal, in time for its report. Driven here by calling the handler as Windows would."""
    from limits import LIGHT_MEMORY, run_limited

    proc = run_limited([sys.executable, "-c", CONSOLE], timeout=60, memory=LIGHT_MEMORY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "stopped: SIGHUP 129",
        "stopped: console closed 129",
        "close event handled: True",
        "Ctrl-C left to Python's signals: True saved in haste: []",
        "import-safe",
    ]


NOHUP = """\
import os
import signal
import time

from wanrun.ending import Ending

signal.signal(signal.SIGHUP, signal.SIG_IGN)  # started under nohup
with Ending():
    os.kill(os.getpid(), signal.SIGHUP)  # the terminal closes
    time.sleep(0.3)
    print("still running", flush=True)
print("still ignored:", signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
"""


def test_a_run_started_under_nohup_outlives_its_terminal() -> None:
    """SIGHUP that came in ignored stays ignored: the user asked for the run to survive a closed terminal."""
    from limits import LIGHT_MEMORY, run_limited

    proc = run_limited([sys.executable, "-c", NOHUP], timeout=60, memory=LIGHT_MEMORY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["still running", "still ignored: True"]


def test_rank_zero_waits_for_a_rank_whose_part_is_still_a_checkpoint(tmp_path: Path) -> None:
    """Under torchrun each rank saves its part as it goes; rank 0 must merge the finished parts, not a checkpoint
    it happens to find first, and say so when a rank only ever left a checkpoint (killed)."""
    from wandoc.metrics import StepMetrics, Summary
    from wanrun.ranks import gather, part_path

    report = tmp_path / "run.json"

    def part(steps: int, partial: bool) -> Report:
        return Report(steps=[StepMetrics(index=i) for i in range(steps)], summary=Summary(partial=partial))

    part_path(report, 1).write_text(part(2, partial=True).to_json())
    later = threading.Timer(0.5, lambda: part_path(report, 1).write_text(part(5, partial=False).to_json()))
    later.start()
    merged = gather(part(5, partial=False), report, 0, 2, wait=30)
    later.join()
    assert merged is not None and len([s for s in merged.steps if s.process_rank == 1]) == 5
    assert not any("saved mid-run" in n for n in merged.summary.not_checked)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the parts are removed; the caller writes run.json

    part_path(report, 1).write_text(part(2, partial=True).to_json())  # a rank killed mid-run
    merged = gather(part(5, partial=False), report, 0, 2, wait=0.5)
    assert merged is not None and len([s for s in merged.steps if s.process_rank == 1]) == 2
    assert "rank(s) 1 left only a report saved mid-run (killed?): their last steps are missing" in (
        merged.summary.not_checked
    )


def test_the_report_file_saves_in_haste_but_never_over_the_finished_report(tmp_path: Path) -> None:
    from wandoc.metrics import StepMetrics
    from wanrun.report_file import ReportFile

    path = tmp_path / "r.json"
    steps: list[StepMetrics] = []
    built = [0]

    def snapshot() -> Report:
        built[0] += 1
        return Report(steps=list(steps))

    keeper = ReportFile(path, budget=0.0)  # no time for checkpoints: only the first goes through
    keeper.begin(snapshot)
    assert summary(path)["steps"] == 0 and built == [1]
    steps.append(StepMetrics(index=0))
    keeper.checkpoint()
    steps.append(StepMetrics(index=1))
    keeper.checkpoint()
    assert built == [2]  # the second checkpoint was skipped: saving had used its budget
    assert keeper.emergency("SIGTERM")
    saved = Report.model_validate_json(path.read_text())
    assert (saved.summary.partial, saved.summary.ended_by, len(saved.steps)) == (True, "SIGTERM", 2)

    finished = ReportFile(path)
    finished.begin(snapshot)
    finished.finish(Report(steps=list(steps)))
    assert not finished.emergency("SIGINT")  # a late signal cannot replace the finished report
    assert summary(path)["partial"] is False and summary(path)["ended_by"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
