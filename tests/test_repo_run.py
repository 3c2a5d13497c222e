"""``wanrun generate --repo``: a user's own Wan checkout, run in-process under the guards, on the CPU.

The checkout (tests/runnable_wan.py) runs the official WanModel and FlowUniPCMultistepScheduler at a tiny size.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from runnable_wan import RunnableRepo
from torch import nn

from wandoc.metrics import Report
from wanrun.cli import main
from wanrun.guard import Guard
from wanrun.repo_run import RepoRunner
from wanrun.targets import Targets, TargetsError, load_targets


def wanrun(*args: str) -> int:
    return main(list(args))


def load(path: Path) -> Report:
    return Report.model_validate(json.loads(path.read_text()))


def test_fast_checkout_runs_under_the_guards(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    repo = runnable.checkout_at("fast", tmp_path / "wan")
    out_file = tmp_path / "clip.npy"
    argv0, cwd, path0, imp = sys.argv[:], os.getcwd(), sys.path[:], builtins.__import__
    code = wanrun("generate", "--repo", str(repo), "--report", str(tmp_path / "r.json"), "--",
                  *runnable.args("--save_file", str(out_file), steps=3))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = load(tmp_path / "r.json")
    # one step is one scheduler step: both CFG forwards and the update
    assert len(report.steps) == 3 and [s.forwards for s in report.steps] == [2, 2, 2]
    assert report.run.pipeline == "repo" and report.run.denoiser == "WanModel"
    assert report.run.steps_total == 3 and report.run.args["script_exit_code"] == 0
    assert report.run.args["denoiser_found_by"] == "class WanModel"
    assert [p.name for p in report.phases] == ["load", "encode", "encode", "denoise", "decode", "save"]
    assert report.summary.output == str(out_file) and report.summary.output_bytes == out_file.stat().st_size > 0
    assert report.summary.error is None
    # the doctor ran first and its findings travel with the report (the tiny checkpoint is fp32)
    assert "ARGS-FP32-DIT-WITHOUT-CONVERT" in {f.rule for f in report.doctor}
    assert "doctor (" in out
    # nothing of the run is left in this process
    assert (sys.argv, os.getcwd(), sys.path, builtins.__import__) == (argv0, cwd, path0, imp)
    assert not nn.modules.module._global_forward_pre_hooks
    assert not any(name == "wan" or name.startswith("wan.") for name in sys.modules)


def test_a_second_run_imports_its_own_commit(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    """Two checkouts of the same package name in one process: each run must execute its own code."""
    fast = runnable.checkout_at("fast", tmp_path / "fast")
    slow = runnable.checkout_at(runnable.slow_attention, tmp_path / "slow")
    for name, repo in (("fast", fast), ("slow", slow)):
        code = wanrun("generate", "--repo", str(repo), "-q", "--report", str(tmp_path / f"{name}.json"), "--",
                      *runnable.args("--size", "128*128", steps=4))  # fmt: skip
        # the slow commit's attention is an error before launch (ATTN-SDPA-MATH-ONLY): the run's exit says so
        assert code == (1 if name == "slow" else 0), capsys.readouterr().out
    a, b = load(tmp_path / "fast.json"), load(tmp_path / "slow.json")
    assert not [f for f in a.verdict if f.severity == "error"]
    assert {f.rule for f in b.doctor if f.severity == "error"} >= {"ATTN-SDPA-MATH-ONLY"}
    # each run imported its own checkout's files (a stale `wan` from the first run would import nothing)
    for report, ref in ((a, runnable.fast), (b, runnable.slow_attention)):
        assert "wan/modules/attention.py" in report.run.args["imported"]
        assert report.run.args["git"] == {"commit": ref, "branch": "", "dirty": False}


def test_script_failure_exits_3_with_the_report(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    repo = runnable.checkout_at("fast", tmp_path / "wan")
    (repo / "wan" / "modules" / "t5.py").write_text("raise ImportError('sentencepiece is missing')\n")
    code = wanrun("generate", "--repo", str(repo), "-q", "--report", str(tmp_path / "r.json"), "--",
                  *runnable.args())  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "ImportError: sentencepiece is missing" in err and "t5.py" in err and "Traceback" not in err
    report = load(tmp_path / "r.json")
    assert report.summary.error.startswith("ImportError") and report.run.args["script_exit_code"] == 1


def test_script_exit_status_is_kept(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    repo = runnable.checkout_at("fast", tmp_path / "wan")
    code = wanrun("generate", "--repo", str(repo), "-q", "--report", str(tmp_path / "r.json"))  # no --ckpt_dir
    assert code == 3
    report = load(tmp_path / "r.json")
    assert report.run.args["script_exit_code"] == 1 and "--ckpt_dir is required" in report.summary.error
    assert "--ckpt_dir is required" in capsys.readouterr().err


def test_strict_stops_the_users_run(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    repo = runnable.checkout_at("fast", tmp_path / "wan")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "TEST-STEP.toml").write_text(
        'id = "TEST-STEP"\ntitle = "step one"\nseverity = "error"\nscope = "step"\nwhen = "step.index >= 1"\n'
        'message = "step {step.index}"\n'
    )
    code = wanrun("generate", "--repo", str(repo), "-q", "--strict", "--rules", str(rules),
                  "--report", str(tmp_path / "r.json"), "--", *runnable.args(steps=4))  # fmt: skip
    assert code == 1
    report = load(tmp_path / "r.json")
    assert len(report.steps) == 2 and report.summary.output is None
    assert "stopped by --strict at step 1: TEST-STEP" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo", "{tmp}/nowhere"], "--repo {tmp}/nowhere: no such folder"),
        (["--repo", "{repo}", "--script", "missing.py"], "--script missing.py: no such file"),
        (["--repo", "{tmp}"], "--script generate.py: no such file"),
        (["--repo", "{repo}", "--steps", "3"], "--steps belongs to the built-in pipeline"),
        (["--", "--task", "t2v-A14B"], "arguments after -- go to a checkout's script"),
    ],
)
def test_bad_input_is_one_line(runnable: RunnableRepo, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    subs = {"{tmp}": str(tmp_path), "{repo}": str(runnable.root)}
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    for k, v in subs.items():
        message = message.replace(k, v)
    code = wanrun("generate", *argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_not_a_wan_checkout(tmp_path: Path, capsys) -> None:
    (tmp_path / "generate.py").write_text("print('hello')\n")
    code = wanrun("generate", "--repo", str(tmp_path))
    assert code == 2
    assert "does not look like a Wan checkout" in capsys.readouterr().err


# -- the runner's parts, on small scripts ---------------------------------------------------------------------

TWO_EXPERTS = '''\
"""A Wan2.2 A14B-shaped pipeline: two experts, a switch at a boundary timestep, a flow scheduler."""
import torch
from torch import nn


class WanModel(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(8, width), nn.Linear(width, 8))

    def forward(self, x, t):
        return self.blocks(x)


class FlowUniPCMultistepScheduler:
    def set_timesteps(self, n):
        self.timesteps = torch.linspace(1000, 0, n)

    def step(self, noise, t, x):
        return x - 0.1 * noise


class Pipeline:
    def __init__(self):
        self.high_noise_model = WanModel(16)
        self.low_noise_model = WanModel(16)

    def generate(self, steps):
        sched = FlowUniPCMultistepScheduler()
        sched.set_timesteps(steps)
        x = torch.randn(2, 8)
        for t in sched.timesteps:
            model = self.high_noise_model if t > 500 else self.low_noise_model
            noise = model(x, t) - model(x, t)
            x = sched.step(noise, t, x)
        return x
'''


def run_script(tmp_path: Path, source: str, args: list[str], targets: Targets) -> tuple[Guard, RepoRunner]:
    """``job.py`` imports the pipeline module, as a checkout's generate.py imports ``wan``."""
    (tmp_path / "pipe.py").write_text(textwrap.dedent(source))
    (tmp_path / "job.py").write_text("import sys\n\nimport pipe\n\npipe.Pipeline().generate(int(sys.argv[1]))\n")
    guard = Guard("cpu", nvml=False)
    runner = RepoRunner(tmp_path, "job.py", args, guard, targets)
    with guard:
        runner.run()
    return guard, runner


