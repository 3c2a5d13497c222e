"""Find the commit that made a run slow: ``git bisect`` in a temporary worktree, each commit judged by a callable.

The user's checkout is never touched: the bisection runs in a detached worktree (``wandoc.worktree``), where
``git bisect`` keeps its state per worktree (``refs/bisect`` and ``BISECT_*`` live under
``.git/worktrees/NAME`` since git 2.7), so even a bisection the user has running in their own tree is left
alone. The judge decides good, bad or skip for one commit; ``wandoc.judge`` runs ``wanrun`` for it, tests use a
fake. The good ref is judged first (the baseline a judge compares with), then the bad ref, which must judge bad,
then what ``git bisect`` picks. The first bad commit comes back with its code facts against its parent.

A commit that differs from the good ref only in files the run cannot read (documentation, images, Python files
off the run's import path at both commits) is judged good without a run: it cannot have made the run slower, and
a short run on a busy machine could call it worse by noise alone. Any other file (data or config the run might
read) is run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from wandoc import safegit
from wandoc.code.probe import probe_repo
from wandoc.commit_change import (
    ChangeError,
    CommitChange,
    CommitInfo,
    commit_info,
    compare_with_parent,
    locate,
    resolve,
)
from wandoc.worktree import GitError, Worktree, git, git_out, temp_worktree


class BisectError(ValueError):
    """Bad input (a ref, the repository, git itself); one line for the user."""


class BisectStop(Exception):
    """The bisection cannot give an answer (the bad ref is not worse, the good ref does not run)."""


class Verdict(StrEnum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"  # the commit cannot be judged (the run did not start): ``git bisect skip``


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    summary: str = ""  # one line: "1.8 s/step, 2 new findings"
    detail: str = ""  # the comparison as the judge saw it, or why the run could not be judged


@dataclass(frozen=True)
class Candidate:
    """One commit to judge, checked out in the temporary worktree."""

    sha: str
    subject: str
    checkout: Path  # the Wan checkout inside the worktree, at ``sha``
    scratch: Path  # a folder for the judge's reports and logs, removed with the worktree
    baseline: bool = False  # the good ref, judged first: GOOD when it ran, SKIP when it could not


Judge = Callable[[Candidate], Judgement]


@dataclass(frozen=True)
class Range:
    """A checked bisection range in the user's repository."""

    top: Path
    prefix: str  # the checkout's path inside the repository ("" or "Wan2.2/")
    checkout: Path
    good: str  # full shas
    bad: str
    good_ref: str
    bad_ref: str
    commits: int  # commits in good..bad
    dirty: bool  # the user's checkout has uncommitted changes (not part of the bisection)


@dataclass(frozen=True)
class Step:
    """A progress event: a commit about to be judged (``judgement`` None), or judged."""

    role: str  # "good", "bad" or "candidate"
    sha: str
    subject: str
    runs_left: int | None = None  # git bisect's estimate, this run included
    judgement: Judgement | None = None


@dataclass
class BisectResult:
    range: Range
    first_bad: CommitInfo | None = None
    judgement: Judgement | None = None  # the first bad commit's
    change: CommitChange | None = None  # its code facts against its parent
    change_error: str | None = None
    suspects: list[CommitInfo] = field(default_factory=list)  # skipped commits hide the first bad one
    steps: list[Step] = field(default_factory=list)


# Files no run reads: prose, pictures and repository housekeeping (anything else may be data a script opens)
# (.txt and .json are not here: prompts and configs are read by scripts)
_UNREAD_SUFFIXES = frozenset({".md", ".rst", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".pdf", ".ipynb"})
_UNREAD_NAMES = frozenset({"license", "licence", "notice", "authors", "contributors", ".gitignore", ".gitattributes"})


def _unread(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1].lower()
    return (
        rel.startswith(".github/")
        or name in _UNREAD_NAMES
        or name.startswith(("license.", "readme.", "changelog."))
        or Path(name).suffix in _UNREAD_SUFFIXES
    )


def unread_change(changed: Sequence[str], on_path: set[str]) -> str | None:
    """Why ``changed`` (files relative to the checkout) cannot change the run: a line naming them, else None."""
    if not changed:
        return "the same files as the good ref"
    for rel in changed:
        if rel in on_path or not (_unread(rel) or rel.endswith(".py")):
            return None
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"changes only files the run never reads ({shown})"


def check_range(repo: Path | None, good: str, bad: str, script: str = "generate.py") -> Range:
    """The range to bisect, or BisectError with one line: git missing, not a repository, unknown refs, ..."""
    try:
        co = locate(repo, script)
        good_sha = resolve(co.top, good, "--good ref")
        bad_sha = resolve(co.top, bad, "--bad ref")
    except (ChangeError, GitError) as exc:
        raise BisectError(str(exc)) from None
    if good_sha == bad_sha:
        raise BisectError(f"--good {good} and --bad {bad} are the same commit; nothing to bisect")
    try:
        if git(["merge-base", "--is-ancestor", good_sha, bad_sha], co.top, check=False).returncode != 0:
            raise BisectError(
                f"--good {good} is not an ancestor of --bad {bad}; give a good commit older than the bad one"
            )
        commits = int(git_out(["rev-list", "--count", f"{good_sha}..{bad_sha}"], co.top))
        dirty = bool(git_out(safegit.DIRTY_ARGS, co.path))
    except GitError as exc:
        raise BisectError(str(exc)) from None
    return Range(co.top, co.prefix, co.path, good_sha, bad_sha, good, bad, commits, dirty)


