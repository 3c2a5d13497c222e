"""Branch comparison through git: on-path vs off-path differences, each side's facts, and a working tree left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import run_wandoc
from wanrepo import (
    FAST_ATTENTION_PY,
    SLOW_ATTENTION_PY,
    SLOW_KINDS,
    SLOW_KINDS_HERE,
    FoundingStory,
    commit_all,
    git,
    make_simple_wan_repo,
    write_files,
)

from wandoc import rulebook
from wandoc.code.imports import walk_source
from wandoc.code.source import FsSource
from wandoc.engine import evaluate
from wandoc.facts import Facts
from wandoc.probes.git_compare import GitSource, probe_git, probe_ref


def _state(root: Path) -> tuple[str, str, str, str]:
    return (
        git(root, "rev-parse", "HEAD"),
        git(root, "status", "--porcelain", "--untracked-files=all"),
        git(root, "worktree", "list", "--porcelain"),
        git(root, "stash", "list"),
    )


def test_the_slow_commit_against_the_fast_branch(story: FoundingStory) -> None:
    before = _state(story.well_app)
    facts = probe_git(story.well_checkout, story.slow_sha, given_args=[])
    assert facts.available and facts.is_repo and facts.compare_error is None
    assert facts.branch == "well" and facts.root == str(story.well_app) and not facts.dirty
    assert facts.changed_on_path == ["wan/modules/attention.py"]
    assert facts.changed_off_path == ["diag_gpu.py"]
    attention = next(c for c in facts.changed if c.path == "wan/modules/attention.py")
    assert attention.status == "M" and attention.on_path_here and attention.on_path_there
    there = {s.kind for s in facts.there.sites}
    assert there >= SLOW_KINDS_HERE
    assert all(s.on_path for s in facts.there.sites)
    assert set(facts.sites_removed) == SLOW_KINDS_HERE and facts.sites_added == []
    assert facts.there.commit == story.slow_sha and facts.here.ref == "well"
    assert facts.here.effective["offload_model"] is True and facts.there.arg_defaults["offload_model"] is None
    assert facts.defaults_changed == {}
    there_reads = {(r.var, r.on_path) for r in facts.there.env_reads if r.file == "wan/modules/attention.py"}
    assert there_reads == {("WAN_FORCE_FP16", True), ("WAN_COMPILE", True), ("USE_SDPA", True)}
    assert _state(story.well_app) == before


def test_reading_the_slow_commit_without_a_worktree(story: FoundingStory) -> None:
    before = _state(story.app)
    facts = probe_ref(story.app, story.slow_sha, environ={"WAN_FORCE_FP16": "true"})
    assert facts.error is None and facts.found and facts.is_wan
    on = {s.kind for s in facts.sites if s.on_path}
    assert on >= SLOW_KINDS
    assert {s.file for s in facts.sites if s.kind in SLOW_KINDS} == {"wan/modules/attention.py"}
    fp16 = facts.env_vars["WAN_FORCE_FP16"]
    assert fp16.read_on_path and fp16.compared_values == ["1"] and fp16.value_ignored
    assert fp16.set_by == ["main.js", "run_wan.bat"]
    assert "wan/modules/attention_main_backup.py" not in facts.import_path.unimported  # not there yet
    assert _state(story.app) == before


@pytest.mark.parametrize("direction", ["well-vs-main", "main-vs-well"])
def test_the_two_tips_differ_only_off_the_path(story: FoundingStory, direction: str) -> None:
    here, ref, status = (
        (story.well_checkout, "main", "D") if direction == "well-vs-main" else (story.checkout, "well", "A")
    )
    facts = probe_git(here, ref)
    assert facts.compare_error is None
    assert facts.changed_on_path == []
    assert facts.sites_added == [] and facts.sites_removed == []
    assert [(c.path, c.status) for c in facts.changed] == [("wan/modules/attention_main_backup.py", status)]
    assert facts.changed_off_path == ["wan/modules/attention_main_backup.py"]


def test_git_source_reads_like_the_working_tree(story: FoundingStory) -> None:
    top, prefix = story.app, "Wan2.2"
    from_git = walk_source(GitSource(top, git(top, "rev-parse", "HEAD"), prefix)).path
    from_fs = walk_source(FsSource(story.checkout)).path
    assert from_git == from_fs


def test_uncommitted_changes_are_the_here_side(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    write_files(root, {"wan/modules/attention.py": SLOW_ATTENTION_PY})
    generate = (root / "generate.py").read_text().replace("default=5.0", "default=6.0")
    (root / "generate.py").write_text(generate)
    facts = probe_git(root, "HEAD")
    assert facts.dirty
    assert set(facts.sites_added) == SLOW_KINDS_HERE and facts.sites_removed == []
    assert facts.changed_on_path == ["generate.py", "wan/modules/attention.py"]
    assert facts.defaults_changed == {"sample_guide_scale": [5.0, 6.0]}
    assert (root / "wan/modules/attention.py").read_text() == SLOW_ATTENTION_PY  # nothing reverted or stashed


def test_renames_and_new_entry(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    base = git(root, "rev-parse", "HEAD")
    git(root, "mv", "wan/modules/attention.py", "wan/modules/attn_impl.py")
    for rel in ("wan/modules/model.py", "wan/modules/__init__.py"):
        (root / rel).write_text((root / rel).read_text().replace(".attention import", ".attn_impl import"))
    commit_all(root, "rename")
    facts = probe_git(root, base)
    renamed = next(c for c in facts.changed if c.status == "R")
    assert renamed.path == "wan/modules/attn_impl.py" and renamed.on_path_here and renamed.on_path_there


def test_ref_without_the_entry_script(tmp_path: Path) -> None:
    root = tmp_path / "wan"
    write_files(root, {"wan/__init__.py": "", "README.md": "x"})
    git(root, "init", "-q", "-b", "main")
    first = commit_all(root, "no entry yet")
    write_files(root, {"generate.py": "import wan\n", "wan/modules/attention.py": FAST_ATTENTION_PY})
    commit_all(root, "entry")
    facts = probe_git(root, first)
    assert facts.compare_error == f"{first}: generate.py not found in the checkout"
    assert facts.changed_on_path == ["generate.py"]  # on the path here, absent there


# -- bad input -----------------------------------------------------------------------------------------


def test_not_a_git_repo(tmp_path: Path) -> None:
    write_files(tmp_path, {"generate.py": "", "wan/__init__.py": ""})
    facts = probe_git(tmp_path, None)
    assert facts.available and not facts.is_repo
    assert facts.error == f"not a git repository: {tmp_path.resolve()}"
    assert probe_git(tmp_path, "main").compare_error == facts.error


def test_unknown_ref(story: FoundingStory) -> None:
    facts = probe_git(story.checkout, "no-such-branch")
    assert facts.is_repo and facts.compare_error == "unknown ref: no-such-branch"
    assert facts.changed == [] and facts.here.sites == []
    assert probe_ref(story.checkout, "no-such-branch").error == "unknown ref: no-such-branch"


def test_git_missing(story: FoundingStory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    facts = probe_git(story.checkout, "well")
    assert not facts.available and not facts.is_repo
    assert facts.error == "git not found on PATH" and facts.compare_error == "git not found on PATH"
    assert probe_ref(story.checkout, "well").error == "git not found on PATH"


def test_missing_path_and_no_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe_git(tmp_path / "gone", "main").error == f"no such directory: {tmp_path / 'gone'}"
    monkeypatch.chdir(tmp_path)
    quiet = probe_git(None, None)
    assert quiet.available and not quiet.is_repo and quiet.error is None
    assert probe_git(None, "main").compare_error == "no checkout to compare (use --repo)"


def test_status_without_compare(story: FoundingStory) -> None:
    facts = probe_git(story.app, None)
    assert facts.is_repo and facts.branch == "main" and len(facts.commit) == 40
    assert facts.compare_ref == "" and facts.changed == [] and facts.here.commit == ""


def test_the_slow_commit_names_the_changed_attention_body(story: FoundingStory) -> None:
    facts = probe_git(story.well_checkout, story.slow_sha, given_args=[])
    changed = {(f.file, f.function): f for f in facts.functions_changed}
    attention = changed[("wan/modules/attention.py", "attention")]
    assert attention.status == "changed" and attention.reach == "forward"
    findings = evaluate(rulebook.load(), Facts(git=facts).as_tree())
    named = [f.message for f in findings if f.rule == "GIT-FUNCTION-CHANGED-ON-PATH"]
    assert any(m.startswith("wan/modules/attention.py:") and " attention differs from " in m for m in named), named


def test_a_changed_body_with_the_same_kinds_of_sites_is_named(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    slower = FAST_ATTENTION_PY.replace("is_causal=causal)", "is_causal=causal, scale=0.5)")
    write_files(root, {"wan/modules/attention.py": slower, "diag_gpu.py": "print('changed')\n"})
    facts = probe_git(root, "HEAD")
    assert facts.sites_added == [] and facts.sites_removed == []  # the same kinds of sites on both sides
    assert [(f.function, f.reach) for f in facts.functions_changed] == [("attention", "forward")]
    assert facts.changed_off_path == ["diag_gpu.py"]


def test_the_effective_offload_default_changed(
    story: FoundingStory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clone = tmp_path / "app"
    git(tmp_path, "clone", "-q", str(story.app), str(clone))
    entry = clone / "Wan2.2" / "generate.py"
    entry.write_text(entry.read_text().replace("False if world_size > 1 else True", "False"))
    commit_all(clone, "offload off unless asked")
    facts = probe_git(clone / "Wan2.2", "HEAD~1", environ={})
    assert facts.here.arg_defaults["offload_model"] is None and facts.there.arg_defaults["offload_model"] is None
    assert facts.defaults_changed == {"offload_model": [True, False]}
    findings = evaluate(rulebook.load(), Facts(git=facts).as_tree())
    assert any(f.rule == "GIT-DEFAULTS-CHANGED" and "true on HEAD~1, false here" in f.message for f in findings)
    passed = probe_git(clone / "Wan2.2", "HEAD~1", given_args=["--offload_model", "True"], environ={})
    assert passed.defaults_changed == {}  # the run passes it: both sides run the same
    # the text report says how many and which changed files are on the path
    _, out, _ = run_wandoc(["check", "--repo", str(clone / "Wan2.2"), "--compare", "HEAD~1"], capsys)
    assert "compared with HEAD~1: 1 file(s) differ, 1 on the run's path, 0 off it" in out
    assert "on the path (executed by the run): generate.py" in out
    assert "functions the run executes that differ: generate (generate.py, runs)" in out


def test_the_text_report_lists_files_off_the_path(story: FoundingStory, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_wandoc(["check", "--repo", str(story.checkout), "--compare", "well"], capsys)
    assert "compared with well: 1 file(s) differ, 0 on the run's path, 1 off it" in out
    assert "off the path (never executed by the run): wan/modules/attention_main_backup.py" in out