def test_both_experts_are_denoisers_named_by_their_attribute(tmp_path: Path) -> None:
    guard, runner = run_script(tmp_path, TWO_EXPERTS, ["6"], load_targets())
    report = guard.report
    assert runner.outcome.exit_code == 0 and runner.outcome.found_by == "class WanModel"
    assert len(report.steps) == 6 and [s.forwards for s in report.steps] == [2] * 6
    attached = {a.name for a in guard._models}
    assert attached == {"high_noise_model", "low_noise_model"}
    assert report.run.model_weight_bytes == 2 * sum(p.numel() * 4 for p in nn.Sequential(
        nn.Linear(8, 16), nn.Linear(16, 8)).parameters())  # fmt: skip


def test_a_renamed_denoiser_is_found_by_size(tmp_path: Path) -> None:
    """A fork that renamed WanModel: the largest module called during one scheduler step is the denoiser."""
    targets = load_targets().model_copy(update={"denoisers": []})
    guard, runner = run_script(tmp_path, TWO_EXPERTS.replace("WanModel", "MyDiT"), ["6"], targets)
    assert runner.outcome.found_by == "size"
    steps = guard.report.steps
    assert [s.index for s in steps] == [2, 3, 4, 5] and all(s.forwards == 2 for s in steps)


def test_exceptions_inside_a_step_close_it(tmp_path: Path) -> None:
    source = TWO_EXPERTS.replace("return x - 0.1 * noise", "raise RuntimeError('CUDA out of memory')")
    guard, runner = run_script(tmp_path, source, ["3"], load_targets())
    assert runner.outcome.exit_code == 1 and "RuntimeError: CUDA out of memory" in runner.outcome.error
    assert len(guard.report.steps) == 1 and guard._open is None


