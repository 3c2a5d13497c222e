"""Multi-GPU facts: the process count torchrun gives the run, Wan's parallel arguments, and the checks on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wanrepo import make_simple_wan_repo

from wandoc.cli import main
from wandoc.code.probe import probe_repo
from wandoc.facts import GpuFacts, NvmlFacts, RepoFacts
from wandoc.probes import gpu
from wandoc.probes.parallel import divisors_up_to, heads_for_task, probe_parallel

# Wan2.1's generate.py as far as the doctor reads it: the multi-GPU arguments, the task list, and the world-size
# logic (the offload default and the assertions) in the official shape.
WAN21_GENERATE = """\
import argparse
import os

import torch.distributed as dist

import wan
from wan.configs import WAN_CONFIGS
from wan.utils.utils import str2bool


def _parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", type=str, default="t2v-14B",
                        choices=["t2v-14B", "t2v-1.3B", "i2v-14B", "t2i-14B", "flf2v-14B", "vace-1.3B", "vace-14B"])
    parser.add_argument("--size", type=str, default="1280*720")
    parser.add_argument("--ckpt_dir", type=str, default=None)
    parser.add_argument("--offload_model", type=str2bool, default=None)
    parser.add_argument("--ulysses_size", type=int, default=1)
    parser.add_argument("--ring_size", type=int, default=1)
    parser.add_argument("--t5_fsdp", action="store_true", default=False)
    parser.add_argument("--t5_cpu", action="store_true", default=False)
    parser.add_argument("--dit_fsdp", action="store_true", default=False)
    parser.add_argument("--prompt", type=str, default=None)
    return parser.parse_args()


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
    if world_size > 1:
        dist.init_process_group(backend="nccl", init_method="env://", rank=rank, world_size=world_size)
    else:
        assert not (args.t5_fsdp or args.dit_fsdp)
        assert not (args.ulysses_size > 1 or args.ring_size > 1)
    if args.ulysses_size > 1 or args.ring_size > 1:
        assert args.ulysses_size * args.ring_size == world_size
    cfg = WAN_CONFIGS[args.task]
    if args.ulysses_size > 1:
        assert cfg.num_heads % args.ulysses_size == 0
    return wan.WanT2V(cfg, args.ckpt_dir, rank=rank, t5_cpu=args.t5_cpu)


if __name__ == "__main__":
    generate(_parse_args())
"""


@pytest.fixture(scope="module")
def wan21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_simple_wan_repo(tmp_path_factory.mktemp("wan21"))
    (root / "generate.py").write_text(WAN21_GENERATE, encoding="utf-8")
    return root


def _nvml(count: int, visible: list[int] | None = None) -> NvmlFacts:
    gpus = [GpuFacts(index=i, name="NVIDIA H100 80GB HBM3") for i in range(count)]
    return NvmlFacts(available=True, gpu_count=count, gpus=gpus, visible_indices=visible)


def _repo(**effective: object) -> RepoFacts:
    return RepoFacts(found=True, effective=dict(effective))


# -- the heads of each task ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "heads"),
    [
        ("t2v-A14B", 40), ("i2v-A14B", 40), ("ti2v-5B", 24), ("s2v-14B", 40), ("animate-14B", 40),
        ("t2v-14B", 40), ("t2v-1.3B", 12), ("i2v-14B", 40), ("flf2v-14B", 40), ("vace-1.3B", 12), ("vace-14B", 40),
    ],
)  # fmt: skip
def test_official_tasks_have_their_configs_heads(task: str, heads: int) -> None:
    assert heads_for_task(task) == (heads, f"official config of {task}")


def test_wan22_configs_agree_with_the_table(official: Path) -> None:
    """The head counts in the wan22 package's own configs, read as text (importing them needs torch)."""
    import re

    for cfg in (official / "wan" / "configs").glob("wan_*.py"):
        text = cfg.read_text(encoding="utf-8")
        name = re.search(r"^(\w+) = EasyDict", text, re.M)
        heads = re.search(r"^\w+\.num_heads = (\d+)", text, re.M)
        assert name and heads, cfg
        task = name.group(1).replace("_", "-", 1).replace("_", ".")  # t2v_A14B -> t2v-A14B, ti2v_5B -> ti2v-5B
        assert heads_for_task(task)[0] == int(heads.group(1)), task


def test_a_forks_task_name_is_judged_by_its_size_and_says_so() -> None:
    assert heads_for_task("t2v-myfork-14B") == (40, "model size 14B in the task name")
    assert heads_for_task("custom-1.3b") == (12, "model size 1.3B in the task name")
    assert heads_for_task("my-video-model") == (None, "")
    assert heads_for_task(None) == (None, "")
    assert heads_for_task("") == (None, "")


