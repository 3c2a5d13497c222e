"""A detached git worktree in a temp folder, for running old commits without touching the user's checkout.

The user's working tree, branch, index and stash stay as they are: every checkout, reset and clean happens in
a worktree of its own (``git worktree add --detach``), whose per-worktree state (HEAD, index, ``refs/bisect``,
``BISECT_*``) lives under ``.git/worktrees/NAME`` and goes away with it. Removal runs on success, on errors, on
Ctrl-C and on SIGTERM/SIGHUP (turned into KeyboardInterrupt while a worktree exists), with further signals
ignored until the folder and git's record of it are gone.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from wandoc import safegit
from wandoc.safegit import GitError

GIT_TIMEOUT = 120.0  # a checkout of a large fork can take a while
TEMP_PREFIX = "wandoc-worktree-"


def git(args: Sequence[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git in ``cwd`` as text; GitError with git's first error line when ``check`` and it fails. Hooks, filters
    and every other program the repository's config names stay off (see wandoc.safegit)."""
    proc = safegit.run(args, cwd, timeout=GIT_TIMEOUT, check=check)
    out, err = (b.decode("utf-8", errors="replace") for b in (proc.stdout, proc.stderr))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def git_out(args: Sequence[str], cwd: Path) -> str:
    return git(args, cwd).stdout.strip()


@dataclass
class Worktree:
    """A detached worktree of ``top`` at ``root``; ``scratch`` is a sibling folder removed with it."""

    top: Path  # the user's repository (its main working tree or one of its worktrees)
    root: Path  # the worktree
    scratch: Path  # for the judge's reports and logs
    base: Path  # the temp folder holding both

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """git inside the worktree (its hooks off, as for every git call: a post-checkout hook is not ours to run)."""
        return git(args, self.root, check=check)

    def clean(self) -> None:
        """Drop whatever a run wrote in the worktree, so the next checkout cannot trip over it."""
        self.git("reset", "-q", "--hard")
        self.git("clean", "-q", "-f", "-d", "-x")

    def checkout(self, commit: str) -> None:
        self.clean()
        self.git("checkout", "-q", "--detach", commit)


_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals(handler: signal.Handlers | object, sigs: Sequence[int]) -> Iterator[None]:
    """Install ``handler`` for ``sigs`` (main thread only: elsewhere Python cannot), restore on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in sigs}  # type: ignore[arg-type]
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _listed(top: Path, root: Path) -> bool:
    """Whether git still has a record of the worktree at ``root`` (False when git cannot say)."""
    try:
        out = git(["worktree", "list", "--porcelain"], top, check=False).stdout
    except GitError:
        return False
    want = root.resolve()
    return any(Path(line[9:]).resolve() == want for line in out.splitlines() if line.startswith("worktree "))


def _try_git(args: Sequence[str], top: Path) -> None:
    with suppress(GitError):
        git(args, top, check=False)


def remove_worktree(top: Path, root: Path, base: Path) -> None:
    """Remove the worktree, its folder and git's record of it; every step runs even if one fails.

    ``git worktree prune`` comes last and only when the record survived: it would also forget the user's own
    worktrees whose folders are out of reach (an unmounted drive), which are not ours to touch."""
    with _signals(signal.SIG_IGN, (signal.SIGINT, *_STOP_SIGNALS)):
        if _listed(top, root):
            _try_git(["worktree", "remove", "--force", "--force", str(root)], top)
        shutil.rmtree(base, ignore_errors=True)
        if _listed(top, root):  # the folder is gone now: this drops just the record
            _try_git(["worktree", "remove", "--force", "--force", str(root)], top)
        if _listed(top, root):
            _try_git(["worktree", "prune"], top)


@contextmanager
def temp_worktree(top: Path, commit: str) -> Iterator[Worktree]:
    """A detached worktree of ``top`` at ``commit`` in a new temp folder, removed when the block ends."""
    base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    wt = Worktree(top=top, root=base / "tree", scratch=base / "runs", base=base)
    with _signals(_raise_interrupt, _STOP_SIGNALS):
        try:
            wt.scratch.mkdir()
            git(["worktree", "add", "-q", "--detach", str(wt.root), commit], top)
            yield wt
        finally:
            remove_worktree(top, wt.root, base)
