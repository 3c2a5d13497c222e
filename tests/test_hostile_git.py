"""A downloaded checkout whose git config names programs: the doctor must never run them.

git runs what a repository's own ``.git/config`` names: ``core.fsmonitor`` on any status, a filter's ``clean``
when it hashes a changed file, hooks on checkout. Each test plants such a command (a script that leaves a mark),
drives the doctor the way a user would, and asserts both sides: no mark, and the git facts still right. A control
test shows that plain git does run what was planted, so a quiet result means something.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from clirun import run_wandoc
from wanrepo import FAST_ATTENTION_PY, SLOW_ATTENTION_PY, commit_all, git, make_simple_wan_repo, write_files

from wandoc import safegit
from wandoc.probes.git_compare import probe_git
from wandoc.worktree import temp_worktree

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the planted commands are POSIX shell scripts")


def _evil_script(folder: Path, marks: Path) -> Path:
    script = folder / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{marks}"\ncat\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _hostile_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A Wan checkout with three commits whose config plants a command behind every git hook point we know."""
    root = make_simple_wan_repo(tmp_path, SLOW_ATTENTION_PY)
    write_files(root, {".gitattributes": "*.py filter=evil\n"})
    commit_all(root, "attributes")
    write_files(root, {"wan/modules/attention.py": FAST_ATTENTION_PY})
    commit_all(root, "plain attention")
    marks = tmp_path / "marks.txt"
    evil = _evil_script(tmp_path, marks)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name in ("post-checkout", "pre-commit", "post-merge", "reference-transaction"):
        hook = hooks / name
        hook.write_text(f'#!/bin/sh\necho "hook {name}" >> "{marks}"\n', encoding="utf-8")
        hook.chmod(0o755)
    for key, value in {
        "core.fsmonitor": f"{evil} fsmonitor",
        "filter.evil.clean": f"{evil} clean",
        "filter.evil.smudge": f"{evil} smudge",
        "filter.evil.required": "true",
        "core.hooksPath": str(hooks),
        "diff.external": f"{evil} external-diff",
        "diff.evil.textconv": f"{evil} textconv",
        "core.pager": f"{evil} pager",
        "pager.status": f"{evil} pager-status",
    }.items():
        git(root, "config", key, value)
    # same size, new mtime: git must re-hash the file (through the clean filter) to tell whether it changed
    generate = root / "generate.py"
    generate.write_text(generate.read_text(encoding="utf-8"), encoding="utf-8")
    os.utime(generate, (time.time() + 5, time.time() + 5))
    return root, marks


def _marks(marks: Path) -> str:
    return marks.read_text(encoding="utf-8") if marks.exists() else ""


def test_the_planted_commands_do_run_under_plain_git(tmp_path: Path) -> None:
    """The control: without the doctor's overrides, git runs what the checkout planted."""
    root, marks = _hostile_checkout(tmp_path)
    git(root, "status", "--porcelain")
    assert "fsmonitor" in _marks(marks) and "clean" in _marks(marks)


def test_check_facts_and_compare_run_nothing_the_checkout_configures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, marks = _hostile_checkout(tmp_path)
    for args in (["check", "--repo", str(root)], ["facts", "--repo", str(root)],
                 ["check", "--repo", str(root), "--compare", "HEAD~1"]):  # fmt: skip
        code, _, err = run_wandoc(args, capsys)
        assert code in (0, 1), err
        assert _marks(marks) == "", f"wandoc {' '.join(args)} ran: {_marks(marks)}"
    monkeypatch.chdir(root)  # the README tells people to run the check inside their checkout
    code, _, err = run_wandoc(["check"], capsys)
    assert code in (0, 1), err
    assert _marks(marks) == ""


def test_git_facts_stay_right_with_the_overrides(tmp_path: Path) -> None:
    root, marks = _hostile_checkout(tmp_path)
    facts = probe_git(root, "HEAD~1")
    assert _marks(marks) == ""
    assert facts.is_repo and facts.commit == git(root, "rev-parse", "HEAD") and facts.branch == "main"
    assert facts.compare_error is None and facts.changed_on_path == ["wan/modules/attention.py"]
    assert not facts.dirty  # only the mtime moved
    (root / "generate.py").write_text("# edited\n", encoding="utf-8")
    assert probe_git(root, None).dirty  # a real edit still shows
    assert _marks(marks) == ""


def test_a_worktree_for_bisect_runs_no_hook_and_no_filter(tmp_path: Path) -> None:
    root, marks = _hostile_checkout(tmp_path)
    first = git(root, "rev-list", "--max-parents=0", "HEAD")
    with temp_worktree(root, "HEAD") as wt:
        wt.checkout(first)
        assert (wt.root / "wan" / "modules" / "attention.py").read_text(encoding="utf-8") == SLOW_ATTENTION_PY
    assert _marks(marks) == ""


def test_git_is_never_taken_from_the_current_folder_or_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = safegit.find_git()
    assert real is not None and os.path.isabs(real)
    checkout = tmp_path / "checkout"
    (checkout / "tools").mkdir(parents=True)
    for folder in (checkout, checkout / "tools"):
        fake = folder / "git"
        fake.write_text("#!/bin/sh\necho planted\n", encoding="utf-8")
        fake.chmod(0o755)
    monkeypatch.chdir(checkout)
    real_dir = str(Path(real).parent)
    path = os.pathsep.join(["", ".", "tools", str(checkout), str(checkout / "tools"), real_dir])
    assert safegit.find_git([checkout], path_var=path) == real
    assert safegit.find_git([checkout], path_var=os.pathsep.join(["", ".", str(checkout / "tools")])) is None
    # the sane twin: an absolute folder outside the checkout and the current folder is where git is found
    monkeypatch.chdir(tmp_path)
    assert safegit.find_git([], path_var=os.pathsep.join([str(checkout / "tools"), real_dir])) == str(
        checkout / "tools" / "git"
    )


def test_a_config_key_family_is_overridden_for_the_names_the_repository_uses() -> None:
    config = safegit.overrides(["filter.lfs.clean", "filter.anything.process", "diff.x.textconv", "user.name"])
    assert config["filter.lfs.clean"] == "" and config["filter.anything.process"] == ""
    assert config["diff.x.textconv"] == "" and "user.name" not in config
    assert config["core.fsmonitor"] == "false" and not Path(config["core.hooksPath"]).exists()
