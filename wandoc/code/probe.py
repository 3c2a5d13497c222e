"""The code probe: one checkout side read with ``ast`` into ``RepoFacts``; never imports or runs the user's code."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from wandoc.code.args import arg_specs, effective_args
from wandoc.code.checkout import find_checkout
from wandoc.code.env_reads import all_env_reads, join_env
from wandoc.code.imports import Walk, walk_source
from wandoc.code.launchers import scan_launchers
from wandoc.code.sites import find_sites
from wandoc.code.source import FsSource, Source
from wandoc.code.tasks import other_task_files, scope_sites
from wandoc.facts import ArgFacts, LauncherSet, RepoFacts

_V22_MARKERS = ("ti2v", "A14B", "high_noise_model")


def probe_repo(
    path: Path | None,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> RepoFacts:
    """Facts of the checkout at ``path`` (or the cwd when it is one); never raises."""
    try:
        co = find_checkout(path, script)
        if co.root is None:
            return RepoFacts(path=str(path or ""), given=co.given, error=co.error, given_args=list(given_args))
        facts = code_facts(FsSource(co.root), script, given_args, environ, scan_launchers(co.root))
        facts.path = str(co.root)
        facts.given = co.given
        return facts
    except Exception as exc:  # a probe reports, it does not crash the doctor
        return RepoFacts(path=str(path or ""), given=path is not None, error=f"code probe failed: {exc!r}")


def code_facts(
    source: Source,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    launchers: Sequence[LauncherSet] = (),
) -> RepoFacts:
    """Every code fact of one side of a checkout (working tree or git ref), given its reader."""
    walk = walk_source(source, script)
    facts = RepoFacts(
        found=True,
        entry_script=script,
        given_args=list(given_args),
        import_path=walk.path,
        launchers=list(launchers),
    )
    if not walk.files:
        facts.error = "no Python files in the checkout"
    elif script not in walk.resolver.files:
        facts.error = f"{script} not found in the checkout"
    entry = walk.parsed(script) if script in walk.resolver.files else None
    if entry is not None and entry.tree is not None:
        specs = arg_specs(entry.tree)
        facts.args = [s.as_facts() for s in specs]
        facts.effective, facts.args_error, facts.offload_defaulted = effective_args(
            specs, entry.tree, given_args, environ, script
        )
    texts = _texts(walk)
    reads = all_env_reads(walk, texts)
    facts.env_reads = [r.fact for r in reads]
    facts.env_vars = join_env(reads, facts.launchers, environ)
    facts.import_path.other_tasks = other_task_files(facts.import_path.modules, facts.effective.get("task"))
    sites = scope_sites(find_sites(walk, texts), facts.import_path.other_tasks)
    facts.sites = sites
    on = [s for s in sites if s.on_path]
    facts.flash_attn_required = any(s.kind == "flash_attention_call" for s in on)
    facts.sdpa_fallback = any(s.kind == "sdpa_call" for s in on)
    facts.fa3_result_indexed = any(s.kind == "fa3_index0" for s in on)
    facts.is_wan, facts.wan_version = _wan_identity(walk, texts, facts.args)
    for rel in sorted(set(walk.files) - walk.on_path):
        pf = walk.cached(rel)
        if pf is not None and pf.error:
            facts.import_path.errors.append(f"{rel}:{pf.error[0]} {pf.error[1]}")
    return facts


def _texts(walk: Walk) -> dict[str, str]:
    out: dict[str, str] = {}
    for rel in walk.files:
        pf = walk.cached(rel)
        text = pf.text if pf is not None else walk.source.read(rel)
        if text is not None:
            out[rel] = text
    return out


def _wan_identity(walk: Walk, texts: Mapping[str, str], args: list[ArgFacts]) -> tuple[bool, str]:
    flags = {f for a in args for f in a.flags}
    scope = [texts[f] for f in (walk.on_path or texts) if f in texts]
    is_wan = (
        "wan/modules/model.py" in walk.resolver.files
        or any(re.search(r"^class WanModel\b", t, re.M) for t in scope)
        or {"--task", "--ckpt_dir"} <= flags
    )
    if not is_wan:
        return False, ""
    return True, "2.2" if any(m in t for t in scope for m in _V22_MARKERS) else "2.1"