def test_ulysses_sizes_are_the_divisors_that_fit() -> None:
    assert divisors_up_to(40, None) == [2, 4, 5, 8, 10, 20, 40]
    assert divisors_up_to(40, 8) == [2, 4, 5, 8]
    assert divisors_up_to(12, 8) == [2, 3, 4, 6]
    assert divisors_up_to(24, 1) == []


# -- the process count -----------------------------------------------------------------------------------


def test_no_world_size_is_unknown_not_one() -> None:
    p = probe_parallel({}, _repo(task="t2v-A14B", ulysses_size=8, dit_fsdp=True, t5_fsdp=True), _nvml(8))
    assert p.world_size is None and p.world_size_from == ""
    assert p.local_world_size is None
    assert p.requested and p.sp_size == 8 and p.dit_fsdp and p.t5_fsdp
    assert p.error is None


def test_under_torchrun() -> None:
    env = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "x"}
    p = probe_parallel(env, _repo(task="t2v-A14B", ulysses_size=8), _nvml(8))
    assert (p.world_size, p.world_size_from) == (8, "torchrun")
    assert (p.local_world_size, p.local_world_size_from) == (8, "LOCAL_WORLD_SIZE")
    assert (p.heads, p.ulysses_choices, p.visible_gpus) == (40, [2, 4, 5, 8], 8)


def test_world_size_exported_by_hand_is_taken_as_one_machine() -> None:
    p = probe_parallel({"WORLD_SIZE": " 4 "}, _repo(), _nvml(8))
    assert (p.world_size, p.world_size_from) == (4, "WORLD_SIZE")
    assert (p.local_world_size, p.local_world_size_from) == (4, "WORLD_SIZE, one machine")


def test_two_machines_count_the_processes_of_this_one() -> None:
    env = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "TORCHELASTIC_RUN_ID": "x"}
    p = probe_parallel(env, _repo(task="t2v-14B", ulysses_size=8, ring_size=2), _nvml(8))
    assert (p.world_size, p.local_world_size, p.sp_size) == (16, 8, 16)


@pytest.mark.parametrize("value", ["eight", "", "0", "-2"])
def test_an_unreadable_world_size_is_an_error_not_a_guess(value: str) -> None:
    p = probe_parallel({"WORLD_SIZE": value}, _repo(ulysses_size=2), _nvml(2))
    assert p.world_size is None and p.local_world_size is None
    assert p.error and "WORLD_SIZE" in p.error


def test_a_broken_environment_becomes_an_error() -> None:
    class Broken(dict):
        def get(self, *_: object) -> str:
            raise RuntimeError("environment unreadable")

    p = probe_parallel(Broken(), _repo(), _nvml(1))
    assert p.error and "environment unreadable" in p.error


# -- the arguments ---------------------------------------------------------------------------------------


def test_wan22_has_no_ring_size() -> None:
    p = probe_parallel({}, _repo(task="ti2v-5B", ulysses_size=4), _nvml(4))
    assert (p.ulysses_size, p.ring_size, p.sp_size) == (4, None, 4)


def test_single_gpu_run_requests_nothing() -> None:
    p = probe_parallel({}, _repo(task="t2v-1.3B", ulysses_size=1, ring_size=1, dit_fsdp=False), _nvml(1))
    assert not p.requested and p.sp_size == 1 and p.ulysses_choices == []


def test_ring_size_alone_requests_several_processes() -> None:
    p = probe_parallel({}, _repo(task="t2v-14B", ulysses_size=1, ring_size=2), _nvml(2))
    assert p.requested and p.sp_size == 2


def test_values_of_the_wrong_type_are_unknown() -> None:
    p = probe_parallel({}, _repo(task=7, ulysses_size="x", ring_size=True, dit_fsdp="yes"), _nvml(2))
    assert (p.task, p.heads, p.ulysses_size, p.ring_size, p.sp_size, p.dit_fsdp) == ("", None, None, None, None, False)
    assert not p.requested


def test_no_checkout_means_no_arguments() -> None:
    p = probe_parallel({"WORLD_SIZE": "2"}, RepoFacts(), NvmlFacts())
    assert p.world_size == 2 and p.ulysses_size is None and not p.requested and p.visible_gpus is None


@pytest.mark.parametrize(
    ("nvml", "visible"),
    [(NvmlFacts(), None), (_nvml(4), 4), (_nvml(4, [1, 3]), 2), (_nvml(4, []), 0)],
)
def test_visible_gpus_follow_cuda_visible_devices(nvml: NvmlFacts, visible: int | None) -> None:
    assert probe_parallel({}, _repo(), nvml).visible_gpus == visible


