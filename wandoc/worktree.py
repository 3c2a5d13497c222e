"""A detached git worktree in a temp folder, for running old commits without touching the user's checkout.

The user's working tree, branch, index and stash stay as they are: every checkout, reset and clean happens in
a worktree of its own (``git worktree add --detach``), whose per-worktree state (HEAD, index, ``refs/bisect``,
``BISECT_*``) lives under ``.git/worktrees/NAME`` and goes away with it. Removal runs on success, on errors, on
Ctrl-C and on SIGTERM/SIGHUP (turned into KeyboardInterrupt while a worktree exists), with further signals
ignored until the folder and git's record of it are gone.

A kill nothing can catch (SIGKILL, a power cut) leaves the temp folder and git's record behind. Each temp folder
holds ``owner.json`` (the process that made it, its start time, the repository), so ``leftovers`` can later tell
a folder whose owner is gone from one in use, and ``remove_leftover`` removes exactly what that bisection made:
the folder (reports and run logs included) and the one worktree record whose ``gitdir`` points into it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
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
            _write_owner(base, top)
            wt.scratch.mkdir()
            git(["worktree", "add", "-q", "--detach", str(wt.root), commit], top)
            yield wt
        finally:
            remove_worktree(top, wt.root, base)


# -- what a killed bisection left ------------------------------------------------------------------------------

OWNER_FILE = "owner.json"
UNOWNED_AGE_S = 3600.0  # a folder without owner.json (killed before writing it) is left alone this long


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # psutil missing, or no such process
        return None


def _write_owner(base: Path, top: Path) -> None:
    pid = os.getpid()
    info = {"pid": pid, "started": _process_start(pid), "repo": str(top.resolve()), "made_by": "wandoc"}
    (base / OWNER_FILE).write_text(json.dumps(info), encoding="utf-8")


def _owner(base: Path) -> dict[str, object] | None:
    from wandoc.bounded import FileRefused, load_json

    try:
        info = load_json(base / OWNER_FILE, limit=4096)
    except FileRefused:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _owner_alive(info: dict[str, object]) -> bool:
    """Whether the process that made the folder still runs (the same process: a reused pid has another start).
    When that cannot be told, yes: a folder in use must never be removed."""
    pid, started = info["pid"], info.get("started")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        import psutil
    except ImportError:
        if os.name != "posix":
            return True  # os.kill(pid, 0) would end the process on Windows
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # it exists, owned by someone else
        return True
    try:
        now_started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    return not isinstance(started, int | float) or abs(now_started - started) < 1.0


@dataclass(frozen=True)
class Leftover:
    base: Path  # the temp folder
    repo: Path | None  # the repository it was made for, when known


def leftovers(temp_dir: Path | None = None, now: float | None = None) -> list[Leftover]:
    """Temp folders of this tool whose owner process is gone, in ``temp_dir`` (the system's temp folder):
    folders of this user only, never a link, never one whose owner still runs."""
    root = Path(temp_dir or tempfile.gettempdir())
    now = time.time() if now is None else now
    found: list[Leftover] = []
    try:
        candidates = sorted(root.glob(f"{TEMP_PREFIX}*"))
    except OSError:
        return []
    for base in candidates:
        try:
            st = base.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            continue
        info = _owner(base)
        if info is None:
            if now - st.st_mtime < UNOWNED_AGE_S:
                continue  # maybe a bisection that started a moment ago
            found.append(Leftover(base, None))
        elif not _owner_alive(info):
            repo = info.get("repo")
            found.append(Leftover(base, Path(repo) if isinstance(repo, str) else None))
    return found


def _admin_dir(tree: Path, repo: Path | None) -> Path | None:
    """git's record of the worktree at ``tree`` (``.git/worktrees/NAME``), found from the worktree's ``.git``
    file or, when the folder is already gone, by the record whose ``gitdir`` points at it."""
    want = tree / ".git"
    try:
        line = want.read_text(encoding="utf-8", errors="replace").strip()
        if line.startswith("gitdir: "):
            admin = Path(line[8:])
            return admin if admin.is_dir() and _points_at(admin, want) else None
    except OSError:
        pass
    if repo is None:
        return None
    try:
        common = Path(git_out(["rev-parse", "--git-common-dir"], repo))
    except GitError:
        return None
    common = common if common.is_absolute() else repo / common
    try:
        records = list((common / "worktrees").iterdir())
    except OSError:
        return None
    return next((admin for admin in records if _points_at(admin, want)), None)


def _points_at(admin: Path, dotgit: Path) -> bool:
    """Whether the worktree record ``admin`` is the one of the worktree whose ``.git`` is ``dotgit``."""
    if admin.parent.name != "worktrees":
        return False
    try:
        recorded = (admin / "gitdir").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return os.path.realpath(recorded) == os.path.realpath(dotgit)


def remove_leftover(item: Leftover) -> None:
    """Remove what a killed bisection left: its temp folder and git's record of its worktree (refs/bisect and
    BISECT_* live in that record). A record is removed only if it points into this folder: the user's own
    worktrees are never touched, and no blanket ``git worktree prune`` runs."""
    tree = item.base / "tree"
    admin = _admin_dir(tree, item.repo)
    if item.repo is not None and item.repo.is_dir() and _listed(item.repo, tree):
        _try_git(["worktree", "remove", "--force", "--force", str(tree)], item.repo)
    shutil.rmtree(item.base, ignore_errors=True)
    if admin is not None and admin.is_dir() and _points_at(admin, tree / ".git"):
        shutil.rmtree(admin, ignore_errors=True)
