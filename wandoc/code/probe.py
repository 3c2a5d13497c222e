"""The code probe: one checkout side read with ``ast`` into ``RepoFacts``; never imports or runs the user's code."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wandoc.code.args import arg_specs, effective_args
from wandoc.code.checkout import find_checkout
from wandoc.code.conditions import RunContext
from wandoc.code.configs import ModuleValues
from wandoc.code.entries import resolve_entry
from wandoc.code.env_reads import all_env_reads, join_env, mentions_env
from wandoc.code.imports import Walk, walk_source
from wandoc.code.launchers import scan_launchers
from wandoc.code.parse import segment, syntax_error
from wandoc.code.reach import Reach
from wandoc.code.sites import ANYWHERE_TRIGGERS, Judged, find_sites, forward_roots, is_attn_file, worth_scanning
from wandoc.code.source import FsSource, Source
from wandoc.code.symbols import Symbols, index_file
from wandoc.facts import ArgFacts, CallGraphFacts, LauncherSet, RepoFacts

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


@dataclass
class Analysis:
    """One side's facts with the walk and the call graph they came from (a comparison reads both)."""

    facts: RepoFacts
    walk: Walk
    reach: Reach | None  # None without an entry script


def code_facts(
    source: Source,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    launchers: Sequence[LauncherSet] = (),
) -> RepoFacts:
    """Every code fact of one side of a checkout (working tree or git ref), given its reader."""
    return code_analysis(source, script, given_args, environ, launchers).facts


def code_analysis(
    source: Source,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    launchers: Sequence[LauncherSet] = (),
) -> Analysis:
    """``code_facts`` with the walk and call graph kept."""
    files = source.list_py()
    dirs = {d for f in files for d in _parents(f)}
    entry_rel, entry_from = resolve_entry(set(files), dirs, script.replace("\\", "/").lstrip("./") or script)
    walk = walk_source(source, entry_rel or script)
    facts = RepoFacts(
        found=True,
        entry_script=entry_rel or script,
        given_args=list(given_args),
        import_path=walk.path,
        launchers=list(launchers),
    )
    if not walk.files:
        facts.error = "no Python files in the checkout"
    elif entry_rel is None:
        facts.error = f"{script} not found in the checkout"
    entry = walk.parsed(entry_rel) if entry_rel is not None else None
    if entry is not None and entry.tree is not None:
        values = ModuleValues(walk)
        facts.model_configs = _task_configs(walk, values, entry_rel or script)
        args_rel = _args_file(walk, entry_rel or script)
        args_pf = walk.parsed(args_rel)
        if args_pf is not None and args_pf.tree is not None:
            facts.args_file = args_rel
            specs = arg_specs(args_pf.tree, lambda node: values.sequence(args_rel, node))
            facts.args = [s.as_facts() for s in specs]
            trees = [args_pf.tree] if args_rel == entry_rel else [args_pf.tree, entry.tree]
            merged = ast.Module(body=[stmt for t in trees for stmt in t.body], type_ignores=[])
            facts.effective, facts.args_error, facts.offload_defaulted, facts.args_note = effective_args(
                specs, merged, given_args, environ, entry_rel or script, facts.model_configs
            )
    set_vars = set(environ) | {ls.var for ls in facts.launchers}
    env_files, site_files = _off_path_candidates(walk, set_vars)
    reads = all_env_reads(walk, [*_on_path_env_files(walk, set_vars, facts), *env_files])
    facts.env_reads = [r.fact for r in reads]
    facts.env_vars = join_env(reads, facts.launchers, environ)
    run = RunContext(args=facts.effective, environ=environ)
    parts = _judged(walk, site_files, run, entry_rel if entry is not None else None, facts)
    facts.sites = find_sites(parts)
    _syntax_check(walk, facts)
    facts.call_graph.entry_from = entry_from if entry is not None else ""
    hot = [s for s in facts.sites if s.reach in ("forward", "once", "conditional")]
    facts.flash_attn_required = any(s.kind == "flash_attention_call" and s.reach == "forward" for s in hot)
    facts.sdpa_fallback = any(s.kind == "sdpa_call" for s in hot)
    facts.fa3_result_indexed = any(s.kind == "fa3_index0" for s in hot)
    facts.is_wan, facts.wan_version = _wan_identity(walk, facts.args)
    facts.import_path.skipped[:0] = getattr(source, "skipped", [])
    for rel in sorted(set(walk.files) - walk.on_path):
        pf = walk.cached(rel)
        if pf is not None and pf.error:
            facts.import_path.errors.append(f"{rel}:{pf.error[0]} {pf.error[1]}")
    entry_reach = parts[0].reach if parts and not parts[0].roots_only else None
    return Analysis(facts, walk, entry_reach)


