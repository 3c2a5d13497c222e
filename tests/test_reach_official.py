"""The official Wan code (the wan22 wheel) for every task: no code warning unless the run's own choices bring it.

The entry has the official generate.py's shape (tests/wanrepo.py), so the call graph goes from the flags through
the task dispatch into the real pipelines and models. The machine the facts are judged on has flash_attn (as the
official code requires), so what is left is what the code does in this run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wandoc import rulebook
from wandoc.code.probe import probe_repo
from wandoc.engine import evaluate
from wandoc.facts import CodeSite, Facts, PackageFacts, PackagesFacts, RepoFacts

CODE_AREAS = ("CODE", "ATTN", "ENV", "GIT")
# what a run that offloads may be told about the offload it chose
OFFLOAD_RULES = {"ARGS-OFFLOAD-WHERE-MODEL-FITS", "SYS-OFFLOAD-WILL-SWAP", "SYS-RAM-SWAP-TOO-SMALL-FOR-OFFLOAD"}

TASKS = {
    "t2v-A14B": ["--task", "t2v-A14B"],
    "i2v-A14B": ["--task", "i2v-A14B", "--image", "cat.jpg", "--size", "1280*720"],
    "ti2v-5B": ["--task", "ti2v-5B", "--size", "1280*704"],
    "ti2v-5B+image": ["--task", "ti2v-5B", "--size", "1280*704", "--image", "cat.jpg"],
    "s2v-14B": ["--task", "s2v-14B", "--image", "face.jpg", "--audio", "talk.wav"],
    "animate-14B": ["--task", "animate-14B", "--src_root_path", "process_results"],
}


def _probe(official: Path, argv: list[str], offload: bool) -> RepoFacts:
    return probe_repo(official, given_args=[*argv, "--ckpt_dir", "ckpt", "--offload_model", str(offload)], environ={})


def _judged(repo: RepoFacts) -> list:
    with_flash = PackagesFacts(flash_attn=PackageFacts(installed=True, version="2.8.3"))
    return evaluate(rulebook.load(), Facts(repo=repo, packages=with_flash).as_tree())


def _site(repo: RepoFacts, kind: str, file: str, function: str) -> CodeSite:
    found = [s for s in repo.sites if (s.kind, s.file, s.function) == (kind, file, function)]
    assert found, f"no {kind} site in {file} {function}"
    return found[0]


@pytest.mark.parametrize("task", TASKS)
def test_offload_off_no_code_warning(official: Path, task: str) -> None:
    repo = _probe(official, TASKS[task], offload=False)
    assert repo.args_error is None and repo.effective["offload_model"] is False
    assert repo.call_graph.entry == "generate.py" and repo.call_graph.cut is None
    loud = [f for f in _judged(repo) if f.area in CODE_AREAS and f.severity in ("error", "warning")]
    assert loud == [], [f"{f.rule}: {f.message}" for f in loud]


@pytest.mark.parametrize("task", TASKS)
def test_offload_on_only_the_offload(official: Path, task: str) -> None:
    repo = _probe(official, TASKS[task], offload=True)
    assert repo.effective["offload_model"] is True
    loud = [f for f in _judged(repo) if f.severity in ("error", "warning")]
    code = [f for f in loud if f.area in CODE_AREAS and f.rule not in OFFLOAD_RULES]
    assert code == [], [f"{f.rule}: {f.message}" for f in code]


def test_the_pipeline_and_model_each_task_runs(official: Path) -> None:
    for task, (pipeline, model_fwd) in {
        "t2v-A14B": ("WanT2V.generate", "WanSelfAttention.forward"),
        "s2v-14B": ("WanS2V.generate", "WanS2VSelfAttention.forward"),
        "animate-14B": ("WanAnimate.generate", "WanAnimateSelfAttention.forward"),
    }.items():
        repo = _probe(official, TASKS[task], offload=False)
        flash = [s for s in repo.sites if s.kind == "flash_attention_call" and s.function == model_fwd]
        assert flash and flash[0].reach == "forward", task
        assert pipeline in flash[0].via and flash[0].module.endswith("blocks.*.self_attn"), flash[0]
        others = {"t2v-A14B", "s2v-14B", "animate-14B"} - {task}
        for other in others:
            other_fwd = {"t2v-A14B": "WanT2V.generate", "s2v-14B": "WanS2V.generate"}.get(other)
            assert not any(other_fwd in s.via for s in repo.sites if s.reach != "never" and other_fwd), (task, other)
    assert repo.flash_attn_required


def test_i2v_empty_cache_every_step_only_with_offload(official: Path) -> None:
    on = _probe(official, TASKS["i2v-A14B"], offload=True)
    site = _site(on, "empty_cache_in_loop", "wan/image2video.py", "WanI2V.generate")
    assert site.reach == "forward" and "offload_model" in site.chosen_by
    assert "offload_model" in site.conditions
    off = _probe(official, TASKS["i2v-A14B"], offload=False)
    site = _site(off, "empty_cache_in_loop", "wan/image2video.py", "WanI2V.generate")
    assert site.reach == "never" and site.reach_why.startswith("branch false for this run: `offload_model`")


def test_ti2v_runs_i2v_only_with_an_image(official: Path) -> None:
    text_only = _probe(official, TASKS["ti2v-5B"], offload=True)
    site = _site(text_only, "empty_cache_in_loop", "wan/textimage2video.py", "WanTI2V.i2v")
    assert site.reach == "never", site
    with_image = _probe(official, TASKS["ti2v-5B+image"], offload=True)
    site = _site(with_image, "empty_cache_in_loop", "wan/textimage2video.py", "WanTI2V.i2v")
    assert site.reach == "forward" and site.chosen_by == ["offload_model", "task"]


def test_other_tasks_pipelines_never_run(official: Path) -> None:
    repo = _probe(official, TASKS["t2v-A14B"], offload=True)
    s2v = [s for s in repo.sites if s.file == "wan/speech2video.py"]
    assert s2v and all(s.reach == "never" and s.reach_why == "not called from the entry" for s in s2v)
    assert not any(s.reach != "never" for s in repo.sites if s.file.startswith("wan/modules/animate/"))


def test_task_the_script_rejects_is_a_fact(official: Path) -> None:
    repo = probe_repo(official, given_args=["--task", "t2v-1.3B"], environ={})
    assert repo.args_error is not None and "invalid choice: 't2v-1.3B'" in repo.args_error
    assert "choose from 't2v-A14B', 'i2v-A14B', 'ti2v-5B'" in repo.args_error
    size = probe_repo(official, given_args=["--task", "ti2v-5B", "--size", "640*480"], environ={})
    assert size.args_error is not None and "invalid choice: '640*480'" in size.args_error


def test_the_graph_reaches_the_models(official: Path) -> None:
    repo = _probe(official, TASKS["t2v-A14B"], offload=False)
    assert repo.call_graph.model_forwards > 0
    assert not any(f.rule == "CODE-GRAPH-NO-MODEL" for f in _judged(repo))


def test_the_official_rope_is_complex_and_runs_every_step(official: Path) -> None:
    """rope_apply turns q and k complex in every attention call: the fact CODE-COMPILE-COMPLEX-ROPE judges a
    compiled run by; the official code itself compiles nothing, so the rule stays quiet on it."""
    repo = _probe(official, TASKS["t2v-A14B"], offload=False)
    rope = [s for s in repo.sites if s.kind == "complex_rope" and s.file == "wan/modules/model.py"]
    assert rope and any(s.reach == "forward" for s in rope), [(s.function, s.reach) for s in rope]
    assert not any(f.rule == "CODE-COMPILE-COMPLEX-ROPE" for f in _judged(repo))


def test_a_fork_that_compiles_the_official_model_is_told_its_rope_is_complex(official: Path, tmp_path: Path) -> None:
    """The fork users make: one torch.compile line in the official ti2v pipeline. The rule fires there, on the
    compile line, naming the complex rope_apply; the pristine code stays quiet (above)."""
    import shutil

    fork = shutil.copytree(official, tmp_path / "fork")
    pipeline = fork / "wan" / "textimage2video.py"
    text = pipeline.read_text(encoding="utf-8")
    anchor = "            convert_model_dtype=convert_model_dtype)\n"
    assert text.count(anchor) == 1
    pipeline.write_text(text.replace(anchor, anchor + "        self.model = torch.compile(self.model)\n"))
    found = {f.rule: f for f in _judged(_probe(fork, TASKS["ti2v-5B"], offload=False))}
    finding = found["CODE-COMPILE-COMPLEX-ROPE"]
    assert finding.severity == "warning" and "wan/textimage2video.py:" in finding.message
    assert "rope_apply" in finding.message