def test_through_the_code_probe(wan21: Path) -> None:
    """generate.py's own arguments, parsed the way it parses them, and its offload default for the world size."""
    args = ["--task", "t2v-1.3B", "--ulysses_size", "4", "--ring_size", "2", "--dit_fsdp", "--t5_cpu"]
    env = {"WORLD_SIZE": "8"}
    repo = probe_repo(wan21, "generate.py", args, env)
    assert repo.args_error is None
    assert repo.effective["offload_model"] is False  # the official default under several processes
    p = probe_parallel(env, repo, _nvml(8))
    assert (p.task, p.heads, p.ulysses_size, p.ring_size, p.sp_size) == ("t2v-1.3B", 12, 4, 2, 8)
    assert p.dit_fsdp and not p.t5_fsdp and p.requested


# -- the doctor, end to end ------------------------------------------------------------------------------


def _check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    try:
        main(["check", "--format", "json", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture
def eight_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with eight GPUs and no parallel settings of its own in the environment."""
    monkeypatch.setattr(gpu, "probe_nvml", lambda environ: _nvml(8))
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)


GIVEN = ["--task", "t2v-14B", "--ulysses_size", "3", "--dit_fsdp", "--t5_fsdp", "--ckpt_dir", "ckpts"]


def test_check_ulysses_size_against_heads(wan21: Path, eight_gpus: None, capsys) -> None:
    code, report = _check(["--repo", str(wan21), "--", *GIVEN], capsys)
    assert code == 1
    findings = {f["rule"]: f for f in report["findings"]}
    heads = findings["ARGS-ULYSSES-HEADS"]
    assert heads["severity"] == "error"
    assert "--ulysses_size 3 does not divide the 40 attention heads of t2v-14B" in heads["message"]
    assert "2, 4, 5, 8" in heads["message"]
    assert "torchrun --nproc_per_node=2 generate.py --task t2v-14B ... --ulysses_size 2" in heads["fix"]
    # the process count is not known outside torchrun: nothing is said about it, and the summary says so
    assert not {"ARGS-PARALLEL-WITHOUT-TORCHRUN", "ARGS-ULYSSES-WORLD-MISMATCH"} & set(findings)
    assert any("WORLD_SIZE is not set" in s for s in report["summary"]["not_checked"])
    assert report["facts"]["parallel"]["world_size"] is None


def test_check_under_a_world_size_of_4(wan21: Path, eight_gpus: None, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, report = _check(["--repo", str(wan21), "--", *GIVEN, "--offload_model", "True"], capsys)
    assert code == 1
    rules = {f["rule"] for f in report["findings"]}
    assert {"ARGS-ULYSSES-HEADS", "ARGS-ULYSSES-WORLD-MISMATCH", "ARGS-OFFLOAD-WITH-SEVERAL-GPUS"} <= rules
    assert "ARGS-WORLD-EXCEEDS-GPUS" not in rules
    assert any("world size 4 (WORLD_SIZE)" in line for line in report["summary"]["checked"])


def test_check_a_plain_single_process(wan21: Path, eight_gpus: None, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    _, report = _check(["--repo", str(wan21), "--", "--task", "t2v-14B", "--ulysses_size", "8", "--dit_fsdp"], capsys)
    found = {f["rule"]: f for f in report["findings"]}
    assert "ARGS-PARALLEL-WITHOUT-TORCHRUN" in found
    assert (
        "torchrun --nproc_per_node=8 generate.py --task t2v-14B --ulysses_size 8 --dit_fsdp"
        in found["ARGS-PARALLEL-WITHOUT-TORCHRUN"]["fix"]
    )
    assert "ARGS-ULYSSES-HEADS" not in found  # 8 divides 40


def test_check_more_processes_than_gpus(wan21: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu, "probe_nvml", lambda environ: _nvml(4, [0, 1]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "wan")
    _, report = _check(["--repo", str(wan21), "--", "--task", "t2v-14B", "--ulysses_size", "4", "--t5_fsdp",
                        "--t5_cpu"], capsys)  # fmt: skip
    found = {f["rule"]: f for f in report["findings"]}
    exceeds = found["ARGS-WORLD-EXCEEDS-GPUS"]
    assert "4 processes on this machine (LOCAL_WORLD_SIZE)" in exceeds["message"]
    assert "CUDA_VISIBLE_DEVICES=0,1" in exceeds["message"]
    assert "torchrun --nproc_per_node=2 generate.py ... --ulysses_size 2" in exceeds["fix"]
    assert "ARGS-T5-CPU-WITH-FSDP" in found
    assert "ARGS-ULYSSES-WORLD-MISMATCH" not in found