def test_targets_files_merge_and_bad_ones_are_named(tmp_path: Path) -> None:
    (tmp_path / "targets.toml").write_text('denoisers = ["MyDiT"]\n[phases]\ndecode = ["MyVAE.decode"]\n')
    merged = load_targets([tmp_path])
    assert {"WanModel", "MyDiT"} <= set(merged.denoisers) and "MyVAE.decode" in merged.phases["decode"]
    assert "Wan2_1_VAE.decode" in merged.phases["decode"]
    (tmp_path / "targets.toml").write_text('denoiser = ["MyDiT"]\n')
    with pytest.raises(TargetsError, match=r"targets\.toml: denoiser"):
        load_targets([tmp_path])


# -- several processes ----------------------------------------------------------------------------------------

DISTRIBUTED_JOB = """\
import sys

import torch.distributed as dist

import pipe

dist.init_process_group(backend="gloo")
x = pipe.Pipeline().generate(int(sys.argv[1]))
dist.all_reduce(x)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_ranks_merge_into_one_report(tmp_path: Path) -> None:
    """Each rank guards itself; rank 0 merges the reports with rank tags and removes the parts."""
    import shutil
    import subprocess

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    (tmp_path / "pipe.py").write_text(TWO_EXPERTS)
    (tmp_path / "job.py").write_text(DISTRIBUTED_JOB)
    report = tmp_path / "out" / "run.json"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "wanrun", "generate", "--repo", str(tmp_path),
         "--script", "job.py", "-q", "--report", str(report), "--", "4"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = load(report)
    assert sorted({s.process_rank for s in merged.steps}) == [0, 1]
    assert len(merged.steps) == 8 and merged.run.args["ranks_merged"] == [0, 1]
    assert merged.run.args["world_size"] == 2
    assert sorted(p.name for p in report.parent.iterdir()) == ["run.json"]
    assert proc.stdout.count("steps in") == 1  # one summary, from rank 0


def test_objects_in_sys_modules_that_import_on_attribute_access(tmp_path: Path) -> None:
    """Some packages (Cython's ``cimports``) put objects in sys.modules whose ``__getattr__`` imports: looking at
    them must not start an import from inside the runner's own import hook."""
    (tmp_path / "shadow.py").write_text(
        textwrap.dedent("""\
        import sys

        class Shadow:
            def __getattr__(self, name):
                __import__("json")
                return Shadow()

        sys.modules["shadow_cimports"] = Shadow()
    """)
    )
    source = "import shadow\n" + TWO_EXPERTS
    guard, runner = run_script(tmp_path, source, ["3"], load_targets())
    assert runner.outcome.exit_code == 0, runner.outcome.error
    assert len(guard.report.steps) == 3
    sys.modules.pop("shadow_cimports", None)


def test_ctrl_c_in_the_users_loop_keeps_a_partial_report(tmp_path: Path) -> None:
    source = TWO_EXPERTS.replace(
        "        return x - 0.1 * noise",
        "        if float(t) < 500:\n            raise KeyboardInterrupt\n        return x - 0.1 * noise",
    )
    before = builtins.__import__
    guard, runner = run_script(tmp_path, source, ["6"], load_targets())
    assert runner.outcome.interrupted and runner.outcome.exit_code == 130
    assert 0 < len(guard.report.steps) < 6 and guard._open is None and guard.report.summary.interrupted
    assert builtins.__import__ is before and not nn.modules.module._global_forward_pre_hooks


@pytest.mark.parametrize("how", ["torch.compile(model)", "model.compile()"])
def test_a_compiled_denoiser_runs_under_the_guards(runnable: RunnableRepo, tmp_path: Path, capsys, how: str) -> None:
    """A fork that compiles its DiT: the run goes through (the guard's hooks stay out of dynamo's way), the steps
    are the scheduler's, and what dynamo compiled is counted per step."""
    import torch

    repo = runnable.checkout_at("fast", tmp_path / "wan")
    t2v = repo / "wan" / "text2video.py"
    compiled = {
        "torch.compile(model)": 'self.model = torch.compile(self.model, backend="eager")',
        "model.compile()": 'self.model.compile(backend="eager")',
    }[how]
    source = t2v.read_text().replace(
        "        self.model.eval().requires_grad_(False)\n",
        f"        self.model.eval().requires_grad_(False)\n        {compiled}\n",
    )
    t2v.write_text(source)
    torch._dynamo.reset()
    code = wanrun("generate", "--repo", str(repo), "--report", str(tmp_path / "r.json"), "--",
                  *runnable.args(steps=3))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = load(tmp_path / "r.json")
    assert [s.forwards for s in report.steps] == [2, 2, 2] and report.run.compiled
    assert report.steps[0].compiles and report.steps[0].compiles >= 1
    assert report.summary.error is None


def test_the_doctors_findings_count_in_the_runs_verdict(runnable: RunnableRepo, tmp_path: Path, capsys) -> None:
    """A checkout whose attention the doctor calls an error before launch: the run's counts, exit code and
    `wanrun report` say so (it used to end "0 errors" and exit 0), and --fail-on is respected."""
    slow = runnable.checkout_at(runnable.slow_attention, tmp_path / "slow")
    args = ["generate", "--repo", str(slow), "--report", str(tmp_path / "r.json")]
    code = wanrun(*args, "--", *runnable.args("--size", "128*128", steps=2))
    out = capsys.readouterr().out
    assert code == 1, out
    report = load(tmp_path / "r.json")
    errors = [f for f in report.verdict if f.severity == "error"]
    assert errors and all(f in report.doctor for f in errors)  # the guards found no error: the doctor did
    counts = next(line for line in out.splitlines() if line.startswith(f"{len(errors)} error"))
    assert "before launch" in counts and "0 errors" not in out
    code = wanrun(*args, "--fail-on", "never", "-q", "--", *runnable.args("--size", "128*128", steps=2))
    assert code == 0, capsys.readouterr().out
    assert wanrun("report", str(tmp_path / "r.json")) == 0
    shown = capsys.readouterr().out
    assert "Before launch (wandoc check)" in shown and "ATTN-SDPA-MATH-ONLY" in shown
    assert f"{len(errors)} error" in shown and "before launch" in shown
