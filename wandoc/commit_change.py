"""What one commit changed that can make a run slower: its code facts against its parent's.

The commit is checked out in a temporary worktree (or one the caller already has) and compared with its first
parent by the git comparison probe, so both sides are judged on the run's import path exactly as
``wandoc check --compare`` judges branches. Each difference that can decide speed comes with a condition over
the facts tree that holds on the commit's side and not on the parent's: ``wandoc rules new --from`` turns
those into a rule, ``wandoc bisect`` prints them under the first bad commit.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandoc.code.checkout import find_checkout
from wandoc.code.compare import NEUTRAL_ARGS
from wandoc.facts import SITE_KINDS, BranchSide, CodeSite, EnvRead, GitFacts
from wandoc.probes.git_compare import probe_git
from wandoc.worktree import GitError, git_out, temp_worktree

# site kinds that say which backend runs, not that it runs slowly: shown, but a rule does not hang on them
NEUTRAL_KINDS = frozenset({"sdpa_call", "flash_attention_call", "compile_call"})


class ChangeError(ValueError):
    """The commit cannot be compared with its parent; the message is one line for the user."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    parent: str
    subject: str
    author: str
    date: str  # ISO 8601, the author date

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class Difference:
    """One perf-relevant fact that differs between the parent and the commit."""

    label: str  # an evidence key: "mask_per_call", "default_offload_model", "env_WAN_FORCE_FP16"
    what: str  # what the fact is, for people
    before: str  # the parent's side, for people
    after: str  # the commit's side
    condition: str | None = None  # true on the commit's facts, false on the parent's; None: context only
    cite: str | None = None  # an expression naming where the commit's side shows it, for a rule's message
    phrase: str = ""  # what the cite is, in a rule's message: "mask_per_call at", "--offload_model defaults to"
    strong: bool = False  # can make a run slower by itself (a rule hangs on these first)
    sites: tuple[str, ...] = ()  # site kinds the example facts must carry
    args: tuple[str, ...] = ()  # argument names (defaults) the example facts must carry
    effective: tuple[str, ...] = ()  # effective argument values the example facts must carry
    env_vars: tuple[str, ...] = ()  # env vars whose on-path reads the example facts must carry


@dataclass
class CommitChange:
    info: CommitInfo
    git: GitFacts  # ``here`` is the commit, ``there`` its parent
    differences: list[Difference] = field(default_factory=list)

    @property
    def conditions(self) -> list[Difference]:
        """The differences a rule should test: the strong ones, or the others when there are none."""
        strong = [d for d in self.differences if d.strong and d.condition]
        return strong or [d for d in self.differences if d.condition]

    def example_facts(self, side: BranchSide) -> dict[str, Any]:
        """A facts tree of one side holding what the conditions read (and nothing else)."""
        used = self.conditions
        kinds = {k for d in used for k in d.sites}
        args = {a for d in used for a in d.args}
        effective = {a for d in used for a in d.effective}
        env_vars = {v for d in used for v in d.env_vars}
        repo: dict[str, Any] = {}
        files = set(self.git.changed_on_path)  # the sites of the files the commit touched, for context
        sites = [s for s in side.sites if s.on_path and (s.kind in kinds or (kinds and s.file in files))]
        if kinds:
            repo["sites"] = [s.model_dump(mode="json") for s in sites]
        if args:
            repo["args"] = [_arg(name, side.arg_defaults[name]) for name in sorted(args) if name in side.arg_defaults]
        if effective:
            repo["effective"] = {name: side.effective.get(name) for name in sorted(effective)}
        if env_vars:
            repo["env_reads"] = [r.model_dump(mode="json") for r in _reads(side, env_vars)]
        return {"repo": repo}


def _arg(name: str, default: Any) -> dict[str, Any]:
    return {"name": name, "default": default}


def _reads(side: BranchSide, names: set[str]) -> list[EnvRead]:
    return [r for r in side.env_reads if r.on_path and r.var in names]


