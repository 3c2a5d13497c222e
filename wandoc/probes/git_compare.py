"""Branch differences that can explain a slowdown, and the ones that cannot.

``--compare REF`` diffs the working tree against REF through the ``git`` CLI; this module is the git side (running
git, reading REF with ``git ls-tree`` / ``git cat-file``), ``wandoc.code.compare`` the code side. The user's
working tree is never touched: no checkout, no stash, no worktree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from wandoc import safegit
from wandoc.code.checkout import find_checkout
from wandoc.code.compare import compare
from wandoc.code.launchers import scan_launchers
from wandoc.code.probe import code_analysis, code_facts
from wandoc.code.source import MAX_FILE_BYTES, MAX_PY_FILES, FsSource, decode_source, skip_dir, skipped_note
from wandoc.facts import GitFacts, RepoFacts
from wandoc.safegit import GitError

GIT_TIMEOUT = 20.0


def run_git(args: Sequence[str], cwd: Path, stdin: bytes | None = None, timeout: float = GIT_TIMEOUT) -> bytes:
    """git's output; GitError when it fails. Nothing the checkout configures can run (see wandoc.safegit)."""
    return safegit.run(args, cwd, stdin=stdin, timeout=timeout).stdout


class GitSource:
    """The checkout's files as they are in one commit, read in one ``git cat-file --batch`` call."""

    def __init__(self, top: Path, commit: str, prefix: str = "") -> None:
        self.top, self.commit, self.prefix = top, commit, prefix.strip("/")
        self.truncated = False
        self.skipped: list[str] = []
        self._blobs: dict[str, tuple[str, int]] | None = None
        self._texts: dict[str, str] | None = None

    def list_py(self) -> list[str]:
        if self._blobs is None:
            self._blobs = self._list()
        return sorted(self._blobs)

    def _list(self) -> dict[str, tuple[str, int]]:
        spec = [f"{self.prefix}/"] if self.prefix else []
        raw = run_git(["ls-tree", "-r", "-l", "-z", "--full-tree", self.commit, "--", *spec], self.top)
        blobs: dict[str, tuple[str, int]] = {}
        for entry in raw.split(b"\0"):
            meta, _, name = entry.partition(b"\t")
            fields = meta.split()
            if len(fields) != 4 or fields[1] != b"blob" or fields[0] == b"120000":
                continue
            path = name.decode("utf-8", errors="surrogateescape")
            rel = path[len(self.prefix) + 1 :] if self.prefix else path
            if not rel.endswith(".py") or any(skip_dir(p) for p in rel.split("/")[:-1]):
                continue
            if len(blobs) >= MAX_PY_FILES:
                self.truncated = True
                break
            blobs[rel] = (fields[2].decode(), int(fields[3]) if fields[3].isdigit() else 0)
        return blobs

    def read(self, relpath: str) -> str | None:
        if self._texts is None:
            self._texts = self._load()
        return self._texts.get(relpath)

    def _load(self) -> dict[str, str]:
        self.list_py()
        assert self._blobs is not None
        wanted = [(rel, sha) for rel, (sha, size) in sorted(self._blobs.items()) if size <= MAX_FILE_BYTES]
        self.skipped = [
            skipped_note(rel, size) for rel, (_, size) in sorted(self._blobs.items()) if size > MAX_FILE_BYTES
        ]
        if not wanted:
            return {}
        data = run_git(["cat-file", "--batch"], self.top, stdin="".join(f"{sha}\n" for _, sha in wanted).encode())
        texts: dict[str, str] = {}
        pos = 0
        for rel, _ in wanted:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            header = data[pos:nl].split()
            if len(header) != 3 or header[1] != b"blob":  # "<sha> missing"
                pos = nl + 1
                continue
            size = int(header[2])
            blob = data[nl + 1 : nl + 1 + size]
            if b"\x00" in blob:
                self.skipped.append(f"{rel}: holds NUL bytes, not Python source (not read)")
            else:
                texts[rel] = decode_source(blob)
            pos = nl + 1 + size + 1
        return texts


