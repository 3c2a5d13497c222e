"""The code side of a branch comparison: which changed files the run executes, and what differs on its path.

The git probe reads both sides (the working tree and a ref) and lists the changed files; this module judges them
with the same code facts as ``wandoc check``, so a branch is compared on the run's own path.
"""

from __future__ import annotations

from collections.abc import Sequence

from wandoc.facts import BranchSide, ChangedFile, GitFacts, RepoFacts


def side(facts: RepoFacts, ref: str, commit: str) -> BranchSide:
    return BranchSide(
        ref=ref,
        commit=commit,
        sites=[s for s in facts.sites if s.on_path],
        effective=facts.effective,
        arg_defaults={a.name: a.default for a in facts.args},
        env_reads=facts.env_reads,
    )


def compare(
    facts: GitFacts,
    here: RepoFacts,
    there: RepoFacts,
    changes: Sequence[tuple[str, str, str | None]],
    here_commit: str,
    there_commit: str,
) -> None:
    """Fill ``facts`` with both sides and their differences; ``changes`` are (status, path, old path)."""
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
    both = facts.here.arg_defaults.keys() & facts.there.arg_defaults.keys()
    facts.defaults_changed = {
        name: [facts.there.arg_defaults[name], facts.here.arg_defaults[name]]
        for name in sorted(both)
        if facts.there.arg_defaults[name] != facts.here.arg_defaults[name]
    }