def literal(value: Any) -> str | None:
    """``value`` as a literal of the rule expression language, or None when it has none."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return repr(value)
    if isinstance(value, list):
        items = [literal(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    return None


def _where(sites: Sequence[CodeSite]) -> str:
    shown = [f"{s.file}:{s.line}" + (f" ({s.function})" if s.function else "") for s in sites[:3]]
    return ", ".join(shown) + (f" and {len(sites) - 3} more" if len(sites) > 3 else "")


def _site_condition(kind: str, after: Sequence[CodeSite], before: Sequence[CodeSite]) -> tuple[str, str] | None:
    """A condition true on the commit's sites of ``kind`` and false on the parent's, and the cite for it.

    A kind new to the run's path is tested anywhere; more of a kind that was there already is tested in the files
    that gained it, so the rule does not hang on unrelated sites elsewhere (the model's own ``.tolist()``)."""
    if len(after) <= len(before):
        return None
    where = f"s.on_path and s.kind == {kind!r}"
    if before:
        n_after, n_before = Counter(s.file for s in after), Counter(s.file for s in before)
        grew = sorted(f for f, n in n_after.items() if n > n_before[f])
        tests = [f"len([s for s in repo.sites if {where} and s.file == {f!r}]) >= {n_after[f]}" for f in grew]
        where += f" and s.file in {grew!r}"
        condition = " or ".join(tests)
    else:
        condition = f"len([s for s in repo.sites if {where}]) > 0"
    return condition, f"join([s.file + ':' + str(s.line) for s in repo.sites if {where}])"


def _site_differences(here: BranchSide, there: BranchSide) -> list[Difference]:
    out = []
    for kind in sorted({s.kind for s in here.sites + there.sites if s.on_path}):
        after = [s for s in here.sites if s.on_path and s.kind == kind]
        before = [s for s in there.sites if s.on_path and s.kind == kind]
        if len(after) == len(before):
            continue
        test = _site_condition(kind, after, before)
        out.append(
            Difference(
                label=kind,
                what=f"{kind}: {SITE_KINDS.get(kind, kind)}",
                before=f"{len(before)}" + (f" at {_where(before)}" if before else ""),
                after=f"{len(after)}" + (f" at {_where(after)}" if after else ""),
                condition=test[0] if test else None,
                cite=test[1] if test else None,
                phrase=f"{kind} at",
                strong=test is not None and kind not in NEUTRAL_KINDS,
                sites=(kind,),
            )
        )
    return out


def _default_differences(facts: GitFacts) -> list[Difference]:
    out = []
    for name, (before, after) in facts.defaults_changed.items():
        lit = literal(after)
        cond = None
        if lit is not None:
            test = f"a.default is {lit}" if after is None else f"a.default == {lit}"
            cond = f"len([a for a in repo.args if a.name == {name!r} and {test}]) > 0"
        out.append(
            Difference(
                label=f"default_{name}",
                what=f"the default of --{name} (generate.py)",
                before=repr(before),
                after=repr(after),
                condition=cond,
                cite=f"str(first([a.default for a in repo.args if a.name == {name!r}]))" if cond else None,
                phrase=f"--{name} defaults to",
                strong=cond is not None and name not in NEUTRAL_ARGS,
                args=(name,),
            )
        )
    here, there = facts.here.effective, facts.there.effective
    for name in sorted(here.keys() & there.keys()):
        if here[name] == there[name] or name in facts.defaults_changed:
            continue
        lit = literal(here[name])
        out.append(
            Difference(
                label=f"effective_{name}",
                what=f"the value of --{name} the run uses (a default set in the code)",
                before=repr(there[name]),
                after=repr(here[name]),
                condition=f"repo.effective.{name} == {lit}" if lit is not None and here[name] is not None else None,
                cite=f"str(repo.effective.{name})",
                phrase=f"--{name} is",
                strong=lit is not None and here[name] is not None and name not in NEUTRAL_ARGS,
                effective=(name,),
            )
        )
    return out


def _env_differences(here: BranchSide, there: BranchSide) -> list[Difference]:
    out = []

    def defaults(side: BranchSide, var: str) -> set[str | None]:
        return {r.default for r in side.env_reads if r.on_path and r.var == var}

    vars_here = {r.var for r in here.env_reads if r.on_path}
    vars_there = {r.var for r in there.env_reads if r.on_path}
    for var in sorted(vars_here | vars_there):
        sel = f"[r for r in repo.env_reads if r.on_path and r.var == {var!r}"  # closed by each use
        cite = f"join([r.file + ':' + str(r.line) for r in repo.env_reads if r.on_path and r.var == {var!r}])"
        if var not in vars_there:
            reads = _reads(here, {var})
            out.append(
                Difference(
                    label=f"env_{var}",
                    what=f"env var {var} read on the run's path",
                    before="not read",
                    after=f"read at {', '.join(f'{r.file}:{r.line}' for r in reads)}" + _accepts(reads),
                    condition=f"len({sel}]) > 0",
                    cite=cite,
                    phrase=f"{var} read at",
                    env_vars=(var,),
                )
            )
        elif var not in vars_here:
            out.append(Difference(f"env_{var}", f"env var {var} read on the run's path", "read", "no longer read"))
        elif defaults(here, var) != defaults(there, var):
            new = sorted(defaults(here, var) - defaults(there, var), key=str)
            tests = ["r.default is none" if d is None else f"r.default == {d!r}" for d in new]
            out.append(
                Difference(
                    label=f"env_{var}",
                    what=f"the default of env var {var} (used when it is not set)",
                    before=", ".join(repr(d) for d in sorted(defaults(there, var), key=str)),
                    after=", ".join(repr(d) for d in sorted(defaults(here, var), key=str)),
                    condition=f"len({sel} and ({' or '.join(tests)})]) > 0" if tests else None,
                    cite=f"join([r.file + ':' + str(r.line) + ' with default ' + str(r.default) {sel[3:]}])",
                    phrase=f"{var} read at",
                    strong=bool(tests),
                    env_vars=(var,),
                )
            )
    return out


def _accepts(reads: Sequence[EnvRead]) -> str:
    values = sorted({v for r in reads for v in r.compared_values})
    defaults = sorted({r.default for r in reads if r.default is not None})
    parts = ([f"default {', '.join(map(repr, defaults))}"] if defaults else []) + (
        [f"compared with {', '.join(map(repr, values))}"] if values else []
    )
    return f" ({'; '.join(parts)})" if parts else ""


def differences(facts: GitFacts) -> list[Difference]:
    """Every perf-relevant difference between the two sides of a commit-vs-parent comparison."""
    return (
        _site_differences(facts.here, facts.there)
        + _default_differences(facts)
        + _env_differences(facts.here, facts.there)
    )


def commit_info(top: Path, commit: str) -> CommitInfo:
    raw = git_out(["show", "-s", "--format=%H%x00%P%x00%s%x00%an <%ae>%x00%aI", commit], top)
    sha, parents, subject, author, date = (raw.split("\0") + [""] * 5)[:5]
    return CommitInfo(sha, parents.split()[0] if parents.split() else "", subject, author, date)


@dataclass(frozen=True)
class Checkout:
    """Where the user's checkout sits in its repository: the top folder and the path from it."""

    top: Path
    prefix: str  # "" or "Wan2.2/"
    path: Path  # the checkout itself (what --repo named, or the Wan folder found in it)


def locate(repo: Path | None, script: str = "generate.py") -> Checkout:
    """The user's checkout and its git repository; ChangeError with one line when there is none."""
    found = find_checkout(repo, script)
    if found.root is None:
        raise ChangeError(found.error or "no Wan checkout here (use --repo)")
    try:
        top = Path(git_out(["rev-parse", "--show-toplevel"], found.root))
        prefix = git_out(["rev-parse", "--show-prefix"], found.root)
    except GitError as exc:
        msg = str(exc)
        raise ChangeError(f"not a git repository: {found.root}" if "not a git repository" in msg else msg) from None
    return Checkout(top, prefix, found.root)


def resolve(top: Path, ref: str, what: str = "commit") -> str:
    try:
        return git_out(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], top)
    except GitError:
        raise ChangeError(f"unknown {what}: {ref}") from None


def compare_with_parent(
    checkout_at_commit: Path, info: CommitInfo, script: str, given_args: Sequence[str], environ: Mapping[str, str]
) -> CommitChange:
    """The change of a commit already checked out at ``checkout_at_commit`` (a temporary worktree)."""
    facts = probe_git(checkout_at_commit, info.parent, script, given_args, environ)
    if facts.compare_error:
        raise ChangeError(f"comparing {info.short} with its parent failed: {facts.compare_error}")
    facts.here.ref, facts.there.ref = info.short, f"{info.short}^"
    return CommitChange(info, facts, differences(facts))


def commit_change(
    repo: Path | None,
    commit: str,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> CommitChange:
    """``commit`` against its first parent, in a temporary worktree that is removed before this returns."""
    co = locate(repo, script)
    sha = resolve(co.top, commit)
    info = commit_info(co.top, sha)
    if not info.parent:
        raise ChangeError(f"commit {info.short} has no parent to compare with")
    try:
        with temp_worktree(co.top, sha) as wt:
            return compare_with_parent(wt.root / co.prefix, info, script, given_args, environ)
    except GitError as exc:
        raise ChangeError(str(exc)) from None
