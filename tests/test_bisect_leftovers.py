"""What a ``wandoc bisect`` killed by SIGKILL leaves (its temp worktree with run logs, git's record of it, its
refs/bisect) is found and removed by the next bisect or ``--cleanup``; nothing of the user's, and nothing of a
bisection still running, is touched. (The run a killed bisect started stops by itself: test_run_endings.py.)"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from clirun import run_wandoc
from limits import LIGHT_MEMORY, child_env, start_limited
from wanrepo import commit_all, git, make_simple_wan_repo, write_files

from wandoc.worktree import TEMP_PREFIX, leftovers, temp_worktree

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

HOLDER = """\
import sys
import time
from pathlib import Path

from wandoc.worktree import temp_worktree

with temp_worktree(Path(sys.argv[1]), "HEAD") as wt:
    wt.git("bisect", "start", "HEAD", "HEAD~1")
    (wt.scratch / "abc.log").write_text("a run log")
    print(wt.base, flush=True)
    time.sleep(600)
"""


def _killed_bisect(repo: Path, tmp: Path, script: Path) -> Path:
    """A process in the middle of a bisection, killed with SIGKILL: its temp folder is returned."""
    script.write_text(HOLDER)
    proc = start_limited([sys.executable, str(script), str(repo)], memory=LIGHT_MEMORY, stdout=-1,
                         env=child_env(TMPDIR=str(tmp)))  # fmt: skip
    try:
        assert proc.stdout is not None
        base = Path(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return base


def _records(repo: Path) -> list[str]:
    listing = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line[9:] for line in listing if line.startswith("worktree ")]


def test_cleanup_removes_what_a_killed_bisect_left_and_nothing_else(tmp_path: Path, temp_root: Path, capsys) -> None:
    repo = make_simple_wan_repo(tmp_path)
    write_files(repo, {"state.txt": "two\n"})
    commit_all(repo, "second")
    # the user's own worktrees: one in the temp folder under our prefix (no owner.json, fresh), one elsewhere
    mine = temp_root / f"{TEMP_PREFIX}mine"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "HEAD")
    elsewhere = tmp_path / "experiment"
    git(repo, "worktree", "add", "-q", "--detach", str(elsewhere), "HEAD~1")
    base = _killed_bisect(repo, temp_root, tmp_path / "holder.py")
    assert (base / "runs" / "abc.log").is_file() and str((base / "tree").resolve()) in _records(repo)
    assert git(base / "tree", "for-each-ref", "refs/bisect")  # the killed bisection's state, in its worktree

    with temp_worktree(repo, "HEAD") as running:  # a bisection that is still going: its owner is this process
        assert [x.base for x in leftovers()] == [base]
        code, out, err = run_wandoc(["bisect", "--cleanup"], capsys)
        assert (code, err) == (0, "") and out == f"removed what a killed bisect left: {base}\n"
        assert running.root.is_dir() and str(running.root.resolve()) in _records(repo)
    assert not base.exists()
    assert sorted(_records(repo)) == sorted(str(p.resolve()) for p in (repo, mine, elsewhere))
    assert mine.is_dir() and elsewhere.is_dir() and git(repo, "for-each-ref", "refs/bisect") == ""
    code, out, _ = run_wandoc(["bisect", "--cleanup"], capsys)  # nothing left: says nothing
    assert (code, out) == (0, "")


def test_an_old_folder_without_owner_is_a_leftover_and_a_fresh_one_is_not(tmp_path: Path, temp_root: Path) -> None:
    """Killed before it wrote owner.json: removed once it is an hour old (a fresh one may be a bisect starting)."""
    repo = make_simple_wan_repo(tmp_path)
    base = _killed_bisect(repo, temp_root, tmp_path / "holder.py")
    (base / "owner.json").unlink()
    assert leftovers() == []
    hour_ago = time.time() - 3700
    os.utime(base, (hour_ago, hour_ago))
    found = leftovers()
    assert [x.base for x in found] == [base] and found[0].repo is None
    from wandoc.worktree import remove_leftover

    remove_leftover(found[0])
    assert not base.exists() and _records(repo) == [str(repo.resolve())]  # the record found from the tree's .git


def test_a_bisect_cleans_up_before_it_starts(tmp_path: Path, temp_root: Path, capsys) -> None:
    repo = make_simple_wan_repo(tmp_path)
    base = _killed_bisect(repo, temp_root, tmp_path / "holder.py")
    code, out, err = run_wandoc(["bisect", "--repo", str(repo), "--good", "nope", "--bad", "HEAD"], capsys)
    assert code == 2 and "unknown --good ref: nope" in err  # the bisect itself refused, after the cleanup
    assert out == f"removed what a killed bisect left: {base}\n" and not base.exists()
    code, _, err = run_wandoc(["bisect", "--repo", str(repo)], capsys)
    assert code == 2 and err == "wandoc: --good REF is needed (or --cleanup alone)\n"