OFF_PATH_SCAN = 25  # files the run does not import scanned for sites (facts only), attention files first
_OFF_WORDS = ("forward", "attn", "attention")


def _judged(walk: Walk, off: list[str], run: RunContext, entry: str | None, facts: RepoFacts) -> list[Judged]:
    """The walks that decide reach: from the entry over the files the run imports, and from forward() over the
    files it does not (what that code would do, for the facts)."""
    parts: list[Judged] = []
    on_files = sorted(walk.on_path)
    if entry is not None:
        symbols = Symbols(walk, set(on_files))
        reach = Reach(walk, symbols, run, entry)
        reach.run_modules(walk.path.modules, set(walk.path.conditional), lambda r: worth_scanning(walk.source.read(r)))
        parts.append(Judged(reach, symbols, on_files, "not called from the entry", on_path=True))
        facts.call_graph = CallGraphFacts(
            entry=entry,
            functions_walked=len(reach.walked),
            model_forwards=sum(1 for fn in reach.hot if fn.qual.endswith(".forward")),
            statements=reach.steps,
            unresolved_calls=reach.unresolved,
            cut=reach.cut,
        )
    off = sorted(off, key=lambda f: (not is_attn_file(f), f))
    if len(off) > OFF_PATH_SCAN:
        facts.import_path.skipped.append(
            f"{len(off) - OFF_PATH_SCAN} file(s) the run does not import were not scanned for code sites "
            f"(only the first {OFF_PATH_SCAN}, attention files first)"
        )
        off = off[:OFF_PATH_SCAN]
    groups = [(off, False, "file not imported by the run")]
    if entry is None:
        groups.append((on_files, True, "no entry script: the doctor cannot tell whether or how often it runs"))
    for files, on_path, label in groups:
        symbols = Symbols(walk, set(files))
        reach = Reach(walk, symbols, RunContext.anything(), "")
        reach.roots(fn for rel in files if (pf := walk.parsed(rel)) is not None for fn in forward_roots(pf, rel))
        parts.append(Judged(reach, symbols, files, label, on_path=on_path, roots_only=True))
    return parts


def _syntax_check(walk: Walk, facts: RepoFacts) -> None:
    """Files the run imports that do not parse. In a checkout of ordinary size every one is compiled (the files the
    analysis did not need are compiled without building their trees); in a large one only those the doctor parsed
    anyway, saying how many were not checked."""
    errors: list[tuple[str, tuple[int, str], list[str]]] = []
    unparsed = [rel for rel in sorted(walk.on_path) if walk.cached(rel) is None]
    small = len(walk.on_path) <= SMALL_CHECKOUT
    for rel in sorted(walk.on_path):
        pf = walk.cached(rel)
        if pf is not None and pf.error:
            errors.append((rel, pf.error, pf.lines))
        elif (
            pf is None
            and small
            and (text := walk.source.read(rel)) is not None
            and (err := syntax_error(text, rel)) is not None
        ):
            errors.append((rel, err, text.splitlines()))
    if unparsed and not small:
        facts.import_path.skipped.append(
            f"{len(unparsed)} files on the run's path were read for their imports only (the run does not call into "
            "them): a syntax error there is not seen"
        )
    for rel, (line, message), lines in errors:
        facts.import_path.errors_on_path.append(_error_text(rel, line, message, lines))
        if f"{rel}:{line} {message}" not in facts.import_path.errors:
            facts.import_path.errors.append(f"{rel}:{line} {message}")


def _args_file(walk: Walk, entry: str) -> str:
    """The file that defines the run's flags: the entry, or the module whose parser it calls (forks often keep
    ``add_argument`` calls in a module of their own): first a module the entry imports a function from and calls,
    then any module the run imports that builds and parses a parser."""
    pf = walk.parsed(entry)
    if pf is None or "add_argument" in pf.text:
        return entry

    def parses(rel: str) -> bool:
        other = walk.parsed(rel)
        return other is not None and "add_argument" in other.text and "parse_args(" in other.text

    for name, (rel, attr) in sorted(walk.bindings(entry).items()):
        if attr is None or f"{name}(" not in pf.text or not parses(rel):
            continue
        other = walk.parsed(rel)
        fn = index_file(other).functions.get(attr) if other is not None and other.tree is not None else None
        if fn is not None and "parse_args(" in segment(other, fn[0]):  # type: ignore[arg-type]
            return rel
    return next((rel for rel in sorted(walk.on_path - {entry}) if parses(rel)), entry)