@dataclass(frozen=True)
class _State:
    next: str | None = None
    runs_left: int | None = None
    first_bad: str | None = None
    suspects: tuple[str, ...] = ()


def _bisect(wt: Worktree, *args: str) -> _State:
    """One ``git bisect`` command in the worktree, and where it leaves the search."""
    wt.clean()
    proc = wt.git("bisect", *args, check=False)
    out = proc.stdout
    if m := re.search(r"^([0-9a-f]{40,64}) is the first bad commit", out, re.M):
        return _State(first_bad=m.group(1))
    if "only 'skip'ped commits left" in out:
        return _State(suspects=tuple(re.findall(r"^([0-9a-f]{40,64})$", out, re.M)))
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or out.strip() or f"git bisect {args[0]} exited {proc.returncode}").splitlines()
        raise BisectError(f"git bisect {args[0]}: {lines[0]}")
    left = re.search(r"roughly (\d+) step", out)
    head = wt.git("rev-parse", "HEAD").stdout.strip()
    return _State(next=head, runs_left=int(left.group(1)) + 1 if left else None)


def bisect(
    rng: Range,
    judge: Judge,
    on_step: Callable[[Step], None] = lambda step: None,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> BisectResult:
    """Search ``rng`` for the first commit the judge calls bad; BisectStop when no answer can be had.

    Everything happens in a temporary worktree that is removed before this returns or raises (Ctrl-C and
    SIGTERM included).
    """
    result = BisectResult(rng)
    judged: dict[str, Judgement] = {}
    base_path: set[str] = set()

    def on_path(wt: Worktree) -> set[str]:
        return set(probe_repo(wt.root / rng.prefix, script, given_args, environ).import_path.modules)

    def unchanged(wt: Worktree, sha: str) -> Judgement | None:
        """GOOD without a run when the commit changes nothing the run reads against the good ref."""
        pathspec = ["--", rng.prefix.rstrip("/")] if rng.prefix else []
        names = git_out(["diff", "--name-only", "--no-renames", "-z", rng.good, sha, *pathspec], rng.top)
        changed = [n[len(rng.prefix) :] for n in names.split("\0") if n]
        why = unread_change(changed, base_path | on_path(wt))
        return Judgement(Verdict.GOOD, f"not run: {why}", f"{why}: judged as the good ref") if why else None

    def run(wt: Worktree, role: str, sha: str, runs_left: int | None = None) -> Judgement:
        subject = commit_info(rng.top, sha).subject
        cand = Candidate(sha, subject, wt.root / rng.prefix, wt.scratch, baseline=role == "good")
        on_step(Step(role, sha, subject, runs_left))
        verdict = (unchanged(wt, sha) if role == "candidate" else None) or judge(cand)
        step = Step(role, sha, subject, runs_left, verdict)
        result.steps.append(step)
        on_step(step)
        judged[sha] = verdict
        return verdict

    try:
        with temp_worktree(rng.top, rng.good) as wt:
            base = run(wt, "good", rng.good)
            base_path.update(on_path(wt))
            if base.verdict is not Verdict.GOOD:
                raise BisectStop(f"the good ref {rng.good_ref} does not run, so there is no baseline: {base.detail}")
            wt.checkout(rng.bad)
            end = run(wt, "bad", rng.bad)
            if end.verdict is Verdict.SKIP:
                raise BisectStop(f"the bad ref {rng.bad_ref} does not run: {end.detail}")
            if end.verdict is Verdict.GOOD:
                raise BisectStop(
                    f"the bad ref {rng.bad_ref} is not worse than {rng.good_ref} in this run"
                    f"{f' ({end.summary})' if end.summary else ''}: nothing to bisect. More sampling steps "
                    "(--steps) or a lower --threshold can tell them apart."
                )
            state = _bisect(wt, "start", rng.bad, rng.good, "--")
            while state.next is not None:
                if state.next in judged:  # git bisect says what it does in prose; never loop on a misreading
                    raise BisectError(
                        f"git bisect did not move on from {state.next[:7]}; its output was not understood"
                    )
                verdict = run(wt, "candidate", state.next, state.runs_left)
                state = _bisect(wt, verdict.verdict.value)
            if state.suspects or state.first_bad is None:
                result.suspects = [commit_info(rng.top, s) for s in state.suspects]
                return result
            result.first_bad = commit_info(rng.top, state.first_bad)
            result.judgement = judged.get(state.first_bad)
            wt.checkout(state.first_bad)
            try:
                result.change = compare_with_parent(wt.root / rng.prefix, result.first_bad, script, given_args, environ)
            except ChangeError as exc:
                result.change_error = str(exc)
            return result
    except GitError as exc:
        raise BisectError(str(exc)) from None
