"""The code side of a branch comparison: which changed files the run executes, and what differs on its path.

The git probe reads both sides (the working tree and a ref) and lists the changed files; this module judges them
with the same code facts as ``wandoc check``, so a branch is compared on the run's own path.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wandoc.code.symbols import Func, index_file
from wandoc.facts import BranchSide, ChangedFile, ChangedFunction, GitFacts, RepoFacts

if TYPE_CHECKING:
    from wandoc.code.probe import Analysis

# arguments whose defaults do not decide speed (GIT-DEFAULTS-CHANGED and rules from a commit leave them out)
NEUTRAL_ARGS = frozenset({"prompt", "save_file", "base_seed", "seed", "ckpt_dir", "image", "audio", "output_dir"})


def side(facts: RepoFacts, ref: str, commit: str) -> BranchSide:
    return BranchSide(
        ref=ref,
        commit=commit,
        sites=[s for s in facts.sites if s.on_path and s.reach not in ("never", "unknown")],
        effective=facts.effective,
        arg_defaults={a.name: a.default for a in facts.args},
        env_reads=facts.env_reads,
    )


def compare(
    facts: GitFacts,
    here_side: Analysis,
    there_side: Analysis,
    changes: Sequence[tuple[str, str, str | None]],
    here_commit: str,
    there_commit: str,
) -> None:
    """Fill ``facts`` with both sides and their differences; ``changes`` are (status, path, old path)."""
    here, there = here_side.facts, there_side.facts
    ref = facts.compare_ref
    if there.error:
        facts.compare_error = f"{ref}: {there.error}"
    facts.here = side(here, facts.branch or "HEAD", here_commit)
    facts.there = side(there, ref, there_commit)
    on_here, on_there = set(here.import_path.modules), set(there.import_path.modules)
    for status, new, old in changes:
        facts.changed.append(
            ChangedFile(
                path=new,
                status=status,
                on_path_here=status != "D" and new in on_here,
                on_path_there=status != "A" and (old or new) in on_there,
            )
        )
    facts.changed_on_path = [c.path for c in facts.changed if c.on_path_here or c.on_path_there]
    facts.changed_off_path = [c.path for c in facts.changed if not (c.on_path_here or c.on_path_there)]
    kinds_here = {s.kind for s in facts.here.sites}
    kinds_there = {s.kind for s in facts.there.sites}
    facts.sites_added = sorted(kinds_here - kinds_there)
    facts.sites_removed = sorted(kinds_there - kinds_here)
    facts.defaults_changed = defaults_changed(here, there)
    for c, (_, _, old) in zip(facts.changed, changes, strict=True):
        if c.path.endswith(".py") and (c.on_path_here or c.on_path_there):
            facts.functions_changed.extend(_functions_changed(here_side, there_side, c.path, old or c.path))


def defaults_changed(here: RepoFacts, there: RepoFacts) -> dict[str, list]:
    """Argument -> [there, here] where the value the run gets when it does not pass the flag differs: after
    the entry's own resolution (``if args.offload_model is None: ...``), else the literal defaults."""
    given = {a.split("=", 1)[0] for a in here.given_args if a.startswith("--")}
    flags = {a.name: a.flags for a in [*here.args, *there.args]}
    out: dict[str, list] = {}
    lit_here = {a.name: a.default for a in here.args}
    lit_there = {a.name: a.default for a in there.args}
    for name in sorted(lit_here.keys() & lit_there.keys()):
        if any(f in given for f in flags.get(name, [])):
            continue
        if name in here.effective and name in there.effective:
            before, after = there.effective[name], here.effective[name]
        else:
            before, after = lit_there[name], lit_here[name]
        if before != after:
            out[name] = [before, after]
    return out


def _digest(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def _functions(side: Analysis, rel: str) -> dict[str, ast.AST]:
    pf = side.walk.parsed(rel) if rel in side.walk.resolver.files else None
    if pf is None or pf.tree is None:
        return {}
    return {q: node for q, (node, _) in index_file(pf).functions.items()}


def _reach(side: Analysis, rel: str, qual: str) -> str:
    reach = side.reach
    if reach is None:
        return "never"
    fn = Func(rel, qual)
    return "forward" if fn in reach.hot else "runs" if fn in reach.walked else "never"


def _functions_changed(here: Analysis, there: Analysis, path: str, old_path: str) -> list[ChangedFunction]:
    """Functions of one changed file whose bodies differ, with how this run runs each (here, else there)."""
    new, old = _functions(here, path), _functions(there, old_path)
    out: list[ChangedFunction] = []
    for qual in sorted(new.keys() | old.keys()):
        a, b = old.get(qual), new.get(qual)
        if a is not None and b is not None and _digest(a) == _digest(b):
            continue
        status = "changed" if a is not None and b is not None else "added" if b is not None else "removed"
        side, node = (here, b) if b is not None else (there, a)
        reach = _reach(side, path if b is not None else old_path, qual)
        if reach == "never":
            continue  # a function the run does not run (on the side that has it) cannot make it slower
        line = getattr(node, "lineno", 0)
        out.append(ChangedFunction(file=path, function=qual, status=status, reach=reach, line=line))
    return out