def _task_configs(walk: Walk, values: ModuleValues, entry: str) -> dict[str, dict[str, Any]]:
    """The checkout's own ``WAN_CONFIGS`` (task -> literal config values), as the entry imports it."""
    found = values.task_configs(entry)
    if found:
        return found
    for rel in sorted(walk.on_path):
        if rel.endswith("configs/__init__.py"):
            found = values.task_configs(rel)
            if found:
                return found
    return {}


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _error_text(rel: str, line: int, message: str, lines: list[str]) -> str:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if any(ln.startswith(("<<<<<<< ", ">>>>>>> ")) or ln == "=======" for ln in lines[max(0, line - 3) : line + 2]):
        message += " (merge conflict markers)"
    elif text.strip():
        message += f": `{text.strip()[:60]}`"
    return f"{rel}:{line} {message}"


SMALL_CHECKOUT = 200  # files on the run's path under which every env read is recorded, not only those that matter


def _on_path_env_files(walk: Walk, set_vars: set[str], facts: RepoFacts) -> list[str]:
    """Files the run imports whose env reads to record: all of them in a checkout of ordinary size; in a large
    one those the call graph parsed anyway and those that may read a variable someone sets."""
    files = sorted(walk.on_path)
    if len(files) <= SMALL_CHECKOUT:
        return files
    out = []
    for rel in files:
        if walk.cached(rel) is not None:
            out.append(rel)
            continue
        text = walk.source.read(rel)
        if text is not None and _reads_one_of(text, set_vars):
            out.append(rel)
    facts.import_path.skipped.append(
        f"{len(files)} files on the run's path: env reads recorded for the {len(out)} that the run calls into or that "
        "may read a variable someone sets"
    )
    return out


def _reads_one_of(text: str, names: set[str]) -> bool:
    """The text reads env vars and quotes one of ``names`` ("X" or 'X'); a name absent from it is passed over
    with one search instead of two (most of the environment, in most files)."""
    return mentions_env(text) and any(v in text and (f"'{v}'" in text or f'"{v}"' in text) for v in names)


def _off_path_candidates(walk: Walk, set_vars: set[str]) -> tuple[list[str], list[str]]:
    """Files the run does not import that are worth parsing: those that may read a variable someone sets (for
    dead settings), and those with code sites (facts only). Each text is read once and not kept."""
    env_files: list[str] = []
    site_files: list[str] = []
    for rel in walk.files:
        if rel in walk.on_path:
            continue
        text = walk.source.read(rel)
        if text is None:
            continue
        if _reads_one_of(text, set_vars):
            env_files.append(rel)
        if any(t in text for t in (*_OFF_WORDS, *ANYWHERE_TRIGGERS)):
            site_files.append(rel)
    return env_files, site_files


MODEL_FILES = 60  # files read to find a Wan model where no entry leads to one
_WAN_MODEL = re.compile(r"^class WanModel\b", re.M)


def _model_files(files: Iterable[str]) -> list[str]:
    """The files a Wan model class is likely in (``modules/model.py``, ``wan_video_dit.py``), a bounded few."""
    named = [f for f in sorted(files) if re.search(r"(model|dit)[^/]*\.py$", f.lower())]
    return sorted(named, key=lambda f: ("wan" not in f.lower(), f))[:MODEL_FILES]


def _wan_identity(walk: Walk, args: list[ArgFacts]) -> tuple[bool, str]:
    flags = {f for a in args for f in a.flags}
    scope = [pf.text for f in sorted(walk.on_path) if (pf := walk.cached(f)) is not None]
    is_wan = (
        "wan/modules/model.py" in walk.resolver.files
        or any(_WAN_MODEL.search(t) for t in scope)
        or {"--task", "--ckpt_dir"} <= flags
    )
    if not is_wan and not walk.on_path:  # no entry to follow: a front-end's own copy of the model still counts
        is_wan = any(
            (t := walk.source.read(f)) is not None and _WAN_MODEL.search(t) for f in _model_files(walk.resolver.files)
        )
    if not is_wan:
        return False, ""
    if not scope:  # nothing on a run's path was read: which Wan it is stays unsaid
        return True, ""
    return True, "2.2" if any(m in t for t in scope for m in _V22_MARKERS) else "2.1"