def _name_status(raw: bytes) -> list[tuple[str, str, str | None]]:
    """(status letter, path, old path for renames and copies) from ``git diff --name-status -z``."""
    parts = raw.decode("utf-8", errors="surrogateescape").split("\0")
    out: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(parts) and parts[i]:
        status = parts[i][0]
        if status in "RC" and i + 2 < len(parts):
            out.append((status, parts[i + 2], parts[i + 1]))
            i += 3
        elif i + 1 < len(parts):
            out.append((status, parts[i + 1], None))
            i += 2
        else:
            break
    return out


def _optional(args: Sequence[str], cwd: Path) -> str:
    try:
        return run_git(args, cwd).decode("utf-8", errors="replace").strip()
    except GitError:
        return ""


def probe_git(
    path: Path | None,
    compare_ref: str | None,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> GitFacts:
    """The checkout's git state and, with ``compare_ref``, what differs on and off the run's path; never raises."""
    try:
        return _probe_git(path, compare_ref, script, given_args, environ)
    except Exception as exc:  # a probe reports, it does not crash the doctor
        return GitFacts(compare_ref=compare_ref or "", error=f"git probe failed: {exc!r}")


def _probe_git(
    path: Path | None, ref: str | None, script: str, given_args: Sequence[str], environ: Mapping[str, str]
) -> GitFacts:
    facts = GitFacts(compare_ref=ref or "")

    def fail(message: str) -> GitFacts:
        facts.error = message
        if ref:
            facts.compare_error = message
        return facts

    co = find_checkout(path, script)
    if safegit.find_git([co.root] if co.root else []) is None:
        return fail("git not found on PATH")
    facts.available = True
    if co.root is None:
        return fail(co.error) if co.error else (fail("no checkout to compare (use --repo)") if ref else facts)
    root = co.root
    try:
        top = Path(run_git(["rev-parse", "--show-toplevel"], root).decode("utf-8", errors="replace").strip())
    except GitError as exc:
        msg = str(exc)
        return fail(f"not a git repository: {root}" if "not a git repository" in msg else msg)
    facts.is_repo = True
    facts.root = str(top)
    prefix = _optional(["rev-parse", "--show-prefix"], root)
    facts.branch = _optional(["symbolic-ref", "--short", "-q", "HEAD"], root)
    facts.commit = _optional(["rev-parse", "-q", "--verify", "HEAD"], root)
    facts.dirty = bool(_optional(safegit.DIRTY_ARGS, root))
    if not ref:
        return facts
    try:
        there_commit = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], root).decode().strip()
    except GitError:
        facts.compare_error = f"unknown ref: {ref}"
        return facts
    try:
        changes = _name_status(
            run_git(["diff", "--name-status", "-z", "-M", "--relative", there_commit, "--", "."], root)
        )
        there_source = GitSource(top, there_commit, prefix)
        there_source.list_py()
    except GitError as exc:
        facts.compare_error = str(exc)
        return facts
    launchers = scan_launchers(root)
    here = code_analysis(FsSource(root), script, given_args, environ, launchers)
    there = code_analysis(there_source, script, given_args, environ, launchers)
    compare(facts, here, there, changes, facts.commit, there_commit)
    return facts


def probe_ref(
    path: Path | None,
    ref: str,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> RepoFacts:
    """The code facts of ``ref`` read straight from git (no checkout, no worktree); never raises.

    Launch files are taken from the working tree: they are how the user starts the run, whatever branch the code
    is on.
    """
    try:
        co = find_checkout(path, script)
        if co.root is None:
            return RepoFacts(given=co.given, error=co.error or "no checkout (use --repo)")
        top = Path(run_git(["rev-parse", "--show-toplevel"], co.root).decode("utf-8", errors="replace").strip())
        prefix = _optional(["rev-parse", "--show-prefix"], co.root)
        try:
            commit = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], co.root).decode().strip()
        except GitError:
            return RepoFacts(path=str(co.root), given=co.given, error=f"unknown ref: {ref}")
        facts = code_facts(GitSource(top, commit, prefix), script, given_args, environ, scan_launchers(co.root))
        facts.path = f"{co.root}@{ref}"
        facts.given = co.given
        return facts
    except GitError as exc:
        return RepoFacts(given=path is not None, error=str(exc))
    except Exception as exc:
        return RepoFacts(given=path is not None, error=f"git probe failed: {exc!r}")
