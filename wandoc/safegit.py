"""Running git on a checkout that may be hostile.

A repository's own config can name programs that git runs by itself: ``core.fsmonitor`` on any status, a
filter driver's ``clean`` whenever git hashes a file, hooks on checkout, a pager, an external diff, textconv,
``gpg.program`` under ``log.showSignature``. The doctor reads checkouts that people downloaded, so every git
call of the product goes through :func:`run`, which

- finds git through the absolute folders of PATH only: never the current folder, never a folder inside the
  checkout (on Windows a ``git.bat`` there would otherwise win), and on Windows only ``git.exe``;
- overrides, with the precedence of ``git -c``, every config key that names a program with a value that runs
  nothing (the keys of the repository's own config included: filter and diff drivers are named by it);
- turns off the pager, prompts, optional locks and submodule recursion (a submodule has a config of its own).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

# Keys that name a program git may run, with the value that runs nothing
_FIXED: dict[str, str] = {
    "core.fsmonitor": "false",
    "core.pager": "cat",
    "core.editor": "true",
    "sequence.editor": "true",
    "core.sshCommand": "false",
    "core.askPass": "",
    "core.gitProxy": "",
    "core.alternateRefsCommand": "",
    "credential.helper": "",
    "diff.external": "",
    "log.showSignature": "false",
    "merge.verifySignatures": "false",
    "gpg.program": "false",
    "status.submoduleSummary": "false",
    "submodule.recurse": "false",
    "diff.ignoreSubmodules": "all",
    "fetch.recurseSubmodules": "false",
    "core.untrackedCache": "false",
}
# Families whose members are named by the repository's config: key pattern -> value that runs nothing
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"filter\..+\.(clean|smudge|process)"), ""),
    (re.compile(r"filter\..+\.required"), "false"),
    (re.compile(r"diff\..+\.(command|textconv)"), ""),
    (re.compile(r"merge\..+\.driver"), ""),
    (re.compile(r"pager\..+"), "false"),
    (re.compile(r"gpg\..+\.program"), "false"),
    (re.compile(r"remote\..+\.(uploadpack|receivepack|proxy)"), ""),
)
_DROPPED_ENV = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_EXTERNAL_DIFF", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
     "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_TRACE"}
)  # fmt: skip
TIMEOUT = 20.0
# a hooks folder that cannot exist (a path under the null device), so nothing needs creating or cleaning up
NO_HOOKS = os.path.join(os.devnull, "no-hooks")
# tracked files changed in the working tree (untracked ones and submodules aside): any output means dirty
DIRTY_ARGS = ["status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all", "--", "."]


class GitError(Exception):
    """A git command that failed or could not run; the message is git's own first line of complaint."""


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def find_git(avoid: Iterable[Path] = (), path_var: str | None = None) -> str | None:
    """git's absolute path from PATH's absolute folders, skipping the current folder and any under ``avoid``."""
    names = ("git.exe",) if os.name == "nt" else ("git",)
    try:
        here: Path | None = Path.cwd().resolve()
    except OSError:
        here = None
    avoided = []
    for a in avoid:
        try:
            avoided.append(Path(a).resolve())
        except (OSError, RuntimeError):
            continue
    for entry in (os.environ.get("PATH", "") if path_var is None else path_var).split(os.pathsep):
        entry = entry.strip().strip('"')
        if not entry or not os.path.isabs(entry):
            continue  # "", "." and relative folders mean the current folder: a checkout's git.bat
        try:
            folder = Path(entry).resolve()
        except (OSError, RuntimeError):
            continue
        if folder == here or any(_inside(folder, a) for a in avoided):
            continue
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _config_keys(exe: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """The names of every config key git would read in ``cwd`` (reading config runs nothing)."""
    try:
        proc = subprocess.run(
            [exe, "config", "--list", "--name-only", "-z"], cwd=cwd, capture_output=True, timeout=TIMEOUT,
            env=env, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    return [k.lower() for k in proc.stdout.decode("utf-8", errors="replace").split("\0") if k]


def overrides(keys: Iterable[str]) -> dict[str, str]:
    """Config values that keep git from running any program named by config, for the keys present."""
    out = dict(_FIXED)
    out["core.hooksPath"] = NO_HOOKS
    for key in keys:
        for pattern, value in _FAMILIES:
            if pattern.fullmatch(key):
                out[key] = value
    return out


def environment(config: dict[str, str]) -> dict[str, str]:
    """The process environment for git with ``config`` as command-line config (``GIT_CONFIG_COUNT``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.update(
        GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", PAGER="cat", LC_ALL="C", LANGUAGE="C",
        GIT_CONFIG_COUNT=str(len(config)),
    )  # fmt: skip
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def run(
    args: Sequence[str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    timeout: float = TIMEOUT,
    check: bool = True,
    avoid: Iterable[Path] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git ARGS`` in ``cwd`` with nothing of the repository's config able to start a program.

    ``avoid``: folders git must not be found in besides ``cwd`` itself. GitError when git cannot run, times out,
    or (with ``check``) fails."""
    exe = find_git([cwd, *avoid])
    if exe is None:
        raise GitError("git not found on PATH")
    env = environment(overrides(_config_keys(exe, cwd, environment(overrides(())))))
    try:
        proc = subprocess.run(
            [exe, "--no-pager", *args], cwd=cwd, input=stdin, capture_output=True, timeout=timeout, env=env,
            stdin=None if stdin is not None else subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise GitError(f"git could not run: {exc.strerror or exc}") from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        lines = err.splitlines()
        raise GitError(lines[0].removeprefix("fatal: ") if lines else f"git {args[0]} exited {proc.returncode}")
    return proc
